//! [`Registry`] on Redis: who is connected on which node, shared by every node, with node
//! heartbeats so a node that dies without saying goodbye (kill -9, power loss) has its
//! connections disappear within about [`RedisOptions::presence_ttl`].
//!
//! Keys, all under the one hash tag `{registry}` so every script is atomic on one cluster
//! slot. Presence is small next to queues and credentials, and its answers must be
//! atomic across users: "first connection" / "last connection" under concurrent connects
//! on several nodes, and the sweep that drops every connection of a dead node (of any
//! user) in one step. Tagging per user would split those into per-slot pieces that can
//! interleave, so presence lives on one slot (one master) on purpose:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}{registry}:user:<user>` | hash | conn → `"<seq> <node>"` (seq orders oldest first) |
//! | `{prefix}{registry}:online` | set | users with at least one connection |
//! | `{prefix}{registry}:nodes` | set | nodes that have registered connections |
//! | `{prefix}{registry}:node:<node>` | string, TTL | the node is alive while it exists |
//! | `{prefix}{registry}:conns:<node>` | set | the node's `"<len(user)>:<user><conn>"` |
//! | `{prefix}{registry}:seq` | counter | |
//! | `{prefix}{registry}:version` | counter | bumped by every connection added or removed |
//!
//! Every script first *sweeps*: a node in `nodes` whose liveness key has expired loses its
//! connections (and users left with none go offline, each announced on
//! [`EXPIRED_CHANNEL`](switchboard_engine::registry::EXPIRED_CHANNEL) so every node can
//! tell its clients). So reads are exact the moment a dead
//! node's TTL runs out, and the cost is one `EXISTS` per known node while all are alive.
//!
//! The version lets a node keep where a room's members are and ask only "has anything
//! moved since version v?" ([`Registry::locate`]): past the sweep, the script reads one
//! key and answers nothing more while nothing has. A key that Redis lost (restarted
//! without persistence) starts again from the current time in microseconds, not from 0,
//! so a version a node kept from before is not handed out again for a different state.
//!
//! Each instance remembers its own connections and refreshes its nodes' liveness every
//! third of the TTL. When a refresh finds the key gone (Redis restarted empty, or this
//! node was paused past its TTL and swept) it registers its connections again, and it
//! retries connects and disconnects that failed while Redis was away, so presence heals by itself
//! instead of losing live users or keeping departed ones. (It assumes, as chat does, that
//! a connection is disconnected through the instance that connected it.)

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;
use switchboard_engine::registry::{Located, Nodes};
use switchboard_engine::{EngineError, Registry};
use tokio::task::JoinHandle;

use crate::connection::Conn;
use crate::{RedisOptions, unavailable};

/// Shared by every script: `base` is ARGV[1]; drops the connections of dead nodes. It
/// announces on the broker's channel, so it publishes as the broker does: `SPUBLISH` on a
/// cluster (the channel shares the `{registry}` slot the script runs on), which the caller
/// sets as the Lua local `publish`.
const SWEEP: &str = r"
local base = ARGV[1]
local function member(user, conn)
  return string.len(user) .. ':' .. user .. conn
end
local function node_of(v)
  return string.sub(v, string.find(v, ' ', 1, true) + 1)
end
local function bump()
  local key = base .. 'version'
  if redis.call('EXISTS', key) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', key, t[1] .. string.format('%06d', t[2]))
  end
  redis.call('INCR', key)
end
local function sweep()
  for _, n in ipairs(redis.call('SMEMBERS', base .. 'nodes')) do
    if redis.call('EXISTS', base .. 'node:' .. n) == 0 then
      for _, m in ipairs(redis.call('SMEMBERS', base .. 'conns:' .. n)) do
        local i = string.find(m, ':', 1, true)
        local len = tonumber(string.sub(m, 1, i - 1))
        local user = string.sub(m, i + 1, i + len)
        local conn = string.sub(m, i + 1 + len)
        local ukey = base .. 'user:' .. user
        local v = redis.call('HGET', ukey, conn)
        if v and node_of(v) == n then
          redis.call('HDEL', ukey, conn)
          if redis.call('HLEN', ukey) == 0 then
            redis.call('SREM', base .. 'online', user)
            redis.call(publish, base .. 'expired', user)
          end
        end
      end
      redis.call('DEL', base .. 'conns:' .. n)
      redis.call('SREM', base .. 'nodes', n)
      bump()
    end
  end
end
sweep()
";

/// ARGV: base, user, conn, node, ttl_ms. 1 when this is the user's first connection.
const CONNECT: &str = r"
local user, conn, node = ARGV[2], ARGV[3], ARGV[4]
local ukey = base .. 'user:' .. user
redis.call('SET', base .. 'node:' .. node, '1', 'PX', ARGV[5])
redis.call('SADD', base .. 'nodes', node)
local first = redis.call('HLEN', ukey) == 0
if redis.call('HEXISTS', ukey, conn) == 0 then
  local seq = redis.call('INCR', base .. 'seq')
  redis.call('HSET', ukey, conn, string.format('%d', seq) .. ' ' .. node)
  redis.call('SADD', base .. 'conns:' .. node, member(user, conn))
  bump()
