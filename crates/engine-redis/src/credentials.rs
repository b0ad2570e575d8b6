//! [`CredentialStore`] on Redis: one key per sealed blob, with the entry's TTL, plus a set
//! indexing a session's keys so `delete_session` needs no `SCAN`.
//!
//! Keys: `{prefix}session:{<id>}:cred:<key>` and `{prefix}session:{<id>}:index`. The session
//! id is the hash tag, so a session's keys share a cluster slot and one script can delete
//! them all, while different sessions spread over the cluster.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;
use switchboard_engine::{CredentialStore, EngineError};

use crate::connection::{Conn, tagged};
use crate::unavailable;

/// Store the blob, index it, and keep the index alive as long as its longest entry.
const PUT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
";

/// Delete every indexed blob and the index; count the blobs that still existed.
const DELETE_SESSION: &str = r"
local keys = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, k in ipairs(keys) do
  n = n + redis.call('DEL', k)
end
redis.call('DEL', KEYS[1])
return n
";

pub struct RedisCredentialStore {
    conn: Conn,
    prefix: String,
    put: Script,
    delete: Script,
}

impl RedisCredentialStore {
    pub(crate) fn new(conn: Conn, prefix: &str) -> Self {
        RedisCredentialStore {
            conn,
            prefix: prefix.to_owned(),
            put: Script::new(PUT),
            delete: Script::new(DELETE_SESSION),
        }
    }

    fn session_key(&self, session: &str) -> Result<String, EngineError> {
        tagged(&self.prefix, "session", session)
    }
}

#[async_trait]
impl CredentialStore for RedisCredentialStore {
    async fn put(
        &self,
        session: &str,
        key: &str,
        sealed: Bytes,
        ttl: Duration,
    ) -> Result<(), EngineError> {
        let base = self.session_key(session)?;
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let _: i64 = self
            .put
            .key(format!("{base}:cred:{key}"))
            .key(format!("{base}:index"))
            .arg(&sealed[..])
            .arg(ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, session: &str, key: &str) -> Result<Option<Bytes>, EngineError> {
        let blob: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("{}:cred:{key}", self.session_key(session)?))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(blob.map(Bytes::from))
    }

    async fn delete_session(&self, session: &str) -> Result<usize, EngineError> {
        let n: usize = self
            .delete
            .key(format!("{}:index", self.session_key(session)?))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(n)
    }
}
