//! [`JobQueue`] on Redis Streams with one consumer group per queue.
//!
//! Keys of queue `q` (all share the hash tag `{q}`, so each script stays in one slot, and
//! different queues spread over a cluster's nodes):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{prefix}queue:{q}` | stream, group `workers` | waiting jobs and reserved ones (the group's pending list) |
//! | `{prefix}queue:{q}:retry` | sorted set | nacked jobs, scored by when their backoff ends |
//! | `{prefix}queue:{q}:dead` | stream | jobs that ran out of attempts |
//!
//! Entries carry `j` (job id), `p` (the sealed payload, opaque here) and `a` (attempts
//! already made before this entry). A delivery's attempt is `a` + the group's delivery
//! count, so a job whose consumer died and was taken over (`XAUTOCLAIM`) counts that try,
//! and a job that kills every worker ends in the dead letters too.
//!
//! Every node is one consumer. It touches (`XCLAIM … JUSTID`) the jobs it holds every third
//! of `claim_idle`; a job left untouched longer than that belongs to a dead node and the
//! next `reserve` anywhere takes it over. A delivery tag is the stream entry id packed into
//! a `u64` (milliseconds << 20 | sequence), so any node can ack or nack it.
//!
//! Reserving is cancel-safe: the Redis side runs in a spawned fetch (at most one per queue
//! per node), and what it reserves lands in a per-queue local stash that the next
//! `reserve` takes from. A caller that gives up (a `select!` branch dropped) therefore
//! never strands a job. A fetch reads up to [`BATCH`] fresh jobs with one blocking
//! `XREADGROUP`; every [`MAINTENANCE`] it runs the STEP script instead, which promotes due
//! retries and takes over dead consumers' jobs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{Script, Value};
use switchboard_engine::queue::RetryPolicy;
use switchboard_engine::{Delivery, EngineError, JobQueue, NackOutcome};
use tokio::sync::watch;

use crate::connection::{Conn, Target, tagged};
use crate::{RedisOptions, unavailable};

const GROUP: &str = "workers";

/// Fresh jobs one read may reserve: fewer round trips when jobs stream in, yet little
/// hoarding when other nodes are idle.
const BATCH: usize = 8;

/// How often a consumer looks for due retries and dead consumers' jobs (the STEP script)
/// instead of only reading fresh jobs; also the longest a read blocks.
const MAINTENANCE: Duration = Duration::from_millis(250);

/// Shared Lua: create the stream and its group on first use; turn a field list into a table.
const PRELUDE: &str = r"
local function ensure(stream)
  if redis.call('EXISTS', stream) == 0 then
    redis.call('XGROUP', 'CREATE', stream, 'workers', '$', 'MKSTREAM')
  end
end
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- retry members: '<entry id>|<attempts>|<job id length>|<job id><payload>'
local function unpack_retry(m)
  local a, jl, s = string.match(m, '^[^|]*|(%d+)|(%d+)|()')
  jl = tonumber(jl)
  return string.sub(m, s, s + jl - 1), string.sub(m, s + jl), a
end
";

/// KEYS: stream. ARGV: job id, payload.
const PUSH: &str = r"
ensure(KEYS[1])
return redis.call('XADD', KEYS[1], '*', 'j', ARGV[1], 'p', ARGV[2], 'a', 0)
";

/// One non-blocking reservation attempt. KEYS: stream, retry, dead. ARGV: consumer,
/// claim idle ms, max attempts. Returns {id, job id, payload, attempt}, or the ms until the
/// next retry is due (-1 if none).
const STEP: &str = r"
ensure(KEYS[1])
local now = now_ms()
-- Retries whose backoff has passed go back on the stream.
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)) do
  local j, p, a = unpack_retry(m)
  redis.call('XADD', KEYS[1], '*', 'j', j, 'p', p, 'a', a)
  redis.call('ZREM', KEYS[2], m)
