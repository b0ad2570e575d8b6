//! Switchboard's engine: every piece of state that more than one task (or, later, more than
//! one node) shares sits behind a narrow trait here.
//!
//! | trait | what it holds | embedded backend |
//! |---|---|---|
//! | [`Broker`] | publish/subscribe channels (`session:{id}`, `instance:{key}` …) | [`memory::MemoryBroker`] |
//! | [`JobQueue`] | platform jobs waiting for a worker: reserve, ack, retry, dead letters | [`memory::MemoryQueue`] |
//! | [`CredentialStore`] | sealed credentials per session, with a TTL | [`memory::MemoryCredentialStore`] |
//! | [`Registry`] | chat presence: user → connections → node | [`memory::MemoryRegistry`] |
//! | [`Leases`] | which node runs a persistent platform instance (one IRC login) | [`memory::MemoryLeases`] |
//!
//! Callers hold an [`Engine`] (one `Arc<dyn …>` per trait) and never name a backend, so the Redis
//! backend (crate `switchboard-engine-redis`) is swapped in by configuration. The traits move opaque bytes: what goes in
//! a queue or a channel is sealed by the caller with [`seal::SealKey`], so no backend ever
//! holds a secret in plaintext. The [`suite`] module (feature `suite`) is the behaviour
//! every backend must show; each backend's tests run it.

pub mod broker;
pub mod credentials;
mod error;
pub mod fanout;
pub mod lease;
pub mod memory;
pub mod queue;
pub mod registry;
pub mod seal;
#[cfg(feature = "suite")]
pub mod suite;

use std::sync::Arc;

pub use broker::{Broker, Subscription};
pub use credentials::CredentialStore;
pub use error::EngineError;
pub use lease::Leases;
pub use queue::{Delivery, JobQueue, NackOutcome};
pub use registry::Registry;

/// The engine a server runs on: one backend per trait, chosen at start-up.
#[derive(Clone)]
pub struct Engine {
    pub broker: Arc<dyn Broker>,
    pub queue: Arc<dyn JobQueue>,
    pub credentials: Arc<dyn CredentialStore>,
    pub registry: Arc<dyn Registry>,
    pub leases: Arc<dyn Leases>,
    /// Short name for banners and logs ("embedded", "redis").
    pub name: &'static str,
    /// Other nodes share this engine: a stateless platform's queue is then one queue for
    /// the whole cluster, so any node's worker may run any node's job.
    pub distributed: bool,
}

impl Engine {
    /// The embedded engine: everything in-process, nothing to install.
    pub fn embedded() -> Self {
        Engine {
            broker: Arc::new(memory::MemoryBroker::new()),
            queue: Arc::new(memory::MemoryQueue::new(queue::RetryPolicy::default())),
            credentials: Arc::new(memory::MemoryCredentialStore::new()),
            registry: Arc::new(memory::MemoryRegistry::new()),
            leases: Arc::new(memory::MemoryLeases::new()),
            name: "embedded",
            distributed: false,
        }
    }
}
