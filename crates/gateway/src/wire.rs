//! What the gateway puts into the engine, and how it is sealed.
//!
//! Jobs on the JobQueue, messages on a session's broker channel and on a shared persistent
//! instance's channel are JSON sealed with AES-256-GCM (see [`crate::keys`]); the engine
//! only ever holds ciphertext.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_engine::EngineError;

use crate::keys::Keys;

/// A job as it waits in the queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobEnvelope {
    pub id: String,
    pub session: String,
    /// The normalised, validated activity (never contains credentials).
    pub activity: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Value>,
}

/// What travels on `session:{id}` (externally tagged: cheaper to decode than a tag field).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BusMsg {
    /// The reply to one of the session's requests.
    Result { job: String, reply: Value },
    /// Something for the client's `message` event (incoming traffic, a shared instance's
    /// results, a fatal platform error).
    Push { activity: Value },
    /// The session's persistent connection now acts as `actor` with `credentials`: store
    /// them under the new actor (sealed with the session's key, which only it has).
    Rekey {
        platform: String,
        actor: String,
        credentials: Value,
    },
}

pub(crate) fn session_channel(session: &str) -> String {
    format!("session:{session}")
}

/// What a persistent instance's owner publishes on `instance:{queue}` for the sessions
/// attached to it on other nodes (each such node subscribes once and hands the message on
/// to its own sessions).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum InstanceMsg {
    /// For every attached session's `message` event, but `except` (the requester of a
    /// result, which gets it as its reply).
    Push {
        activity: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        except: Option<String>,
    },
    /// The connection now acts as `actor`: every attached session stores the credentials
    /// under it (see [`BusMsg::Rekey`]) and reaches the instance by its new key.
    Rekey { actor: String, credentials: Value },
    /// The instance stopped: forget it (its sessions were told why in a `Push`).
    End,
}

/// The channel of the instance whose job queue is `queue` (unique per instance lifetime,
/// so a successor never shares a predecessor's channel).
pub(crate) fn instance_channel(queue: &str) -> String {
    format!("instance:{queue}")
}

impl Keys {
    pub fn seal_job(&self, job: &JobEnvelope) -> Bytes {
        let plain = serde_json::to_vec(job).expect("a JobEnvelope always serialises");
        self.jobs.seal(job.id.as_bytes(), &plain)
    }

    pub fn open_job(&self, job_id: &str, sealed: &[u8]) -> Result<JobEnvelope, EngineError> {
        let plain = self.jobs.open(job_id.as_bytes(), sealed)?;
        serde_json::from_slice(&plain).map_err(|_| EngineError::Unseal)
    }

    pub fn seal_bus(&self, session: &str, msg: &BusMsg) -> Bytes {
        let plain = serde_json::to_vec(msg).expect("a BusMsg always serialises");
        self.bus.seal(session.as_bytes(), &plain)
    }

    pub fn open_bus(&self, session: &str, sealed: &[u8]) -> Result<BusMsg, EngineError> {
        let plain = self.bus.open(session.as_bytes(), sealed)?;
        serde_json::from_slice(&plain).map_err(|_| EngineError::Unseal)
    }

    pub fn seal_instance(&self, channel: &str, msg: &InstanceMsg) -> Bytes {
        let plain = serde_json::to_vec(msg).expect("an InstanceMsg always serialises");
        self.bus.seal(channel.as_bytes(), &plain)
    }

    pub fn open_instance(&self, channel: &str, sealed: &[u8]) -> Result<InstanceMsg, EngineError> {
        let plain = self.bus.open(channel.as_bytes(), sealed)?;
        serde_json::from_slice(&plain).map_err(|_| EngineError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jobs_are_sealed_and_bound_to_their_id() {
        let keys = Keys::new([7; 32]);
        let job = JobEnvelope {
            id: "j1".into(),
            session: "s1".into(),
            activity: json!({"type": "connect"}),
            credentials: Some(json!({"password": "hunter2"})),
        };
        let sealed = keys.seal_job(&job);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(keys.open_job("j1", &sealed).unwrap().session, "s1");
        assert!(keys.open_job("j2", &sealed).is_err());
    }

    #[test]
    fn instance_messages_are_sealed_and_bound_to_their_channel() {
        let keys = Keys::new([7; 32]);
        let msg = InstanceMsg::Rekey {
            actor: "new@irc".into(),
            credentials: json!({"password": "hunter2"}),
        };
        let sealed = keys.seal_instance("instance:irc:k/1", &msg);
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert!(matches!(
            keys.open_instance("instance:irc:k/1", &sealed),
            Ok(InstanceMsg::Rekey { .. })
        ));
        assert!(keys.open_instance("instance:irc:k/2", &sealed).is_err());
        assert!(
            Keys::new([8; 32])
                .open_instance("instance:irc:k/1", &sealed)
                .is_err()
        );
    }
}