end
-- A job whose consumer went silent is taken over, or dead-lettered if out of attempts.
for _ = 1, 10 do
  local c = redis.call('XAUTOCLAIM', KEYS[1], 'workers', ARGV[1], ARGV[2], '0-0', 'COUNT', 1)
  local e = c[2][1]
  if not e then break end
  local f = fields(e[2])
  local pend = redis.call('XPENDING', KEYS[1], 'workers', e[1], e[1], 1)
  local attempt = tonumber(f['a']) + pend[1][4]
  if attempt <= tonumber(ARGV[3]) then
    return {e[1], f['j'], f['p'], attempt}
  end
  redis.call('XADD', KEYS[3], '*', 'j', f['j'], 'p', f['p'], 'a', attempt - 1)
  redis.call('XACK', KEYS[1], 'workers', e[1])
  redis.call('XDEL', KEYS[1], e[1])
end
local r = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[1], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
if r then
  local e = r[1][2][1]
  local f = fields(e[2])
  return {e[1], f['j'], f['p'], tonumber(f['a']) + 1}
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if nxt[2] then return math.max(0, tonumber(nxt[2]) - now) end
return -1
";

/// KEYS: stream. ARGV: entry id. Returns 1 if it was reserved.
const ACK: &str = r"
local n = redis.call('XACK', KEYS[1], 'workers', ARGV[1])
if n == 1 then redis.call('XDEL', KEYS[1], ARGV[1]) end
return n
";

/// KEYS: stream, retry, dead. ARGV: entry id, max attempts, base backoff ms, max backoff ms.
/// Returns the attempt that failed (retrying), -1 (dead-lettered) or -2 (not reserved).
const NACK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
local pend = redis.call('XPENDING', KEYS[1], 'workers', ARGV[1], ARGV[1], 1)
if not pend[1] then return -2 end
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1]
redis.call('XACK', KEYS[1], 'workers', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
if not e then return -2 end
local f = fields(e[2])
local attempt = tonumber(f['a']) + pend[1][4]
if attempt >= tonumber(ARGV[2]) then
  redis.call('XADD', KEYS[3], '*', 'j', f['j'], 'p', f['p'], 'a', attempt)
  return -1
end
local after = math.min(tonumber(ARGV[3]) * 2 ^ (attempt - 1), tonumber(ARGV[4]))
local member = ARGV[1] .. '|' .. attempt .. '|' .. #f['j'] .. '|' .. f['j'] .. f['p']
redis.call('ZADD', KEYS[2], now_ms() + after, member)
return attempt
";

/// KEYS: stream. ARGV: entry ids. Puts jobs this node reserved but never started back at
/// the end of the stream, their attempt not counted. Returns how many went back.
const REQUEUE: &str = r"
local n = 0
for _, id in ipairs(ARGV) do
  local e = redis.call('XRANGE', KEYS[1], id, id)[1]
  if e and redis.call('XACK', KEYS[1], 'workers', id) == 1 then
    local f = fields(e[2])
    redis.call('XDEL', KEYS[1], id)
    redis.call('XADD', KEYS[1], '*', 'j', f['j'], 'p', f['p'], 'a', f['a'])
    n = n + 1
  end
end
return n
";

/// KEYS: stream. ARGV: consumer, entry ids. Resets the idle time of the jobs this consumer
/// still owns (never one another node has meanwhile taken over).
const TOUCH: &str = r"
for i = 2, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], 'workers', ARGV[i], ARGV[i], 1)[1]
  if p and p[2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'workers', ARGV[1], 0, ARGV[i], 'JUSTID')
  end
end
return 0
";

/// KEYS: stream, retry. Jobs waiting: stream entries not reserved, plus pending retries.
const LEN: &str = r"
local n = redis.call('ZCARD', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  n = n + redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], 'workers')[1]
end
return n
";

/// KEYS: stream, retry, dead. Returns every job still in the queue (waiting, reserved,
/// retrying) as a flat list of job id, payload, attempts; then deletes the queue.
const REMOVE: &str = r"
local out = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local f = fields(e[2])
  table.insert(out, f['j']); table.insert(out, f['p']); table.insert(out, f['a'])
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local j, p, a = unpack_retry(m)
  table.insert(out, j); table.insert(out, p); table.insert(out, a)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return out
