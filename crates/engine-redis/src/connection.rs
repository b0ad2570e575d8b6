//! How the engine reaches Redis: one server, or a Redis Cluster given by seed nodes.
//!
//! The rest of the engine talks to a [`Conn`], which is either a single-server
//! [`ConnectionManager`] or a cluster connection that routes each command (and each
//! script, by its first key) to the node owning the slot and follows `MOVED`/`ASK`. Both
//! reconnect by themselves; while the server or the slot's node is down, calls fail with
//! [`EngineError::Unavailable`].
//!
//! Pub/sub on a cluster is sharded (`SPUBLISH`/`SSUBSCRIBE`): the subscriber gets a
//! cluster connection of its own speaking RESP3, whose pushes (messages, subscription
//! confirmations, lost node connections) go to a channel — see [`Cluster::sharded_pubsub`].

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, PushInfo, RedisFuture, Value};
use switchboard_engine::EngineError;
use tokio::sync::mpsc;

use crate::{RedisOptions, unavailable};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where Redis is: parsed once from [`RedisOptions`].
#[derive(Clone)]
pub(crate) enum Target {
    Single(redis::Client),
    Cluster(Box<Cluster>),
}

#[derive(Clone)]
pub(crate) struct Cluster {
    /// Commands: every call bounded by [`RESPONSE_TIMEOUT`].
    commands: ClusterClient,
    /// Blocking reads: no response timeout of its own (the caller bounds the wait).
    blocking: ClusterClient,
    /// The seed nodes' URLs, for the subscriber's own cluster connection.
    seeds: Vec<String>,
}

impl Target {
    pub(crate) fn new(options: &RedisOptions) -> Result<Self, EngineError> {
        let bad = |e: redis::RedisError| EngineError::Unavailable(format!("bad redis url: {e}"));
        let urls: Vec<&str> = options
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        if !options.cluster {
            return match urls[..] {
                [url] => Ok(Target::Single(redis::Client::open(url).map_err(bad)?)),
                [] => Err(EngineError::Unavailable("no redis url".into())),
                _ => Err(EngineError::Unavailable(
                    "several redis urls are the seed nodes of a Redis Cluster: set redis_cluster"
                        .into(),
                )),
            };
        }
        if urls.is_empty() {
            return Err(EngineError::Unavailable(
                "redis_cluster needs at least one seed node url".into(),
            ));
        }
        let seeds: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
        let builder = || cluster_builder(&seeds);
        Ok(Target::Cluster(Box::new(Cluster {
            commands: builder()
                .response_timeout(RESPONSE_TIMEOUT)
                .build()
                .map_err(bad)?,
            blocking: builder().build().map_err(bad)?,
            seeds,
        })))
    }

    /// The shared command connection.
    pub(crate) async fn command(&self) -> Result<Conn, EngineError> {
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_max_delay(Duration::from_secs(5))
                    .set_number_of_retries(3);
                ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map(Conn::Single)
                    .map_err(unavailable)
            }
            Target::Cluster(c) => c
                .commands
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(unavailable),
        }
    }

    /// A connection for blocking reads, which would stall a shared connection.
    pub(crate) async fn blocking(&self) -> Result<Conn, EngineError> {
        match self {
            Target::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(None);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Plain)
                    .map_err(unavailable)
            }
            Target::Cluster(c) => c
                .blocking
                .get_async_connection()
                .await
                .map(Conn::Cluster)
                .map_err(unavailable),
        }
    }
}

fn cluster_builder(seeds: &[String]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(CONNECT_TIMEOUT)
        // A node that is down fails calls within seconds instead of after the client's
        // default of many retries.
        .retries(3)
}

impl Cluster {
    /// The sharded subscriber's connection: `SSUBSCRIBE` goes to the master owning the
    /// channel's slot (following `MOVED`), and every push — `smessage`, `(s)subscribe`
    /// confirmations, including the client's own resubscriptions after a reconnect or a
    /// topology change, and `Disconnection` when a node's connection closes — arrives on
    /// `pushes`, in order per node. Pushes need RESP3.
    pub(crate) async fn sharded_pubsub(
        &self,
        pushes: mpsc::UnboundedSender<PushInfo>,
    ) -> redis::RedisResult<ClusterConnection> {
        cluster_builder(&self.seeds)
            .response_timeout(RESPONSE_TIMEOUT)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes)
            .build()?
            .get_async_connection()
            .await
    }
}

/// A command connection of either kind; cheap to clone (clones share the connection).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Plain(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// `{prefix}{kind}:{<id>}`: the key stem of one unit whose keys a script touches together.
/// The braces make `id` the cluster hash tag, so the unit's keys share a slot while
/// different units spread over the cluster. An `id` that is empty or starts with `}` would
/// give an empty tag (Redis then hashes each whole key, splitting the unit), so it is
/// refused.
pub(crate) fn tagged(prefix: &str, kind: &str, id: &str) -> Result<String, EngineError> {
    if id.is_empty() || id.starts_with('}') {
        return Err(EngineError::Unavailable(format!(
            "redis: a {kind} name must not be empty or start with '}}'"
        )));
    }
    Ok(format!("{prefix}{kind}:{{{id}}}"))
}
