//! In-process [`Registry`]: a map from user to their connections.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::lock;
use crate::{EngineError, Registry};

#[derive(Default)]
pub struct MemoryRegistry {
    /// user → [(conn, node)], oldest first. Users with no connection are removed.
    users: Mutex<HashMap<String, Vec<(String, String)>>>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn connect(&self, user: &str, conn: &str, node: &str) -> Result<bool, EngineError> {
        let mut users = lock(&self.users);
        // Most users have one connection: room for one, not the four a first push makes.
        let conns = users
            .entry(user.to_owned())
            .or_insert_with(|| Vec::with_capacity(1));
        let first = conns.is_empty();
        if !conns.iter().any(|(c, _)| c == conn) {
            conns.push((conn.to_owned(), node.to_owned()));
        }
        Ok(first)
    }

    async fn disconnect(&self, user: &str, conn: &str) -> Result<bool, EngineError> {
        let mut users = lock(&self.users);
        let Some(conns) = users.get_mut(user) else {
            return Ok(false);
        };
        let before = conns.len();
        conns.retain(|(c, _)| c != conn);
        let removed = conns.len() < before;
        let last = conns.is_empty();
        if last {
            users.remove(user);
        }
        Ok(removed && last)
    }

    async fn connections(&self, user: &str) -> Result<Vec<(String, String)>, EngineError> {
        Ok(lock(&self.users).get(user).cloned().unwrap_or_default())
    }

    async fn online_users(&self) -> Result<Vec<String>, EngineError> {
        Ok(lock(&self.users).keys().cloned().collect())
    }

    async fn is_online(&self, user: &str) -> Result<bool, EngineError> {
        Ok(lock(&self.users).contains_key(user))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn behaviour_suite() {
        crate::suite::registry(&super::MemoryRegistry::new()).await;
    }
}