";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

/// Pack a stream entry id (`ms-seq`) into a delivery tag.
fn tag_of(id: &str) -> Result<u64, EngineError> {
    let bad = || EngineError::Unavailable(format!("unexpected stream entry id {id:?}"));
    let (ms, seq) = id.split_once('-').ok_or_else(bad)?;
    let ms: u64 = ms.parse().map_err(|_| bad())?;
    let seq: u64 = seq.parse().map_err(|_| bad())?;
    if seq >= 1 << 20 || ms >= 1 << 43 {
        return Err(bad());
    }
    Ok(ms << 20 | seq)
}

fn id_of(tag: u64) -> String {
    format!("{}-{}", tag >> 20, tag & ((1 << 20) - 1))
}

fn parse_error(what: &str) -> EngineError {
    EngineError::Unavailable(format!("unexpected redis reply to {what}"))
}

/// `{id, job id, payload, attempt}` from the STEP script.
fn delivery_of(v: Value) -> Result<Delivery, EngineError> {
    let (id, job_id, payload, attempt): (String, String, Vec<u8>, u32) =
        redis::from_redis_value(v).map_err(|_| parse_error("reserve"))?;
    Ok(Delivery {
        tag: tag_of(&id)?,
        job_id,
        payload: Bytes::from(payload),
        attempt,
    })
}

/// A stream entry (`[id, [field, value, …]]`) as a delivery whose attempt is `a + extra`.
fn entry_delivery(entry: Value, extra: u32) -> Result<Delivery, EngineError> {
    let (id, flat): (String, Vec<Vec<u8>>) =
        redis::from_redis_value(entry).map_err(|_| parse_error("stream read"))?;
    let mut job_id = None;
    let mut payload = None;
    let mut attempts = None;
    for pair in flat.chunks_exact(2) {
        match &pair[0][..] {
            b"j" => job_id = String::from_utf8(pair[1].clone()).ok(),
            b"p" => payload = Some(Bytes::from(pair[1].clone())),
            b"a" => {
                attempts = std::str::from_utf8(&pair[1])
                    .ok()
                    .and_then(|a| a.parse::<u32>().ok())
            }
            _ => {}
        }
    }
    match (job_id, payload, attempts) {
        (Some(job_id), Some(payload), Some(a)) => Ok(Delivery {
            tag: tag_of(&id)?,
            job_id,
            payload,
            attempt: a + extra,
        }),
        _ => Err(parse_error("stream entry")),
    }
}

/// This node's view of one queue: reserved jobs not yet handed to a caller, and whether a
/// fetch is running (at most one per queue, so dropped callers cannot pile them up).
struct Local {
    stash: VecDeque<Delivery>,
    error: Option<String>,
    fetching: bool,
    /// When the last fetch ran the STEP script (retries, take-overs), if it did.
    last_step: Option<tokio::time::Instant>,
    done: watch::Sender<u64>,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            stash: VecDeque::new(),
            error: None,
            fetching: false,
            last_step: None,
            done: watch::Sender::new(0),
        }
    }
}

struct Inner {
    target: Target,
    conn: Conn,
    prefix: String,
    consumer: String,
    policy: RetryPolicy,
    claim_idle: Duration,
    push: Script,
    step: Script,
    ack: Script,
    nack: Script,
    len: Script,
    remove: Script,
    requeue: Script,
    touch: Script,
    local: Mutex<HashMap<String, Local>>,
    /// Tags this node holds per queue, touched so no other node takes them over.
    held: Mutex<HashMap<String, HashSet<u64>>>,
    /// Idle connections for blocking reads (a blocked command would stall the shared one).
    blocking: Mutex<Vec<Conn>>,
}

