//! Where a session's platform credentials live between the `credentials` event that brings
//! them and the jobs that use them.
//!
//! The store only ever sees sealed blobs (sealed with a key derived from the session's own
//! secret), keyed by session id and a caller-chosen key (platform + actor). Deleting a
//! session deletes all its credentials; entries also expire after their TTL.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::EngineError;

#[async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// Store (or replace) a sealed blob for `session` under `key`, expiring after `ttl`.
    async fn put(
        &self,
        session: &str,
        key: &str,
        sealed: Bytes,
        ttl: Duration,
    ) -> Result<(), EngineError>;

    /// The blob for `session`/`key`, if present and not expired.
    async fn get(&self, session: &str, key: &str) -> Result<Option<Bytes>, EngineError>;

    /// Forget everything stored for `session`; returns how many entries went.
    async fn delete_session(&self, session: &str) -> Result<usize, EngineError>;
}
