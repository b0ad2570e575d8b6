//! Switchboard's Redis engine: the [`switchboard_engine`] traits on one Redis server or a
//! Redis Cluster, so several `switchboard serve` nodes share sessions' channels, job
//! queues, credentials and chat presence.
//!
//! | trait | Redis structure | module |
//! |---|---|---|
//! | `Broker` | pub/sub (sharded on a cluster); one subscriber task per node multiplexing every local subscription | [`broker`] |
//! | `JobQueue` | a stream per queue with one consumer group, a retry sorted set, a dead-letter stream | [`queue`] |
//! | `CredentialStore` | one key per sealed blob with a TTL, under `session:{id}:*` | [`credentials`] |
//! | `Registry` | a hash per user, an online set, node liveness keys kept by heartbeats | [`registry`] |
//! | `Leases` | one key per lease: the holder, with a PTTL | [`lease`] |
//!
//! Commands go over one multiplexed connection that reconnects with exponential backoff
//! (a cluster connection routing each command to its slot's node, with
//! [`RedisOptions::cluster`]; see `connection.rs`); while Redis is down every call fails
//! with [`EngineError::Unavailable`] instead of hanging or losing data silently.
//!
//! # Keys on a cluster
//!
//! Every key is `{prefix}<kind>:{<id>}[:<part>]`: the braces make `<id>` the cluster hash
//! tag, and `<id>` is the unit that one script touches together — one queue (its stream,
//! retry set and dead letters), one session (its credentials and their index). So each
//! script runs on one slot while queues and sessions spread over all the cluster's nodes.
//! Presence is the exception: its scripts answer "first connection / last connection /
//! who is online" atomically across users and sweep dead nodes' connections, so all of it
//! shares the one tag `{registry}` (one slot; presence is small next to jobs and
//! credentials). Leases (`{prefix}lease:{<name>}`) touch one key per operation, so each
//! is its own unit. New key types must follow the same rule: pick the unit a script or
//! `MULTI` needs atomically, make it the tag, and never tag by something global.

pub mod broker;
mod connection;
pub mod credentials;
pub mod lease;
pub mod queue;
pub mod registry;
mod shard;

use std::sync::Arc;
use std::time::Duration;

use switchboard_engine::queue::RetryPolicy;
use switchboard_engine::{Engine, EngineError};

pub use broker::RedisBroker;
pub use credentials::RedisCredentialStore;
pub use lease::RedisLeases;
pub use queue::RedisQueue;
pub use registry::RedisRegistry;

/// How to reach Redis and how the engine behaves on it.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`; with [`cluster`](Self::cluster), the
    /// comma-separated URLs of one or more seed nodes (the rest of the cluster is found
    /// from them).
    pub url: String,
    /// `url` names Redis Cluster seed nodes, not one server.
    pub cluster: bool,
    /// Prepended to every key and channel, so several deployments can share one Redis.
    pub prefix: String,
    pub retry: RetryPolicy,
    /// A reserved job whose consumer has not touched it for this long is taken over by
    /// another consumer (its node is presumed dead). Live consumers touch theirs every
    /// third of this.
    pub claim_idle: Duration,
    /// A node that has not shown it alive for this long is presumed dead: its chat
    /// connections vanish from presence. Live nodes refresh every third of this.
    pub presence_ttl: Duration,
}

impl RedisOptions {
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            cluster: false,
            prefix: "switchboard:".into(),
            retry: RetryPolicy::default(),
            claim_idle: Duration::from_secs(30),
            presence_ttl: Duration::from_secs(15),
        }
    }
}

/// Turn a redis-rs error into the engine's: the text names the failure, never a payload.
pub(crate) fn unavailable(e: redis::RedisError) -> EngineError {
    EngineError::Unavailable(format!("redis: {e}"))
}

/// Check the options and find out where Redis is.
pub(crate) fn target(options: &RedisOptions) -> Result<connection::Target, EngineError> {
    if options.prefix.contains(['{', '}']) {
        return Err(EngineError::Unavailable(
            "redis key prefix must not contain '{' or '}' (they are cluster hash tags)".into(),
        ));
    }
    connection::Target::new(options)
}

/// Connect to Redis and build the engine. Fails (without retrying) if Redis cannot be
/// reached now, so a misconfigured node refuses to start instead of limping.
pub async fn connect(options: RedisOptions) -> Result<Engine, EngineError> {
    let target = target(&options)?;
    let conn = target.command().await?;
    let broker = RedisBroker::start(target.clone(), conn.clone(), &options.prefix);
    let queue = RedisQueue::new(target, conn.clone(), &options);
    let credentials = RedisCredentialStore::new(conn.clone(), &options.prefix);
    let leases = RedisLeases::new(conn.clone(), &options.prefix);
    let registry = RedisRegistry::new(conn, &options);
    Ok(Engine {
        broker: Arc::new(broker),
        queue: Arc::new(queue),
        credentials: Arc::new(credentials),
        registry: Arc::new(registry),
        leases: Arc::new(leases),
        name: "redis",
        distributed: true,
    })
}
