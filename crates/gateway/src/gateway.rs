//! The gateway itself: built once at start-up, shared by every transport.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use switchboard_engine::Engine;
use switchboard_protocol::registry::Registry;
use switchboard_protocol::{Manifest, Validator};

use crate::config::GatewayConfig;
use crate::keys::Keys;
use crate::pipeline::Pipeline;
use crate::pool::Pool;
use crate::session::{Pusher, Session};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("invalid platform schema: {0}")]
    Schema(String),
    #[error("engine: {0}")]
    Engine(#[from] switchboard_engine::EngineError),
    #[error("cannot serve platform {platform:?} for other nodes: {reason}")]
    Remote { platform: String, reason: String },
}

/// Why a connection was refused before it got a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many concurrent connections from this address")]
    TooManyConnections,
    /// The engine could not set the session up (a distributed backend is down).
    #[error("server unavailable, try again later")]
    Unavailable,
}

pub(crate) struct GatewayInner {
    pub config: Arc<GatewayConfig>,
    pub engine: Engine,
    pub validator: Validator,
    pub registry: Registry,
    pub pipeline: Pipeline,
    pub pool: Pool,
    pub keys: Keys,
    pub manifests: Vec<Manifest>,
    sessions: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// The gateway; cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<GatewayInner>,
}

impl Gateway {
    /// Build the gateway for `manifests` on `engine`. `version` is what the schema registry
    /// reports.
    pub fn new(
        config: GatewayConfig,
        engine: Engine,
        manifests: Vec<Manifest>,
        version: &str,
    ) -> Result<Self, GatewayError> {
        let validator = Validator::new(&manifests).map_err(GatewayError::Schema)?;
        let registry = Registry::new(version, &manifests);
        let keys = Keys::new(config.secret);
        let config = Arc::new(config);
        let pool = Pool::new(config.clone(), engine.clone(), keys.clone());
        Ok(Gateway {
            inner: Arc::new(GatewayInner {
                pipeline: Pipeline::standard(config.max_payload),
                config,
                engine,
                validator,
                registry,
                pool,
                keys,
                manifests,
                sessions: AtomicUsize::new(0),
                per_ip: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A new session for a connection from `peer`; its pushes go to `push`.
    pub async fn open_session(&self, peer: IpAddr, push: Pusher) -> Result<Session, Refusal> {
        let cap = self.inner.config.max_connections_per_ip;
        {
            let mut per_ip = self.inner.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let n = per_ip.entry(peer).or_insert(0);
            if cap > 0 && *n >= cap {
                return Err(Refusal::TooManyConnections);
            }
            *n += 1;
        }
        self.inner.sessions.fetch_add(1, Ordering::Relaxed);
        match Session::open(self.inner.clone(), peer, push).await {
            Ok(session) => Ok(session),
            Err(e) => {
                tracing::error!(error = %e, "cannot open session");
                self.inner.release(peer);
                Err(Refusal::Unavailable)
            }
        }
    }

    /// Live sessions, instances and the engine, for `GET /health`.
    pub fn health(&self) -> Value {
        json!({
            "status": "ok",
            "engine": self.inner.engine.name,
            "sessions": self.inner.sessions.load(Ordering::Relaxed),
            "instances": self.inner.pool.len(),
            "platforms": self.platform_names(),
        })
    }

    pub fn platform_names(&self) -> Vec<&'static str> {
        self.inner.manifests.iter().map(|m| m.name).collect()
    }

    pub fn engine_name(&self) -> &'static str {
        self.inner.engine.name
    }

    pub fn stage_names(&self) -> Vec<&'static str> {
        self.inner.pipeline.stage_names()
    }

    /// Serve stateless platform `name`'s shared queue for every node on this (distributed)
    /// engine until [`Gateway::shutdown`]: `switchboard platform <name> --redis-url …`.
    /// Persistent platforms cannot: their instances are per login, run by the `serve` node
    /// that first needs each one (see the pool's leases).
    pub fn serve_platform(&self, name: &str) -> Result<(), GatewayError> {
        let refuse = |reason: &str| GatewayError::Remote {
            platform: name.to_owned(),
            reason: reason.to_owned(),
        };
        let manifest = self
            .inner
            .validator
            .manifest(name)
            .cloned()
            .ok_or_else(|| refuse("unknown platform"))?;
        if manifest.persist {
            return Err(refuse("only stateless platforms can run as remote workers"));
        }
        if !self.inner.engine.distributed {
            return Err(refuse("needs a shared engine (--redis-url)"));
        }
        let target = crate::pool::Target {
            key: manifest.name.to_owned(),
            manifest,
            actor: None,
        };
        self.inner
            .pool
            .pin(&target)
            .map_err(|e| refuse(&e.to_string()))
    }

    /// Stop all platform instances (their worker processes exit).
    pub async fn shutdown(&self) {
        self.inner.pool.shutdown().await;
    }
}

impl GatewayInner {
    /// A session from `peer` ended.
    pub(crate) fn release(&self, peer: IpAddr) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&peer);
            }
        }
    }
}
