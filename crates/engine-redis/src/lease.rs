//! [`Leases`] on Redis: one string key per lease, `{prefix}lease:{<name>}`, whose value is
//! the holder and whose PTTL is the lease. Every operation touches that one key, so it works
//! unchanged on Redis Cluster.
//!
//! Taking is `SET NX PX`; renewing and releasing compare the holder first, in a script, so
//! a holder whose lease expired (and was taken over) can neither extend nor delete its
//! successor's.

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use switchboard_engine::{EngineError, Leases};

use crate::connection::Conn;
use crate::unavailable;

/// ARGV: holder, ttl ms. Takes a free lease, renews our own; returns the holder after.
const ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return ARGV[1] end
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return cur
end
return cur
";

/// ARGV: holder, ttl ms. 1 when renewed.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// ARGV: holder. 1 when released.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

pub struct RedisLeases {
    conn: Conn,
    prefix: String,
    acquire: Script,
    renew: Script,
    release: Script,
}

impl RedisLeases {
    pub(crate) fn new(conn: Conn, prefix: &str) -> Self {
        RedisLeases {
            conn,
            prefix: prefix.to_owned(),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}lease:{{{name}}}", self.prefix)
    }
}

/// Milliseconds for `PX`, at least 1 (Redis refuses 0).
fn ms(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

#[async_trait]
impl Leases for RedisLeases {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<String, EngineError> {
        self.acquire
            .key(self.key(name))
            .arg(holder)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn renew(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, EngineError> {
        let n: i64 = self
            .renew
            .key(self.key(name))
            .arg(holder)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn release(&self, name: &str, holder: &str) -> Result<bool, EngineError> {
        let n: i64 = self
            .release
            .key(self.key(name))
            .arg(holder)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn holder(&self, name: &str) -> Result<Option<String>, EngineError> {
        redis::cmd("GET")
            .arg(self.key(name))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}
