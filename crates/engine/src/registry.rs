//! Who is connected where: user → connections → node. The chat service records every
//! authenticated connection here, asks it which nodes to route a user's messages to, and
//! learns from it when a user comes online (first connection) or goes offline (last one).
//!
//! Users, connections and nodes are opaque strings to the registry. A distributed backend
//! keeps this in shared storage with heartbeats so a dead node's connections expire.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::EngineError;

/// Broker channel on which a distributed registry publishes the id of every user it takes
/// offline because their node stopped showing it was alive (the user's other nodes never
/// saw them leave, so nobody else could announce it).
pub const EXPIRED_CHANNEL: &str = "{registry}:expired";

/// Nodes, each with the users (of those asked about) it holds connections of.
pub type Nodes = BTreeMap<String, Vec<String>>;

/// An answer of [`Registry::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// No connection came or went anywhere since the version the caller knew.
    Unchanged,
    /// Where the users are, as of registry version `version`.
    At { version: u64, nodes: Nodes },
}

#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Record connection `conn` of `user` on `node`; `true` when it is the user's first
    /// (the user just came online).
    async fn connect(&self, user: &str, conn: &str, node: &str) -> Result<bool, EngineError>;

    /// Forget connection `conn`; `true` when it was the user's last (the user just went
    /// offline). Forgetting an unknown connection changes nothing and returns `false`.
    async fn disconnect(&self, user: &str, conn: &str) -> Result<bool, EngineError>;

    /// The user's connections as `(conn, node)`, oldest first.
    async fn connections(&self, user: &str) -> Result<Vec<(String, String)>, EngineError>;

    /// Every user with at least one connection.
    async fn online_users(&self) -> Result<Vec<String>, EngineError>;

    /// The nodes holding a connection of any of `users`, each with those of `users` it
    /// holds (a room's members → where to route the room's message), in one round trip
    /// on a networked backend.
    ///
    /// `known` is the version of an earlier answer the caller kept: if no connection has
    /// come or gone anywhere since, the answer is [`Located::Unchanged`] and costs the
    /// backend next to nothing. The version changes in the same step as the change it
    /// counts, so a caller that learns of a new connection by any route (its client was
    /// answered, say) and then asks, never gets an answer from before it.
    async fn locate(&self, users: &[String], known: Option<u64>) -> Result<Located, EngineError>;

    /// Whether `user` has at least one connection.
    async fn is_online(&self, user: &str) -> Result<bool, EngineError> {
        Ok(!self.connections(user).await?.is_empty())
    }
}
