//! Closed-loop echo benchmark: Sockethub dummy `echo` activities sent as
//! `message` events with acks, each ack verified and timed, each ack
//! triggering the next send, with `concurrency` requests in flight per
//! connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::timeout_at;

use crate::report::EchoReport;
use crate::sio::{Client, Incoming, Target};

/// How long to wait for outstanding acks once sending has stopped.
const DRAIN: Duration = Duration::from_secs(10);
/// Latency histogram upper bound, in microseconds.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Parameters of one echo run.
pub struct EchoParams {
    pub connections: usize,
    pub concurrency: usize,
    pub requests: u64,
    pub duration: Duration,
    pub warmup: u64,
}

/// Connects, runs the warm-up, then the measured phase, and reports.
pub async fn run(target: &Target, params: &EchoParams) -> Result<EchoReport> {
    let mut clients = connect_all(target, params.connections).await?;
    let warmup = if params.warmup > 0 {
        let (kept, stats) = phase(clients, params, params.warmup, false).await?;
        clients = kept;
        stats
    } else {
        ConnStats::default()
    };
    if clients.is_empty() {
        bail!(
            "all connections failed during warm-up: {}",
            warmup.first_error.unwrap_or_default()
        );
    }

    let started = Instant::now();
    let (clients, measured) = phase(clients, params, params.requests, true).await?;
    // Up to the last ack, so that a drain timeout does not count as work time.
    let elapsed = measured.last_ack.unwrap_or(started) - started;
    for client in clients {
        client.close().await;
    }

    let histogram = measured.histogram.as_ref();
    let quantile = |q: f64| histogram.map_or(0, |h| h.value_at_quantile(q));
    let failed = warmup.failed() + measured.failed();
    let elapsed_s = elapsed.as_secs_f64();
    Ok(EchoReport {
        mode: "echo",
        concurrency: params.concurrency,
        connections: params.connections,
        ok: measured.ok,
        errors: failed,
        unanswered: warmup.unanswered + measured.unanswered,
        elapsed_s,
        rps: if elapsed_s > 0.0 {
            measured.ok as f64 / elapsed_s
        } else {
            0.0
        },
        p50_us: quantile(0.5),
        p90_us: quantile(0.9),
        p99_us: quantile(0.99),
        p999_us: quantile(0.999),
        max_us: histogram.map_or(0, Histogram::max),
        first_error: measured.first_error.or(warmup.first_error),
    })
}

async fn connect_all(target: &Target, n: usize) -> Result<Vec<Client>> {
    let mut pending = JoinSet::new();
    for _ in 0..n {
        let target = target.clone();
        pending.spawn(async move { Client::connect(&target, None).await });
    }
    let mut clients = Vec::with_capacity(n);
    while let Some(joined) = pending.join_next().await {
        clients.push(joined.context("connect task")??);
    }
    Ok(clients)
}

/// Runs up to `limit` requests (shared by all connections) within
/// `params.duration`; returns the connections still usable and merged stats.
async fn phase(
    clients: Vec<Client>,
    params: &EchoParams,
    limit: u64,
    record: bool,
) -> Result<(Vec<Client>, ConnStats)> {
    let budget = Arc::new(Budget {
        issued: AtomicU64::new(0),
        limit,
    });
    let deadline = Instant::now() + params.duration;
    let mut tasks = JoinSet::new();
    for client in clients {
        let budget = Arc::clone(&budget);
        let concurrency = params.concurrency;
        tasks.spawn(drive(client, budget, deadline, concurrency, record));
    }
    let mut kept = Vec::new();
    let mut total = ConnStats::default();
    while let Some(joined) = tasks.join_next().await {
        let (client, stats) = joined.context("connection task")??;
        kept.extend(client);
        total.merge(stats)?;
    }
    Ok((kept, total))
}

/// The shared request budget of a phase; also numbers the requests.
struct Budget {
    issued: AtomicU64,
    limit: u64,
}

impl Budget {
    fn claim(&self) -> Option<u64> {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        (n < self.limit).then_some(n)
    }
}

/// Outcome counters of one connection (or several, once merged).
#[derive(Default)]
struct ConnStats {
    ok: u64,
    errors: u64,
    unanswered: u64,
    histogram: Option<Histogram<u64>>,
    first_error: Option<String>,
    last_ack: Option<Instant>,
}

impl ConnStats {
    fn failed(&self) -> u64 {
        self.errors + self.unanswered
    }

    fn error(&mut self, reason: String) {
        self.errors += 1;
        self.first_error.get_or_insert(reason);
    }

