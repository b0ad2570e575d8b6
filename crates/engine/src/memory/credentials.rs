//! In-process [`CredentialStore`]: sealed blobs in a map, expired lazily on read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::lock;
use crate::{CredentialStore, EngineError};

/// One session's entries: key → (sealed blob, expiry).
type Entries = HashMap<String, (Bytes, Instant)>;

#[derive(Default)]
pub struct MemoryCredentialStore {
    sessions: Mutex<HashMap<String, Entries>>,
}

impl MemoryCredentialStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CredentialStore for MemoryCredentialStore {
    async fn put(
        &self,
        session: &str,
        key: &str,
        sealed: Bytes,
        ttl: Duration,
    ) -> Result<(), EngineError> {
        let expires = Instant::now() + ttl;
        lock(&self.sessions)
            .entry(session.to_owned())
            .or_default()
            .insert(key.to_owned(), (sealed, expires));
        Ok(())
    }

    async fn get(&self, session: &str, key: &str) -> Result<Option<Bytes>, EngineError> {
        let mut sessions = lock(&self.sessions);
        let Some(entries) = sessions.get_mut(session) else {
            return Ok(None);
        };
        match entries.get(key) {
            Some((blob, expires)) if *expires > Instant::now() => Ok(Some(blob.clone())),
            Some(_) => {
                entries.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn delete_session(&self, session: &str) -> Result<usize, EngineError> {
        Ok(lock(&self.sessions)
            .remove(session)
            .map_or(0, |entries| entries.len()))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(start_paused = true)]
    async fn behaviour_suite() {
        crate::suite::credentials(&super::MemoryCredentialStore::new()).await;
    }
}
