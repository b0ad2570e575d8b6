//! In-process [`Registry`]: a map from user to their connections.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::lock;
use crate::registry::{Located, Nodes};
use crate::{EngineError, Registry};

#[derive(Default)]
pub struct MemoryRegistry {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// user → [(conn, node)], oldest first. Users with no connection are removed.
    users: HashMap<String, Vec<(String, String)>>,
    /// Bumped with every connection added or removed (see [`Registry::locate`]).
    version: u64,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn connect(&self, user: &str, conn: &str, node: &str) -> Result<bool, EngineError> {
        let mut state = self.state();
        // Most users have one connection: room for one, not the four a first push makes.
        let conns = state
            .users
            .entry(user.to_owned())
            .or_insert_with(|| Vec::with_capacity(1));
        let first = conns.is_empty();
        if !conns.iter().any(|(c, _)| c == conn) {
            conns.push((conn.to_owned(), node.to_owned()));
            state.version += 1;
        }
        Ok(first)
    }

    async fn disconnect(&self, user: &str, conn: &str) -> Result<bool, EngineError> {
        let mut state = self.state();
        let Some(conns) = state.users.get_mut(user) else {
            return Ok(false);
        };
        let before = conns.len();
        conns.retain(|(c, _)| c != conn);
        let removed = conns.len() < before;
        let last = conns.is_empty();
        if last {
            state.users.remove(user);
        }
        if removed {
            state.version += 1;
        }
        Ok(removed && last)
    }

    async fn connections(&self, user: &str) -> Result<Vec<(String, String)>, EngineError> {
        Ok(self.state().users.get(user).cloned().unwrap_or_default())
    }

    async fn online_users(&self) -> Result<Vec<String>, EngineError> {
        Ok(self.state().users.keys().cloned().collect())
    }

    async fn locate(&self, users: &[String], known: Option<u64>) -> Result<Located, EngineError> {
        let state = self.state();
        if known == Some(state.version) {
            return Ok(Located::Unchanged);
        }
        let mut nodes = Nodes::new();
        for user in users {
            for (_, node) in state.users.get(user).into_iter().flatten() {
                let held = nodes.entry(node.clone()).or_default();
                if held.last() != Some(user) {
                    held.push(user.clone());
                }
            }
        }
        Ok(Located::At {
            version: state.version,
            nodes,
        })
    }

    async fn is_online(&self, user: &str) -> Result<bool, EngineError> {
        Ok(self.state().users.contains_key(user))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn behaviour_suite() {
        crate::suite::registry(&super::MemoryRegistry::new()).await;
    }
}
