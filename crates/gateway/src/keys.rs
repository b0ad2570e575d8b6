//! The gateway's keys, all derived from the one root secret.
//!
//! - `jobs`: seals jobs while they wait in the JobQueue (aad: job id).
//! - `bus`: seals what is published to a session's channel (aad: session id).
//! - per session: seals that session's credentials, derived with the session's own random
//!   secret as salt, so another session (or anyone with the store's contents but not the
//!   session secret) cannot open them.
//! - `scope`: keys the credential fingerprint that decides which sessions may share one
//!   persistent connection; keyed so fingerprints reveal nothing about the secrets.

use serde_json::Value;
use sha2::{Digest, Sha256};
use switchboard_engine::seal::SealKey;

#[derive(Clone)]
pub(crate) struct Keys {
    root: [u8; 32],
    pub jobs: SealKey,
    pub bus: SealKey,
}

impl Keys {
    pub fn new(root: [u8; 32]) -> Self {
        Keys {
            jobs: SealKey::derive(&root, None, "switchboard jobs v1"),
            bus: SealKey::derive(&root, None, "switchboard bus v1"),
            root,
        }
    }

    /// The key for one session's credentials.
    pub fn session(&self, session_secret: &[u8]) -> SealKey {
        SealKey::derive(
            &self.root,
            Some(session_secret),
            "switchboard credentials v1",
        )
    }

    /// The instance key of a persistent platform's job: per actor and scope, where the scope
    /// is a keyed fingerprint of the credentials when they hold a secret (so identical
    /// secrets share one connection) and the session otherwise (so anonymous users never
    /// share).
    pub fn instance(
        &self,
        platform: &str,
        actor: &str,
        session: &str,
        credentials: Option<&Value>,
    ) -> String {
        let has_secret = credentials.is_some_and(|c| {
            ["password", "token"].iter().any(|k| {
                c.get(k)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
            })
        });
        let scope = match (credentials, has_secret) {
            (Some(creds), true) => self.digest(&[b"creds", creds.to_string().as_bytes()]),
            _ => self.digest(&[b"session", session.as_bytes()]),
        };
        format!(
            "{platform}:{}",
            self.digest(&[actor.as_bytes(), scope.as_bytes()])
        )
    }

    /// A short keyed digest of `parts`, used for instance keys and credential scopes.
    pub fn digest(&self, parts: &[&[u8]]) -> String {
        let mut h = Sha256::new();
        h.update(self.root);
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
        }
        hex::encode(&h.finalize()[..8])
    }
}