end
redis.call('SADD', KEYS[1], user)
if first then return 1 end
return 0
";

/// ARGV: base, user, conn. 1 when that was the user's last connection.
const DISCONNECT: &str = r"
local user, conn = ARGV[2], ARGV[3]
local ukey = base .. 'user:' .. user
local v = redis.call('HGET', ukey, conn)
if not v then return 0 end
redis.call('HDEL', ukey, conn)
redis.call('SREM', base .. 'conns:' .. node_of(v), member(user, conn))
bump()
if redis.call('HLEN', ukey) == 0 then
  redis.call('SREM', KEYS[1], user)
  return 1
end
return 0
";

/// ARGV: base, user. The user's live connections as a flat conn, value list.
const CONNECTIONS: &str = r"
return redis.call('HGETALL', base .. 'user:' .. ARGV[2])
";

/// ARGV: base, known version (or ''), user…. Nothing if the version is still the known
/// one; else the version, then a flat node, user list: each node holding a connection
/// of each user.
const LOCATE: &str = r"
local version = redis.call('GET', base .. 'version') or '0'
if version == ARGV[2] then return {} end
local out = {version}
for i = 3, #ARGV do
  local seen = {}
  for _, v in ipairs(redis.call('HVALS', base .. 'user:' .. ARGV[i])) do
    local n = node_of(v)
    if not seen[n] then
      seen[n] = true
      table.insert(out, n)
      table.insert(out, ARGV[i])
    end
  end
end
return out
";

/// ARGV: base.
const ONLINE: &str = r"
return redis.call('SMEMBERS', KEYS[1])
";

/// ARGV: base, ttl_ms, node… Refresh each node; return those whose key had expired.
const HEARTBEAT: &str = r"
local lost = {}
for i = 3, #ARGV do
  if not redis.call('SET', base .. 'node:' .. ARGV[i], '1', 'PX', ARGV[2], 'GET') then
    table.insert(lost, ARGV[i])
  end
end
return lost
";

struct Shared {
    conn: Conn,
    /// `{prefix}{registry}:`: every key starts with it.
    base: String,
    ttl_ms: u64,
    /// This instance's own connections: (user, conn) → node. What the heartbeat keeps
    /// alive and registers again if Redis forgot them.
    local: Mutex<HashMap<(String, String), String>>,
    /// Changes that failed (Redis was away), retried by the heartbeat: (user, conn) →
    /// `Some(node)` to connect, `None` to disconnect. So a connection that came or went
    /// during an outage is neither missing nor online for ever once Redis is back.
    unsent: Mutex<HashMap<(String, String), Option<String>>>,
    connect: Script,
    disconnect: Script,
    connections: Script,
    locate: Script,
    online: Script,
    heartbeat: Script,
}

pub struct RedisRegistry {
    shared: Arc<Shared>,
    heartbeat: JoinHandle<()>,
}

impl RedisRegistry {
    /// Build the registry and start its heartbeat task (needs a Tokio runtime). Dropping
    /// the registry stops the heartbeat: its nodes then expire like a dead node's.
    pub(crate) fn new(conn: Conn, options: &RedisOptions) -> Self {
        let publish = if options.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let script =
            |body: &str| Script::new(&format!("local publish = '{publish}'\n{SWEEP}{body}"));
        let shared = Arc::new(Shared {
            conn,
            base: format!("{}{{registry}}:", options.prefix),
            ttl_ms: options.presence_ttl.as_millis().max(3) as u64,
            local: Mutex::new(HashMap::new()),
            unsent: Mutex::new(HashMap::new()),
            connect: script(CONNECT),
            disconnect: script(DISCONNECT),
            connections: script(CONNECTIONS),
            locate: script(LOCATE),
            online: script(ONLINE),
            heartbeat: script(HEARTBEAT),
        });
        let heartbeat = tokio::spawn(heartbeat(shared.clone()));
        RedisRegistry { shared, heartbeat }
    }

    /// A registry on its own command connection (tests: one per simulated node).
    pub async fn connect(options: &RedisOptions) -> Result<Self, EngineError> {
        let conn = crate::target(options)?.command().await?;
        Ok(Self::new(conn, options))
    }
}

