//! The trait a platform crate implements, and what it is handed.

use std::future::Future;

use serde_json::Value;
use switchboard_protocol::Manifest;
use tokio::sync::mpsc;

use crate::frame::FromWorker;

/// One job for a platform: an activity that passed validation, from one session.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    /// The session that sent it (events meant only for it are addressed with this).
    pub session: String,
    pub activity: Value,
    /// Credentials the session stored for this platform and actor, if any.
    pub credentials: Option<Value>,
}

impl Job {
    /// The activity's `type` (the verb).
    pub fn verb(&self) -> &str {
        self.activity
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// A failed job; the message is what the client sees in the reply's `error` field.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PlatformError(pub String);

impl PlatformError {
    pub fn new(msg: impl Into<String>) -> Self {
        PlatformError(msg.into())
    }
}

/// What a platform instance can reach from the worker: its identity, the server's settings,
/// and a way to push incoming traffic to the sessions attached to it.
#[derive(Clone)]
pub struct WorkerContext {
    pub instance: String,
    pub settings: Value,
    pub(crate) out: mpsc::Sender<FromWorker>,
}

impl WorkerContext {
    /// Push an incoming activity to every session attached to this instance.
    pub async fn emit(&self, activity: Value) {
        let _ = self
            .out
            .send(FromWorker::Event {
                activity,
                session: None,
            })
            .await;
    }

    /// Push an activity to one session only.
    pub async fn emit_to(&self, session: &str, activity: Value) {
        let _ = self
            .out
            .send(FromWorker::Event {
                activity,
                session: Some(session.to_owned()),
            })
            .await;
    }

    /// Report a problem that ends this instance: the server tells every attached session and
    /// stops the worker.
    pub async fn fatal(&self, error: impl Into<String>) {
        let _ = self
            .out
            .send(FromWorker::Fatal {
                error: error.into(),
            })
            .await;
    }

    /// This persistent instance now acts as `actor` with `credentials` (e.g. after a nick
    /// change): call it before answering the job that caused it, so the reply reaches the
    /// client only once the new actor's requests come here.
    pub async fn rekey(&self, actor: &str, credentials: Value) {
        let _ = self
            .out
            .send(FromWorker::Rekey {
                actor: actor.to_owned(),
                credentials,
            })
            .await;
    }

    /// A boolean server setting (false when absent).
    pub fn setting(&self, key: &str) -> bool {
        self.settings
            .get(key)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// A protocol platform. Implementations live in their own crates under `crates/platforms/`.
pub trait Platform: Send + Sync + Sized + 'static {
    /// Static description: name, verbs, schemas, persistence. The server reads it without
    /// starting a worker, to validate requests and publish the schema registry.
    fn manifest() -> Manifest;

    /// Create the platform inside its worker process.
    fn new(ctx: WorkerContext) -> Self;

    /// Run one job. `Ok(Some(v))` replies with `v`, `Ok(None)` replies with the request
    /// itself, `Err(e)` replies with the request plus `error: e`.
    fn handle(&self, job: Job)
    -> impl Future<Output = Result<Option<Value>, PlatformError>> + Send;

    /// Called before a clean exit (server shutdown, instance reaped): close connections.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