    fn merge(&mut self, other: ConnStats) -> Result<()> {
        self.ok += other.ok;
        self.errors += other.errors;
        self.unanswered += other.unanswered;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.last_ack = self.last_ack.max(other.last_ack);
        match (&mut self.histogram, other.histogram) {
            (Some(mine), Some(theirs)) => mine.add(&theirs).context("merging histograms")?,
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
        Ok(())
    }
}

/// Drives one connection: keeps `concurrency` requests in flight until the
/// budget or the deadline runs out, then drains the outstanding acks.
/// Returns the connection unless it failed.
async fn drive(
    mut client: Client,
    budget: Arc<Budget>,
    deadline: Instant,
    concurrency: usize,
    record: bool,
) -> Result<(Option<Client>, ConnStats)> {
    let mut stats = ConnStats {
        histogram: if record {
            Some(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?)
        } else {
            None
        },
        ..ConnStats::default()
    };
    let mut in_flight: HashMap<u64, (Instant, String)> = HashMap::with_capacity(concurrency);

    for _ in 0..concurrency {
        if let Err(e) = send_next(&mut client, &budget, deadline, &mut in_flight).await {
            return Ok((None, fail_connection(stats, in_flight.len(), e)));
        }
    }
    while !in_flight.is_empty() {
        let incoming = match timeout_at((deadline + DRAIN).into(), client.next()).await {
            Err(_elapsed) => {
                stats.unanswered += in_flight.len() as u64;
                stats
                    .first_error
                    .get_or_insert("timed out waiting for acks".into());
                return Ok((None, stats));
            }
            Ok(Ok(Some(incoming))) => incoming,
            Ok(Ok(None)) => {
                let e = anyhow::anyhow!("server closed the connection");
                return Ok((None, fail_connection(stats, in_flight.len(), e)));
            }
            Ok(Err(e)) => return Ok((None, fail_connection(stats, in_flight.len(), e))),
        };
        let Incoming::Ack { id, args } = incoming else {
            continue;
        };
        let Some((sent_at, content)) = in_flight.remove(&id) else {
            stats.error(format!("ack for unknown id {id}"));
            continue;
        };
        let now = Instant::now();
        stats.last_ack = Some(now);
        let latency_us = u64::try_from((now - sent_at).as_micros()).unwrap_or(u64::MAX);
        match verify(&args, &content) {
            Ok(()) => {
                stats.ok += 1;
                if let Some(histogram) = &mut stats.histogram {
                    histogram.saturating_record(latency_us.max(1));
                }
            }
            Err(reason) => stats.error(reason),
        }
        if let Err(e) = send_next(&mut client, &budget, deadline, &mut in_flight).await {
            return Ok((None, fail_connection(stats, in_flight.len(), e)));
        }
    }
    Ok((Some(client), stats))
}

/// Sends one request if the budget and deadline allow it.
async fn send_next(
    client: &mut Client,
    budget: &Budget,
    deadline: Instant,
    in_flight: &mut HashMap<u64, (Instant, String)>,
) -> Result<()> {
    if Instant::now() >= deadline {
        return Ok(());
    }
    let Some(n) = budget.claim() else {
        return Ok(());
    };
    let content = format!("hello {n}");
    let activity = echo_activity(&content);
    let sent_at = Instant::now();
    let id = client.emit_with_ack("message", &activity).await?;
    in_flight.insert(id, (sent_at, content));
    Ok(())
}

fn fail_connection(mut stats: ConnStats, lost: usize, e: anyhow::Error) -> ConnStats {
    stats.unanswered += lost as u64;
    stats.first_error.get_or_insert(format!("{e:#}"));
    stats
}

/// The Sockethub dummy-platform `echo` activity carrying `content`.
fn echo_activity(content: &str) -> Value {
    json!({
        "type": "echo",
        "@context": [
            "https://www.w3.org/ns/activitystreams",
            "https://sockethub.org/ns/context/v1.jsonld",
            "https://sockethub.org/ns/context/platform/dummy/v1.jsonld"
        ],
        "actor": { "id": "bench", "type": "person" },
        "object": { "type": "message", "content": content }
    })
}

/// Checks an ack: a JSON object without `error` whose `object.content` echoes
/// what was sent.
fn verify(args: &[Value], sent: &str) -> Result<(), String> {
    let Some(reply) = args.first() else {
        return Err("empty ack".into());
    };
    let Some(object) = reply.as_object() else {
        return Err(format!("ack is not an object: {reply}"));
    };
    if let Some(error) = object.get("error") {
        return Err(format!("error reply: {error}"));
    }
    match reply.pointer("/object/content").and_then(Value::as_str) {
        Some(content) if content == sent => Ok(()),
        other => Err(format!("content mismatch: sent {sent:?}, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_replies() {
        let good = json!({"actor": {"id": "dummy"}, "object": {"content": "hello 1"}});
        assert_eq!(verify(std::slice::from_ref(&good), "hello 1"), Ok(()));
        assert!(verify(&[good], "hello 2").is_err());
        assert!(verify(&[json!({"error": "x", "object": {"content": "a"}})], "a").is_err());
        assert!(verify(&[json!("a")], "a").is_err());
        assert!(verify(&[], "a").is_err());
    }

    #[test]
    fn budget_stops_at_limit() {
        let budget = Budget {
            issued: AtomicU64::new(0),
            limit: 2,
        };
        assert_eq!(budget.claim(), Some(0));
        assert_eq!(budget.claim(), Some(1));
        assert_eq!(budget.claim(), None);
    }
}