impl Drop for RedisRegistry {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl Shared {
    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), String>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unsent(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Option<String>>> {
        self.unsent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn online_key(&self) -> String {
        format!("{}online", self.base)
    }

    async fn connect(&self, user: &str, conn: &str, node: &str) -> Result<bool, EngineError> {
        let first: i64 = self
            .connect
            .key(self.online_key())
            .arg(&self.base)
            .arg(user)
            .arg(conn)
            .arg(node)
            .arg(self.ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(first == 1)
    }

    async fn disconnect(&self, user: &str, conn: &str) -> Result<bool, EngineError> {
        let last: i64 = self
            .disconnect
            .key(self.online_key())
            .arg(&self.base)
            .arg(user)
            .arg(conn)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(last == 1)
    }

    /// Retry failed changes, refresh this instance's nodes, and register again the
    /// connections of any node Redis had already forgotten.
    async fn beat(&self) -> Result<(), EngineError> {
        let unsent: Vec<_> = self
            .unsent()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((user, conn), change) in unsent {
            match &change {
                Some(node) => self.connect(&user, &conn, node).await?,
                None => self.disconnect(&user, &conn).await?,
            };
            let mut pending = self.unsent();
            let key = (user, conn);
            // Unless a newer change for the connection came meanwhile, this one is done.
            if pending.get(&key) == Some(&change) {
                pending.remove(&key);
            }
        }
        let nodes: BTreeSet<String> = self.local().values().cloned().collect();
        if nodes.is_empty() {
            return Ok(());
        }
        let lost: Vec<String> = self
            .heartbeat
            .key(self.online_key())
            .arg(&self.base)
            .arg(self.ttl_ms)
            .arg(nodes.into_iter().collect::<Vec<_>>())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        for node in lost {
            let conns: Vec<(String, String)> = self
                .local()
                .iter()
                .filter(|(_, n)| **n == node)
                .map(|(k, _)| k.clone())
                .collect();
            tracing::warn!(
                node = %node,
                connections = conns.len(),
                "registry had expired this node; registering its connections again"
            );
            for (user, conn) in conns {
                self.connect(&user, &conn, &node).await?;
            }
        }
        Ok(())
    }
}

async fn heartbeat(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(shared.ttl_ms / 3));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = shared.beat().await {
            tracing::warn!(error = %e, "registry heartbeat failed");
        }
    }
}

#[async_trait]
impl Registry for RedisRegistry {
    async fn connect(&self, user: &str, conn: &str, node: &str) -> Result<bool, EngineError> {
        let s = &self.shared;
        let key = (user.to_owned(), conn.to_owned());
        let result = s.connect(user, conn, node).await;
        // Only now: a heartbeat that saw the connection before the script ran would find
        // its node's key missing, take the node for expired and register the connection
        // itself, and this call would then report the user's first connection as not first.
        s.local()
            .entry(key.clone())
            .or_insert_with(|| node.to_owned());
        match &result {
            Err(_) => s.unsent().insert(key, Some(node.to_owned())),
            Ok(_) => s.unsent().remove(&key),
        };
        result
    }

    async fn disconnect(&self, user: &str, conn: &str) -> Result<bool, EngineError> {
        let s = &self.shared;
        let key = (user.to_owned(), conn.to_owned());
        s.local().remove(&key);
        let result = s.disconnect(user, conn).await;
        match &result {
            Err(_) => s.unsent().insert(key, None),
            Ok(_) => s.unsent().remove(&key),
        };
        result
    }

    async fn connections(&self, user: &str) -> Result<Vec<(String, String)>, EngineError> {
        let s = &self.shared;
        let flat: Vec<String> = s
            .connections
            .key(s.online_key())
            .arg(&s.base)
            .arg(user)
            .invoke_async(&mut s.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut conns: Vec<(u64, String, String)> = flat
            .chunks_exact(2)
            .map(|pair| {
                let (seq, node) = pair[1].split_once(' ').unwrap_or(("0", pair[1].as_str()));
                (seq.parse().unwrap_or(0), pair[0].clone(), node.to_owned())
            })
            .collect();
        conns.sort_unstable();
        Ok(conns.into_iter().map(|(_, c, n)| (c, n)).collect())
    }

    async fn locate(&self, users: &[String], known: Option<u64>) -> Result<Located, EngineError> {
        let s = &self.shared;
        let flat: Vec<String> = s
            .locate
            .key(s.online_key())
            .arg(&s.base)
            .arg(known.map(|v| v.to_string()).unwrap_or_default())
            .arg(users)
            .invoke_async(&mut s.conn.clone())
            .await
            .map_err(unavailable)?;
        let Some((version, pairs)) = flat.split_first() else {
            return Ok(Located::Unchanged);
        };
        let version = version.parse().map_err(|_| {
            EngineError::Unavailable(format!("the registry answered a bad version {version:?}"))
        })?;
        let mut nodes = Nodes::new();
        for pair in pairs.chunks_exact(2) {
            nodes
                .entry(pair[0].clone())
                .or_default()
                .push(pair[1].clone());
        }
        Ok(Located::At { version, nodes })
    }

    async fn online_users(&self) -> Result<Vec<String>, EngineError> {
        let s = &self.shared;
        s.online
            .key(s.online_key())
            .arg(&s.base)
            .invoke_async(&mut s.conn.clone())
            .await
            .map_err(unavailable)
    }
}
