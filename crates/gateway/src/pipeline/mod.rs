//! The validation pipeline: ordered, replaceable stages between a client's raw event and a
//! job (or stored credentials).
//!
//! Each [`Stage`] looks at the [`Request`] and either lets it through (possibly changed) or
//! refuses it with the client-facing message. The standard order is
//! `size limit → normalise → resolve platform + envelope → platform schema → credentials`;
//! a feature that needs a new check adds a stage instead of editing the others.

mod credentials;
mod schema;
mod size;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use switchboard_engine::CredentialStore;
use switchboard_engine::seal::SealKey;
use switchboard_protocol::{Validator, normalize};

use crate::keys::Keys;

pub use credentials::{Credentials, store_key};
pub use schema::{Envelope, PlatformSchema};
pub use size::SizeLimit;

/// Which client event a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Credentials,
}

/// One event on its way through the pipeline.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: Kind,
    /// Exactly what the client sent; failure replies are built from it.
    pub raw: Value,
    /// The activity as normalised so far (`Null` before the normalise stage).
    pub activity: Value,
    /// Set once the platform is resolved from `@context`.
    pub platform: Option<&'static str>,
    /// The session's credentials for this platform and actor, loaded for jobs that use them.
    pub credentials: Option<Value>,
}

impl Request {
    pub fn new(kind: Kind, raw: Value) -> Self {
        Request {
            kind,
            raw,
            activity: Value::Null,
            platform: None,
            credentials: None,
        }
    }

    /// The actor's id (present once normalised and validated).
    pub fn actor_id(&self) -> &str {
        self.activity
            .pointer("/actor/id")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn verb(&self) -> &str {
        self.activity
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// What a stage may consult about the session and server.
pub struct StageContext<'a> {
    pub session_id: &'a str,
    pub validator: &'a Validator,
    /// Activity objects the session declared (for expanding `actor: "id"`).
    pub objects: &'a HashMap<String, Value>,
    pub store: &'a dyn CredentialStore,
    pub credentials_ttl: Duration,
    pub(crate) keys: &'a Keys,
    pub(crate) session_secret: &'a [u8; 32],
}

impl StageContext<'_> {
    /// The key that seals and opens this session's credentials. Derived on use rather than
    /// kept per connection: it is needed only by credential events and their jobs.
    pub fn session_key(&self) -> SealKey {
        self.keys.session(self.session_secret)
    }
}

/// A client-facing refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(pub String);

impl<E: std::fmt::Display> From<E> for Rejection {
    fn from(e: E) -> Self {
        Rejection(e.to_string())
    }
}

#[async_trait]
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;
    async fn run(&self, req: &mut Request, cx: &StageContext<'_>) -> Result<(), Rejection>;
}

/// Turns raw input into an activity object (see [`switchboard_protocol::normalize`]).
pub struct Normalize;

#[async_trait]
impl Stage for Normalize {
    fn name(&self) -> &'static str {
        "normalize"
    }

    async fn run(&self, req: &mut Request, cx: &StageContext<'_>) -> Result<(), Rejection> {
        req.activity = normalize::normalize(&req.raw, |p| cx.validator.is_platform(p), cx.objects)?;
        Ok(())
    }
}

pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
}

impl Pipeline {
    /// The standard stages, in order.
    pub fn standard(max_payload: usize) -> Self {
        Pipeline {
            stages: vec![
                Box::new(SizeLimit { max: max_payload }),
                Box::new(Normalize),
                Box::new(Envelope),
                Box::new(PlatformSchema),
                Box::new(Credentials),
            ],
        }
    }

    /// Add a stage after the existing ones (before dispatch).
    pub fn push(&mut self, stage: Box<dyn Stage>) {
        self.stages.push(stage);
    }

    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    pub async fn run(&self, mut req: Request, cx: &StageContext<'_>) -> Result<Request, Rejection> {
        for stage in &self.stages {
            if let Err(rejection) = stage.run(&mut req, cx).await {
                tracing::debug!(stage = stage.name(), reason = %rejection.0, "request refused");
                return Err(rejection);
            }
        }
        Ok(req)
    }
}