pub struct RedisQueue {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedisQueue {
    pub(crate) fn new(target: Target, conn: Conn, options: &RedisOptions) -> Self {
        let inner = Arc::new(Inner {
            target,
            conn,
            prefix: options.prefix.clone(),
            consumer: format!("node-{}", switchboard_engine::seal::random_id::<8>()),
            policy: options.retry,
            claim_idle: options.claim_idle,
            push: script(PUSH),
            step: script(STEP),
            ack: script(ACK),
            nack: script(NACK),
            len: script(LEN),
            remove: script(REMOVE),
            requeue: script(REQUEUE),
            touch: script(TOUCH),
            local: Mutex::default(),
            held: Mutex::default(),
            blocking: Mutex::default(),
        });
        tokio::spawn(touch(Arc::downgrade(&inner)));
        RedisQueue { inner }
    }

    /// A queue on its own command connection (tests, and a worker that needs only this).
    pub async fn connect(options: &RedisOptions) -> Result<Self, EngineError> {
        let target = crate::target(options)?;
        let conn = target.command().await?;
        Ok(Self::new(target, conn, options))
    }
}

impl Inner {
    /// The stream, retry set and dead-letter stream of `queue`.
    fn keys(&self, queue: &str) -> Result<[String; 3], EngineError> {
        let stream = tagged(&self.prefix, "queue", queue)?;
        let retry = format!("{stream}:retry");
        let dead = format!("{stream}:dead");
        Ok([stream, retry, dead])
    }

    /// Give reserved-but-unstarted jobs back to the other consumers.
    async fn requeue(&self, queue: &str, tags: Vec<u64>) {
        let Ok([stream, _, _]) = self.keys(queue) else {
            return;
        };
        if tags.is_empty() {
            return;
        }
        let mut call = self.requeue.key(stream);
        for tag in &tags {
            call.arg(id_of(*tag));
            self.release(queue, *tag);
        }
        if let Err(e) = call.invoke_async::<i64>(&mut self.conn.clone()).await {
            // Not lost: untouched from now on, they are taken over after `claim_idle`.
            tracing::warn!(error = %e, %queue, "cannot requeue reserved jobs");
        }
    }

    fn hold(&self, queue: &str, tag: u64) {
        lock(&self.held)
            .entry(queue.to_owned())
            .or_default()
            .insert(tag);
    }

    fn release(&self, queue: &str, tag: u64) {
        let mut held = lock(&self.held);
        if let Some(tags) = held.get_mut(queue) {
            tags.remove(&tag);
            if tags.is_empty() {
                held.remove(queue);
            }
        }
    }

