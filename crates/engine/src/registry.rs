//! Who is connected where: user → connections → node. The chat service records every
//! authenticated connection here, asks it which nodes to route a user's messages to, and
//! learns from it when a user comes online (first connection) or goes offline (last one).
//!
//! Users, connections and nodes are opaque strings to the registry. A distributed backend
//! keeps this in shared storage with heartbeats so a dead node's connections expire.

use async_trait::async_trait;

use crate::EngineError;

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

    /// Whether `user` has at least one connection.
    async fn is_online(&self, user: &str) -> Result<bool, EngineError> {
        Ok(!self.connections(user).await?.is_empty())
    }
}
