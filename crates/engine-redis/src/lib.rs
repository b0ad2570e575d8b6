//! Switchboard's Redis engine: the [`switchboard_engine`] traits on one Redis server, so
//! several `switchboard serve` nodes share sessions' channels, job queues, credentials
//! and chat presence.
//!
//! | trait | Redis structure | module |
//! |---|---|---|
//! | `Broker` | pub/sub; one subscriber connection per node multiplexing every local subscription | [`broker`] |
//! | `JobQueue` | a stream per queue with one consumer group, a retry sorted set, a dead-letter stream | [`queue`] |
//! | `CredentialStore` | one key per sealed blob with a TTL, under `session:{id}:*` | [`credentials`] |
//! | `Registry` | a hash per user, an online set, node liveness keys kept by heartbeats | [`registry`] |
//! | `Leases` | one key per lease: the holder, with a PTTL | [`lease`] |
//!
//! Commands go over a [`ConnectionManager`] (one multiplexed connection that reconnects with
//! exponential backoff); while Redis is down every call fails with
//! [`EngineError::Unavailable`] instead of hanging or losing data silently. Keys that one
//! script touches together share a `{hash tag}` so they stay in one cluster slot.

pub mod broker;
pub mod credentials;
pub mod lease;
pub mod queue;
pub mod registry;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
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
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
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

/// The command connection every part shares: reconnects by itself with backoff.
pub(crate) async fn command_connection(
    client: &redis::Client,
) -> Result<ConnectionManager, EngineError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_max_delay(Duration::from_secs(5))
        .set_number_of_retries(3);
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(unavailable)
}

pub(crate) fn client(options: &RedisOptions) -> Result<redis::Client, EngineError> {
    if options.prefix.contains(['{', '}']) {
        return Err(EngineError::Unavailable(
            "redis key prefix must not contain '{' or '}' (they are cluster hash tags)".into(),
        ));
    }
    redis::Client::open(options.url.as_str())
        .map_err(|e| EngineError::Unavailable(format!("bad redis url: {e}")))
}

/// Connect to Redis and build the engine. Fails (without retrying) if Redis cannot be
/// reached now, so a misconfigured node refuses to start instead of limping.
pub async fn connect(options: RedisOptions) -> Result<Engine, EngineError> {
    let client = client(&options)?;
    let conn = command_connection(&client).await?;
    let broker = RedisBroker::start(client.clone(), conn.clone(), &options.prefix);
    let queue = RedisQueue::new(client, conn.clone(), &options);
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