    /// One reservation attempt. With `maintain`, the STEP script first (retries due, jobs
    /// of dead consumers, one fresh job); then, if that found nothing, a read of up to
    /// [`BATCH`] fresh jobs, blocking at most `block` (cut to [`MAINTENANCE`] and to when
    /// the next retry falls due, so those are never late by more than that).
    async fn fetch_batch(
        &self,
        queue: &str,
        block: Duration,
        maintain: bool,
    ) -> Result<Vec<Delivery>, EngineError> {
        let [stream, retry, dead] = self.keys(queue)?;
        let mut block = block.min(MAINTENANCE);
        if maintain {
            let reply: Value = self
                .step
                .key(&stream)
                .key(&retry)
                .key(&dead)
                .arg(&self.consumer)
                .arg(self.claim_idle.as_millis() as u64)
                .arg(self.policy.max_attempts)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(unavailable)?;
            match reply {
                Value::Int(due) if due >= 0 => block = block.min(Duration::from_millis(due as u64)),
                Value::Int(_) => {}
                other => return delivery_of(other).map(|d| vec![d]),
            }
        }
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(BATCH);
        let blocking = block >= Duration::from_millis(1);
        if blocking {
            read.arg("BLOCK").arg(block.as_millis() as u64);
        }
        read.arg("STREAMS").arg(&stream).arg(">");
        let reply = if blocking {
            let idle = lock(&self.blocking).pop();
            // Timeouts are ours (below): the connection's own would cut the block short.
            let mut conn = match idle {
                Some(c) => c,
                None => self.target.blocking().await?,
            };
            let reply = tokio::time::timeout(
                block + Duration::from_secs(5),
                read.query_async::<Value>(&mut conn),
            )
            .await
            .map_err(|_| EngineError::Unavailable("redis: blocking read timed out".into()))?
            .map_err(unavailable)?;
            lock(&self.blocking).push(conn);
            reply
        } else {
            read.query_async::<Value>(&mut self.conn.clone())
                .await
                .map_err(unavailable)?
        };
        // [[stream, [[id, fields], …]]] or nil
        let streams: Option<Vec<(String, Vec<Value>)>> =
            redis::from_redis_value(reply).map_err(|_| parse_error("XREADGROUP"))?;
        streams
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .map(|entry| entry_delivery(entry, 1))
            .collect()
    }
}

/// Run one fetch for `queue` and leave its outcome in the local stash.
async fn fetch(inner: Arc<Inner>, queue: String, block: Duration, maintain: bool) {
    let result = inner.fetch_batch(&queue, block, maintain).await;
    let orphans: Vec<u64> = {
        let mut local = lock(&inner.local);
        match local.get_mut(&queue) {
            // Released or removed while we fetched: nobody here will take these jobs.
            None => result.into_iter().flatten().map(|d| d.tag).collect(),
            Some(l) => {
                l.fetching = false;
                match result {
                    Ok(batch) => {
                        for d in batch {
                            inner.hold(&queue, d.tag);
                            l.stash.push_back(d);
                        }
                    }
                    Err(e) => {
                        l.error = Some(e.to_string());
                        // Whatever broke (Redis restarted empty?), maintenance recreates it.
                        l.last_step = None;
                    }
                }
                l.done.send_modify(|n| *n += 1);
                Vec::new()
            }
        }
    };
    inner.requeue(&queue, orphans).await;
}

/// Keep this node's reservations from looking abandoned while it is alive.
async fn touch(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => (i.claim_idle / 3).max(Duration::from_millis(50)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let held: Vec<(String, Vec<u64>)> = lock(&inner.held)
            .iter()
            .map(|(q, tags)| (q.clone(), tags.iter().copied().collect()))
            .collect();
        for (queue, tags) in held {
            let Ok([stream, _, _]) = inner.keys(&queue) else {
                continue;
            };
            let mut call = inner.touch.key(stream);
            call.arg(&inner.consumer);
            for tag in tags {
                call.arg(id_of(tag));
            }
            if let Err(e) = call.invoke_async::<i64>(&mut inner.conn.clone()).await {
                tracing::warn!(error = %e, %queue, "cannot touch reserved jobs");
            }
        }
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    async fn push(&self, queue: &str, job_id: &str, payload: Bytes) -> Result<(), EngineError> {
        let [stream, _, _] = self.inner.keys(queue)?;
        let _: String = self
            .inner
            .push
            .key(stream)
            .arg(job_id)
            .arg(&payload[..])
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn reserve(&self, queue: &str, wait: Duration) -> Result<Option<Delivery>, EngineError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut waited = false;
        loop {
            let mut done = {
                let mut local = lock(&self.inner.local);
                let l = local.entry(queue.to_owned()).or_default();
                if let Some(d) = l.stash.pop_front() {
                    return Ok(Some(d));
                }
                if let Some(e) = l.error.take() {
                    return Err(EngineError::Unavailable(e));
                }
                if !l.fetching {
                    let now = tokio::time::Instant::now();
                    if waited && now >= deadline {
                        return Ok(None);
                    }
                    let maintain = l.last_step.is_none_or(|t| now - t >= MAINTENANCE);
                    if maintain {
                        l.last_step = Some(now);
                    }
                    l.fetching = true;
                    let fetch = fetch(
                        self.inner.clone(),
                        queue.to_owned(),
                        deadline - now,
                        maintain,
                    );
                    tokio::spawn(fetch);
                }
                l.done.subscribe()
            };
            // The fetch always ends (its blocking read is bounded), and its outcome stays
            // in the stash if this call is dropped meanwhile.
            let _ = done.changed().await;
            waited = true;
        }
    }

    async fn ack(&self, queue: &str, tag: u64) -> Result<(), EngineError> {
        let [stream, _, _] = self.inner.keys(queue)?;
        let n: i64 = self
            .inner
            .ack
            .key(stream)
            .arg(id_of(tag))
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(unavailable)?;
        self.inner.release(queue, tag);
        if n == 1 {
            Ok(())
        } else {
            Err(EngineError::UnknownDelivery(tag))
        }
    }

    async fn nack(&self, queue: &str, tag: u64) -> Result<NackOutcome, EngineError> {
        let [stream, retry, dead] = self.inner.keys(queue)?;
        let policy = self.inner.policy;
        let n: i64 = self
            .inner
            .nack
            .key(stream)
            .key(retry)
            .key(dead)
            .arg(id_of(tag))
            .arg(policy.max_attempts)
            .arg(policy.base_backoff.as_millis() as u64)
            .arg(policy.max_backoff.as_millis() as u64)
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(unavailable)?;
        self.inner.release(queue, tag);
        match n {
            -2 => Err(EngineError::UnknownDelivery(tag)),
            -1 => Ok(NackOutcome::DeadLettered),
            attempt => Ok(NackOutcome::Retrying {
                after: policy.backoff(attempt as u32),
            }),
        }
    }

    async fn dead_letters(&self, queue: &str) -> Result<Vec<Delivery>, EngineError> {
        let [_, _, dead] = self.inner.keys(queue)?;
        let entries: Vec<Value> = redis::cmd("XRANGE")
            .arg(dead)
            .arg("-")
            .arg("+")
            .query_async(&mut self.inner.conn.clone())
            .await
            .map_err(unavailable)?;
        entries
            .into_iter()
            .map(|e| entry_delivery(e, 0).map(|d| Delivery { tag: 0, ..d }))
            .collect()
    }

    async fn len(&self, queue: &str) -> Result<usize, EngineError> {
        let [stream, retry, _] = self.inner.keys(queue)?;
        self.inner
            .len
            .key(stream)
            .key(retry)
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn release(&self, queue: &str) -> Result<(), EngineError> {
        let stashed: Vec<u64> = lock(&self.inner.local)
            .remove(queue)
            .map(|l| l.stash.into_iter().map(|d| d.tag).collect())
            .unwrap_or_default();
        self.inner.requeue(queue, stashed).await;
        Ok(())
    }

    async fn remove(&self, queue: &str) -> Result<Vec<Delivery>, EngineError> {
        let [stream, retry, dead] = self.inner.keys(queue)?;
        let flat: Vec<Vec<u8>> = self
            .inner
            .remove
            .key(stream)
            .key(retry)
            .key(dead)
            .invoke_async(&mut self.inner.conn.clone())
            .await
            .map_err(unavailable)?;
        lock(&self.inner.local).remove(queue);
        lock(&self.inner.held).remove(queue);
        Ok(flat
            .chunks_exact(3)
            .map(|t| Delivery {
                tag: 0,
                job_id: String::from_utf8_lossy(&t[0]).into_owned(),
                payload: Bytes::from(t[1].clone()),
                attempt: std::str::from_utf8(&t[2])
                    .ok()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::{id_of, tag_of};

    #[test]
    fn tags_round_trip_stream_ids_and_refuse_what_does_not_fit() {
        for id in [
            "0-0",
            "1763800000000-0",
            "1763800000000-1048575",
            "8796093022207-7",
        ] {
            assert_eq!(id_of(tag_of(id).unwrap()), id);
        }
        assert!(
            tag_of("1763800000000-1048576").is_err(),
            "sequence too large"
        );
        assert!(tag_of("8796093022208-0").is_err(), "milliseconds too large");
        assert!(tag_of("nonsense").is_err());
    }
}
