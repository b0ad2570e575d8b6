//! The schema registry clients fetch with the `schemas` event: server version, base
//! contexts and, per platform, its context URL, types and JSON schemas. A fingerprint (the
//! first 16 hex digits of the SHA-256 of the payload) lets a client that already has the
//! registry ask "changed?" and get `{"fingerprint": …, "unchanged": true}` back.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Manifest;
use crate::context::{self, AS, SOCKETHUB};

/// The registry payload and its fingerprint, computed once at start-up.
#[derive(Debug, Clone)]
pub struct Registry {
    pub fingerprint: String,
    pub payload: Value,
}

impl Registry {
    pub fn new(server_version: &str, manifests: &[Manifest]) -> Self {
        let platforms: Vec<Value> = manifests
            .iter()
            .map(|m| {
                json!({
                    "id": m.name,
                    "version": m.version,
                    "contextUrl": context::platform_url(m.name),
                    "contextVersion": "1",
                    "schemaVersion": "1",
                    "types": m.types(),
                    "schemas": {"credentials": m.credentials, "messages": m.messages},
                })
            })
            .collect();
        let mut payload = json!({
            "version": server_version,
            "contexts": {"as": AS, "sockethub": SOCKETHUB},
            "platforms": platforms,
        });
        let digest = Sha256::digest(payload.to_string().as_bytes());
        let fingerprint = hex::encode(&digest[..8]);
        payload["fingerprint"] = Value::String(fingerprint.clone());
        Registry {
            fingerprint,
            payload,
        }
    }

    /// What the `schemas` event answers for a client that sent `known` (its fingerprint).
    pub fn answer(&self, known: Option<&str>) -> Value {
        if known == Some(self.fingerprint.as_str()) {
            json!({"fingerprint": self.fingerprint, "unchanged": true})
        } else {
            self.payload.clone()
        }
    }
}
