//! Native-chat load scenarios: direct messages between pairs of users and
//! room fan-out, driven over [`ChatConn`]s, with delivery latency taken from
//! wall-clock stamps carried in each message.
//!
//! Every message's `content` starts with its *scheduled* send time in Unix
//! microseconds, and its `clientMsgId` with the same stamp, so a receiver (or
//! the sender, on `message_sent`) computes latency from the schedule, not from
//! when the bench got round to writing: a stalled server cannot hide queueing
//! behind a stalled sender (coordinated omission). The content also carries the
//! instant the message was actually written, and the report gives the
//! generator's own lateness (write − schedule) and the latency from the write,
//! so a generator that lags is visible rather than silently counted as server
//! latency (the report warns when it lags by more than [`LATE_BOUND`]).
//!
//! Senders run open loop (message k of a connection is due at
//! `start + phase + k / rate`, sent late but stamped on time if the loop falls
//! behind), woken by a [`Ticker`] on the runtime's own event loop (a `timerfd`:
//! tens of microseconds late, [`Timer::Precise`], the default) or by Tokio's
//! millisecond timer (up to about two milliseconds late, [`Timer::Tokio`]); the
//! report shows that lateness either way, except in the throughput
//! scenario, which keeps a window of messages in flight per sender (credit
//! returned by `message_sent`): an open loop above capacity measures queue
//! growth, not throughput.
//!
//! Messages stamped before the warm-up ends are delivered but not counted.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use serde_json::{Map, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until};

use crate::chat_conn::{ChatConn, Endpoint, Event};
use crate::chat_setup::{RoomApi, Setup, User};
use crate::report::{ChatReport, IdleReport};
use crate::rss;
use crate::ticker::Ticker;

/// Connections opened concurrently.
const CONNECT_BATCH: usize = 100;
/// Messages one sender writes per wake-up before reading again.
const MAX_BURST: u64 = 256;
/// Latency histogram upper bound, in microseconds (10 minutes).
const MAX_LATENCY_US: u64 = 600_000_000;
/// Delay between connecting everyone and the first scheduled message.
const START_DELAY: Duration = Duration::from_millis(200);
/// How often the coordinator checks whether everything arrived.
const POLL: Duration = Duration::from_millis(10);
/// Time the server gets to settle before RSS is sampled.
const SETTLE: Duration = Duration::from_secs(1);
/// A run whose generator writes more than 1 % of its messages later than this after
/// their scheduled instant is flagged: its latencies include the generator's own lag.
const LATE_BOUND: Duration = Duration::from_millis(1);

/// What to run.
#[derive(Clone, Copy, Debug)]
pub enum Scenario {
    /// `pairs` pairs of users messaging each other, `window` in flight each.
    Throughput { pairs: usize, window: u64 },
    /// `connections` users (in pairs), each sending `rate` messages/s.
    Rate { connections: usize, rate: f64 },
    /// One publisher sending `rate` messages/s to a room of `subscribers`, of which
    /// `on_publisher_node` use the publisher's server and the rest the subscribers' one.
    Fanout {
        subscribers: usize,
        on_publisher_node: usize,
        rate: f64,
    },
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Throughput { .. } => "throughput",
            Scenario::Rate { .. } => "rate",
            Scenario::Fanout { .. } => "fanout",
        }
    }
}

/// Where and how: servers, setup calls and timing of one run.
pub struct ChatParams {
    /// The server everyone uses (the publisher's, in fan-out).
    pub endpoint: Endpoint,
    /// The fan-out subscribers' server (another node), if not `endpoint`.
    pub sub_endpoint: Option<Endpoint>,
    pub rooms: RoomApi,
    pub warmup: Duration,
    pub duration: Duration,
    /// How long to wait for outstanding deliveries after the last send.
    pub drain: Duration,
    /// Total message budget (all senders), on top of the time bound.
    pub messages: u64,
    /// Padding added to each message's content.
    pub content_bytes: usize,
    /// What wakes the open-loop senders.
    pub timer: Timer,
    /// Where to write one line per measured delivery (see [`write_trace`]), if anywhere.
    pub trace: Option<PathBuf>,
}

/// What wakes an open-loop sender at its scheduled instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Timer {
    /// The bench's [`Ticker`], a `timerfd` in the runtime's event loop (tens of
    /// microseconds late): the default.
    Precise,
    /// `tokio::time::sleep_until` (up to about 2 ms late), whose wake-ups are
    /// batched per millisecond tick.
    Tokio,
}

/// Wall-clock microseconds, derived from one reading and a monotonic clock
/// so that stamps and receive times in this process never go backwards.
struct Clock {
    base: Instant,
    base_unix_us: u64,
}

impl Clock {
    fn new() -> Self {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            base: Instant::now(),
            base_unix_us: micros(unix),
        }
    }

    fn unix_us(&self, at: Instant) -> u64 {
        self.base_unix_us + micros(at.saturating_duration_since(self.base))
    }
}

pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Counters and histograms shared by all connection tasks.
struct Shared {
    clock: Clock,
    /// Stamps below this are warm-up.
    measure_from_us: u64,
    expected: AtomicU64,
    sent: AtomicU64,
    senders_left: AtomicUsize,
    stats: Mutex<Stats>,
    /// `None` with [`Timer::Tokio`].
    ticker: Option<Ticker>,
}

struct Stats {
    /// From the scheduled instant to receipt (the reported latency).
    delivery: Histogram<u64>,
    /// From the actual write to receipt.
    from_write: Histogram<u64>,
    /// Actual write − scheduled instant, per measured message.
    late: Histogram<u64>,
    ack: Histogram<u64>,
    delivered: u64,
    last_delivery: Option<Instant>,
    errors: u64,
    first_error: Option<String>,
    /// `[scheduled, latency, from the write]` µs per measured delivery, when tracing.
    trace: Option<Vec<[u64; 3]>>,
}

impl Shared {
    fn new(clock: Clock, measure_from_us: u64, senders: usize, timer: Timer) -> Result<Self> {
        Ok(Self {
            clock,
            measure_from_us,
            expected: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            senders_left: AtomicUsize::new(senders),
            stats: Mutex::new(Stats {
                delivery: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
                from_write: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
                late: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
                ack: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
                delivered: 0,
                last_delivery: None,
                errors: 0,
                first_error: None,
                trace: None,
            }),
            ticker: match timer {
                Timer::Precise => Some(Ticker::start().context("starting the ticker")?),
                Timer::Tokio => None,
            },
        })
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        // A panicking task cannot leave the counters half-updated in a way
        // that matters for a report: keep going with the data.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&self, reason: String) {
        let mut stats = self.stats();
        stats.errors += 1;
        stats.first_error.get_or_insert(reason);
    }
}

/// One sender's schedule and progress.
struct Sender {
    to: SendTo,
    pace: Pace,
    /// This connection's number, carried in content to spot self-echoes.
    index: usize,
    next_seq: u64,
    limit: u64,
    start: Instant,
    deadline: Instant,
    done: bool,
}

enum Pace {
    /// Open loop: one message every `interval`, offset by `phase`.
    Open { interval: Duration, phase: Duration },
    /// Closed loop: at most `size` messages without a `message_sent`.
    Window { size: u64, in_flight: u64 },
}

impl Sender {
    /// When the next message is due, or `None` when nothing can be sent now.
    /// Marks the sender done once its count or time is up.
    fn next_due(&mut self, now: Instant, shared: &Shared) -> Option<Instant> {
        if self.done {
            return None;
        }
        let due = match self.pace {
            Pace::Open { interval, phase } => {
                let seq = u32::try_from(self.next_seq).unwrap_or(u32::MAX);
                self.start + phase + interval.saturating_mul(seq)
            }
            Pace::Window { size, in_flight } => {
                if in_flight >= size && now < self.deadline {
                    return None;
                }
                now.max(self.start)
            }
        };
        if self.next_seq >= self.limit || due >= self.deadline {
            self.done = true;
            shared.senders_left.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(due)
    }
}

/// One connection to open: as whom, where, and whom it sends to.
struct Plan {
    endpoint: Endpoint,
    user: User,
    to: Option<SendTo>,
}

/// A sender's addressee.
struct SendTo {
    /// `receiverId` or `roomId`.
    field: &'static str,
    id: Value,
    /// Deliveries one message should produce.
    fanout: u64,
}

/// Each user sends to its partner: 0 ↔ 1, 2 ↔ 3, …
fn pair_plans(endpoint: &Endpoint, users: &[User]) -> Vec<Plan> {
    users
        .iter()
        .enumerate()
        .map(|(i, user)| Plan {
            endpoint: endpoint.clone(),
            user: user.clone(),
            to: Some(SendTo {
                field: "receiverId",
                id: users[i ^ 1].id.clone(),
                fanout: 1,
            }),
        })
        .collect()
}

/// Registers the users (and the room) a scenario needs.
async fn plan(scenario: Scenario, params: &ChatParams, setup: &Setup) -> Result<Vec<Plan>> {
    let base = &params.endpoint.base;
    Ok(match scenario {
        Scenario::Throughput { pairs, .. } => {
            let users = setup.register_users(base, "u", pairs * 2).await?;
            pair_plans(&params.endpoint, &users)
        }
        Scenario::Rate { connections, .. } => {
            let users = setup.register_users(base, "u", even(connections)).await?;
            pair_plans(&params.endpoint, &users)
        }
        Scenario::Fanout {
            subscribers,
            on_publisher_node,
            ..
        } => {
            let sub_endpoint = params.sub_endpoint.as_ref().unwrap_or(&params.endpoint);
            let publisher = setup.register_users(base, "pub", 1).await?.remove(0);
            let local = setup
                .register_users(base, "lsub", on_publisher_node)
                .await?;
            let remote = setup
                .register_users(&sub_endpoint.base, "sub", subscribers - on_publisher_node)
                .await?;
            let room = setup
                .create_room(&params.rooms, base, &publisher, "fanout")
                .await?;
            setup.join_room(&params.rooms, base, &room, &local).await?;
            setup
                .join_room(&params.rooms, &sub_endpoint.base, &room, &remote)
                .await?;
            let subs = local
                .into_iter()
                .map(|user| (params.endpoint.clone(), user))
                .chain(remote.into_iter().map(|user| (sub_endpoint.clone(), user)));
            let mut plans = vec![Plan {
                endpoint: params.endpoint.clone(),
                user: publisher,
                to: Some(SendTo {
                    field: "roomId",
                    id: room,
                    fanout: subscribers as u64,
                }),
            }];
            plans.extend(subs.map(|(endpoint, user)| Plan {
                endpoint,
                user,
                to: None,
            }));
            plans
        }
    })
}

/// Connections of the rate scenario: paired, so even, at least 2.
fn even(connections: usize) -> usize {
    connections.max(2) & !1
}

/// How sender `i` of `n` paces itself. Open-loop senders' phases are spread
/// over one interval so they do not all fire on the same tick.
fn pace(scenario: Scenario, i: usize, n: usize) -> Pace {
    match scenario {
        Scenario::Throughput { window, .. } => Pace::Window {
            size: window.max(1),
            in_flight: 0,
        },
        Scenario::Rate { rate, .. } | Scenario::Fanout { rate, .. } => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            Pace::Open {
                interval,
                phase: interval.mul_f64(i as f64 / n.max(1) as f64),
            }
        }
    }
}

/// Runs one load scenario: setup, connect, send, drain, report.
pub async fn run(scenario: Scenario, params: &ChatParams) -> Result<ChatReport> {
    if let Scenario::Rate { rate, .. } | Scenario::Fanout { rate, .. } = scenario
        && !(rate.is_finite() && rate >= 0.01)
    {
        bail!("--rate must be at least 0.01 messages/s");
    }
    // Created before the run: a path that cannot be written fails now, not after the run
    // has been measured.
    let trace_file = match &params.trace {
        Some(path) => Some(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create the trace file {}", path.display()))?,
        ),
        None => None,
    };
    let setup = Setup::new()?;
    let plans = plan(scenario, params, &setup).await?;
    let senders = plans.iter().filter(|p| p.to.is_some()).count();

    let targets: Vec<(Endpoint, String)> = plans
        .iter()
        .map(|p| (p.endpoint.clone(), p.user.token.clone()))
        .collect();
    let conns = connect_all(&targets).await;
    let mut open = Vec::with_capacity(conns.len());
    for (i, conn) in conns.into_iter().enumerate() {
        open.push(conn.with_context(|| format!("connection {i} of {}", plans.len()))?);
    }

    let clock = Clock::new();
    let start = Instant::now() + START_DELAY;
    let measure_from = start + params.warmup;
    let deadline = measure_from + params.duration;
    let measure_from_us = clock.unix_us(measure_from);
    let shared = Arc::new(Shared::new(clock, measure_from_us, senders, params.timer)?);
    if trace_file.is_some() {
        // A million deliveries (24 MB) up front, more than a 10 s rate or fan-out run
        // receives: a Vec doubling mid-run would copy megabytes on the bench's only thread,
        // a stall inside the very latencies being traced.
        shared.stats().trace = Some(Vec::with_capacity(1 << 20));
    }
    let limit = params.messages / senders.max(1) as u64;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut sender_no = 0;
    for (index, (conn, plan)) in open.into_iter().zip(plans).enumerate() {
        let sender = plan.to.map(|to| {
            let pace = pace(scenario, sender_no, senders);
            sender_no += 1;
            Sender {
                to,
                pace,
                index,
                next_seq: 0,
                limit,
                start,
                deadline,
                done: false,
            }
        });
        tasks.spawn(drive(
            conn,
            sender,
            Arc::clone(&shared),
            stop_rx.clone(),
            params.content_bytes,
        ));
    }

    // Wait for the senders, then for the deliveries (or the drain bound).
    let hard_stop = deadline + params.drain + Duration::from_secs(5);
    let mut senders_done_at = None;
    loop {
        sleep(POLL).await;
        let now = Instant::now();
        if shared.senders_left.load(Ordering::Relaxed) == 0 {
            let done_at = *senders_done_at.get_or_insert(now);
            let delivered = shared.stats().delivered;
            if delivered >= shared.expected.load(Ordering::Relaxed) || now >= done_at + params.drain
            {
                break;
            }
        }
        if now >= hard_stop {
            shared.error("senders did not finish in time".into());
            break;
        }
    }
    let _ = stop.send(true);
    let mut closing = JoinSet::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(conn)) = joined {
            closing.spawn(conn.close());
        }
    }
    while closing.join_next().await.is_some() {}

    let expected = shared.expected.load(Ordering::Relaxed);
    let sent = shared.sent.load(Ordering::Relaxed);
    let stats = shared.stats();
    let elapsed = stats.last_delivery.map_or(Duration::ZERO, |last| {
        last.saturating_duration_since(measure_from)
    });
    let elapsed_s = elapsed.as_secs_f64();
    if let (Some(file), Some(path), Some(trace)) = (trace_file, &params.trace, &stats.trace) {
        write_trace(file, trace).with_context(|| format!("writing {}", path.display()))?;
    }
    let q = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    let offered = match scenario {
        Scenario::Throughput { .. } => None,
        Scenario::Rate { connections, rate } => Some(rate * even(connections) as f64),
        Scenario::Fanout {
            subscribers, rate, ..
        } => Some(rate * subscribers as f64),
    };
    Ok(ChatReport {
        mode: "chat",
        scenario: scenario.name(),
        proto: format!("{:?}", params.endpoint.proto).to_lowercase(),
        connections: targets.len(),
        senders,
        offered_per_s: offered,
        sent,
        expected,
        delivered: stats.delivered,
        delivered_pct: if expected > 0 {
            stats.delivered as f64 * 100.0 / expected as f64
        } else {
            0.0
        },
        elapsed_s,
        delivered_per_s: if elapsed_s > 0.0 {
            stats.delivered as f64 / elapsed_s
        } else {
            0.0
        },
        p50_us: q(&stats.delivery, 0.5),
        p90_us: q(&stats.delivery, 0.9),
        p99_us: q(&stats.delivery, 0.99),
        p999_us: q(&stats.delivery, 0.999),
        max_us: stats.delivery.max(),
        ack_p50_us: q(&stats.ack, 0.5),
        ack_p99_us: q(&stats.ack, 0.99),
        from_write_p50_us: q(&stats.from_write, 0.5),
        from_write_p99_us: q(&stats.from_write, 0.99),
        late_p50_us: q(&stats.late, 0.5),
        late_p99_us: q(&stats.late, 0.99),
        late_max_us: stats.late.max(),
        generator_lagged: lagged(&stats.late),
        errors: stats.errors,
        first_error: stats.first_error.clone(),
    })
}

/// Whether more than 1 % of the measured messages were written later than
/// [`LATE_BOUND`] after their scheduled instant.
fn lagged(late: &Histogram<u64>) -> bool {
    let bound = micros(LATE_BOUND);
    let over = late.len() - late.count_between(0, bound);
    over * 100 > late.len()
}

/// Connects everyone, `CONNECT_BATCH` at a time; one result per target, in order.
async fn connect_all(targets: &[(Endpoint, String)]) -> Vec<Result<ChatConn>> {
    let mut out: Vec<Option<Result<ChatConn>>> = (0..targets.len()).map(|_| None).collect();
    for (batch_no, batch) in targets.chunks(CONNECT_BATCH).enumerate() {
        let mut pending = JoinSet::new();
        for (i, (endpoint, token)) in batch.iter().enumerate() {
            let (endpoint, token) = (endpoint.clone(), token.clone());
            let index = batch_no * CONNECT_BATCH + i;
            pending.spawn(async move { (index, ChatConn::connect(&endpoint, &token).await) });
        }
        while let Some(joined) = pending.join_next().await {
            // A task that panicked leaves its slot empty: reported below.
            if let Ok((index, result)) = joined {
                out[index] = Some(result);
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow!("connect task panicked"))))
        .collect()
}

/// Drives one connection until told to stop: sends on its schedule, reads
/// and accounts for everything that arrives. Returns the connection if it is
/// still usable.
async fn drive(
    mut conn: ChatConn,
    mut sender: Option<Sender>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    content_bytes: usize,
) -> Option<ChatConn> {
    let padding = "x".repeat(content_bytes);
    let own_index = sender.as_ref().map(|s| s.index);
    // The deadline registered with the ticker (see `Ticker::until`).
    let mut armed = None;
    loop {
        let now = Instant::now();
        let due = sender.as_mut().and_then(|s| s.next_due(now, &shared));
        tokio::select! {
            _ = stop.changed() => return Some(conn),
            frame = conn.next_frame() => {
                let event = match frame {
                    None => Ok(Event::Closed),
                    Some(Ok(frame)) => conn.decode(frame).await,
                    Some(Err(e)) => Err(e),
                };
                match event {
                    Ok(Event::Closed) => {
                        shared.error("the server closed a connection".into());
                        return None;
                    }
                    Ok(event) => on_event(event, &shared, sender.as_mut(), own_index),
                    Err(e) => {
                        shared.error(format!("{e:#}"));
                        return None;
                    }
                }
            }
            () = wait(&shared, due.unwrap_or(now), &mut armed), if due.is_some() => {
                if let Some(sender) = sender.as_mut()
                    && let Err(e) = send_due(&mut conn, sender, &shared, &padding).await
                {
                    shared.error(format!("{e:#}"));
                    return None;
                }
            }
        }
    }
}

/// Waits for `at` with the run's timer.
async fn wait(shared: &Shared, at: Instant, armed: &mut Option<Instant>) {
    match &shared.ticker {
        Some(ticker) => ticker.until(at, armed).await,
        None => sleep_until(at.into()).await,
    }
}

/// Writes every message that is due now (up to `MAX_BURST`), then flushes.
async fn send_due(
    conn: &mut ChatConn,
    sender: &mut Sender,
    shared: &Shared,
    padding: &str,
) -> Result<()> {
    let mut burst = 0;
    let now = Instant::now();
    let written_us = shared.clock.unix_us(now);
    let mut late = Vec::new();
    while burst < MAX_BURST {
        let Some(due) = sender.next_due(now, shared) else {
            break;
        };
        if due > now {
            break;
        }
        let stamp = shared.clock.unix_us(due);
        let seq = sender.next_seq;
        let mut data = Map::with_capacity(3);
        data.insert(sender.to.field.into(), sender.to.id.clone());
        data.insert(
            "content".into(),
            format!("{stamp} {}:{seq} {written_us} {padding}", sender.index).into(),
        );
        data.insert(
            "clientMsgId".into(),
            format!("{stamp}-{}-{seq}", sender.index).into(),
        );
        conn.feed_chat(&Value::Object(data)).await?;
        sender.next_seq += 1;
        if let Pace::Window { in_flight, .. } = &mut sender.pace {
            *in_flight += 1;
        }
        shared.sent.fetch_add(1, Ordering::Relaxed);
        if stamp >= shared.measure_from_us {
            shared
                .expected
                .fetch_add(sender.to.fanout, Ordering::Relaxed);
            late.push(written_us.saturating_sub(stamp));
        }
        burst += 1;
    }
    if !late.is_empty() {
        let mut stats = shared.stats();
        for l in late {
            stats.late.saturating_record(l.max(1));
        }
    }
    conn.flush().await
}

/// The trace file: a header, then `scheduled_us latency_us from_write_us` per measured
/// delivery in the order received (scheduled instants are wall-clock µs since the Unix
/// epoch). A histogram says how slow the tail is; the trace says *when* it was slow, e.g.
/// whether slow deliveries cluster at a period of the server's (BENCHMARKS.md, session 9).
fn write_trace(file: std::fs::File, trace: &[[u64; 3]]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "# scheduled_us latency_us from_write_us")?;
    for [scheduled, latency, from_write] in trace {
        writeln!(out, "{scheduled} {latency} {from_write}")?;
    }
    out.flush()
}

/// Accounts for one incoming event.
fn on_event(event: Event, shared: &Shared, sender: Option<&mut Sender>, own_index: Option<usize>) {
    let now = Instant::now();
    let now_us = shared.clock.unix_us(now);
    match event {
        Event::NewMessage(data) => {
            let Some(Stamped {
                stamp,
                from,
                written,
            }) = data.content.as_deref().and_then(parse_content)
            else {
                shared.error(format!(
                    "new_message without a bench stamp: {:?}",
                    data.content
                ));
                return;
            };
            // The sender's own copy (other devices of the same user) is not a delivery.
            if Some(from) == own_index || stamp < shared.measure_from_us {
                return;
            }
            let mut stats = shared.stats();
            let latency = now_us.saturating_sub(stamp);
            let from_write = now_us.saturating_sub(written);
            stats.delivery.saturating_record(latency.max(1));
            stats.from_write.saturating_record(from_write.max(1));
            stats.delivered += 1;
            stats.last_delivery = Some(now);
            if let Some(trace) = &mut stats.trace {
                trace.push([stamp, latency, from_write]);
            }
        }
        Event::MessageSent(data) => {
            if let Some(sender) = sender
                && let Pace::Window { in_flight, .. } = &mut sender.pace
            {
                *in_flight = in_flight.saturating_sub(1);
            }
            let stamp = data
                .client_msg_id
                .as_deref()
                .and_then(|id| id.split('-').next())
                .and_then(|s| s.parse::<u64>().ok());
            match stamp {
                Some(stamp) if stamp >= shared.measure_from_us => {
                    shared
                        .stats()
                        .ack
                        .saturating_record(now_us.saturating_sub(stamp).max(1));
                }
                Some(_) => {}
                None => shared.error(format!(
                    "message_sent without the bench clientMsgId: {:?}",
                    data.client_msg_id
                )),
            }
        }
        Event::Error(message) => shared.error(format!("server error: {message}")),
        Event::ReadMarked(_) | Event::Other | Event::Closed => {}
    }
}

/// What a bench message's content carries.
#[derive(Debug, PartialEq)]
struct Stamped {
    /// Scheduled send instant, Unix µs.
    stamp: u64,
    /// Sender's connection index.
    from: usize,
    /// Instant the message was written, Unix µs.
    written: u64,
}

/// From `"<stamp> <index>:<seq> <written> <padding>"`.
fn parse_content(content: &str) -> Option<Stamped> {
    let mut parts = content.split(' ');
    let stamp = parts.next()?.parse().ok()?;
    let from = parts.next()?.split_once(':')?.0.parse().ok()?;
    let written = parts.next()?.parse().ok()?;
    Some(Stamped {
        stamp,
        from,
        written,
    })
}

/// Idle memory: registers `connections` users, then measures the server's
/// RSS as they open authenticated connections, in two halves. The reported
/// cost per connection is the growth over the second half: registration
/// (password hashing) leaves memory in the server's allocator that the first
/// connections reuse, which would otherwise hide in the baseline. After each
/// half the RSS is sampled until it settles ([`rss::settled_kb`]), so the
/// figure is what idle connections hold, not the handshakes' leftovers.
pub async fn idle(
    params: &ChatParams,
    connections: usize,
    hold: Duration,
    pid: u32,
    fd_limit: Option<u64>,
) -> Result<IdleReport> {
    let setup = Setup::new()?;
    let users = setup
        .register_users(&params.endpoint.base, "idle", connections)
        .await?;
    sleep(SETTLE).await;
    let rss_before_kb = rss::rss_kb(pid)?;
    let targets: Vec<(Endpoint, String)> = users
        .iter()
        .map(|u| (params.endpoint.clone(), u.token.clone()))
        .collect();
    // Connections keep being read (pings answered) while held.
    let shared = Arc::new(Shared::new(Clock::new(), 0, 0, params.timer)?);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut failed = 0;
    let mut first_error = None;
    // The server's settled RSS after each half; the figure is the growth between them.
    let mut settled = Vec::with_capacity(2);
    let mut opened_at = Instant::now();
    let mut second_half = 0;
    let (first, second) = targets.split_at(connections / 2);
    for (half, targets) in [first, second].into_iter().enumerate() {
        for conn in connect_all(targets).await {
            match conn {
                Ok(conn) => {
                    second_half += half;
                    tasks.spawn(drive(conn, None, Arc::clone(&shared), stop_rx.clone(), 0));
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(format!("{e:#}"));
                }
            }
        }
        opened_at = Instant::now();
        settled.push(rss::settled_kb(pid).await?);
    }
    let (half, after) = (settled[0], settled[1]);
    let opened = tasks.len();
    sleep(hold.saturating_sub(opened_at.elapsed())).await;
    let rss_end_kb = rss::rss_kb(pid)?;
    let _ = stop.send(true);
    let mut dropped = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Some(conn)) => conn.close().await,
            _ => dropped += 1,
        }
    }
    let grown_bytes = after.kb.saturating_sub(half.kb) as f64 * 1024.0;
    Ok(IdleReport {
        mode: "chat-idle",
        requested: connections,
        connections: opened,
        failed,
        dropped,
        hold_s: hold.as_secs_f64(),
        rss_before_kb,
        rss_half_kb: Some(half.kb),
        rss_after_kb: after.kb,
        rss_end_kb,
        settle: Some([half, after]),
        bytes_per_conn: if second_half > 0 {
            grown_bytes / second_half as f64
        } else {
            0.0
        },
        fd_limit,
        note: first_error.or_else(|| shared.stats().first_error.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stamped_content() {
        assert_eq!(
            parse_content("1700000000000000 3:17 1700000000000450 xxxx"),
            Some(Stamped {
                stamp: 1_700_000_000_000_000,
                from: 3,
                written: 1_700_000_000_000_450
            })
        );
        assert_eq!(
            parse_content("1700 3:17 1800 "),
            Some(Stamped {
                stamp: 1700,
                from: 3,
                written: 1800
            })
        );
        assert_eq!(parse_content("1700 3:17 xxxx"), None);
        assert_eq!(parse_content("hello there"), None);
        assert_eq!(parse_content("12"), None);
    }

    fn shared() -> Shared {
        Shared::new(Clock::new(), 0, 1, Timer::Tokio).unwrap()
    }

    #[test]
    fn trace_has_one_line_per_measured_delivery() {
        let shared = Shared::new(Clock::new(), 1000, 1, Timer::Tokio).unwrap();
        shared.stats().trace = Some(Vec::new());
        let now = shared.clock.unix_us(Instant::now());
        let delivery = |stamp: u64, written: u64, from: usize| {
            Event::NewMessage(crate::chat_conn::EventData {
                content: Some(format!("{stamp} {from}:1 {written} xx")),
                client_msg_id: None,
                ..Default::default()
            })
        };
        on_event(delivery(now - 5000, now - 4000, 3), &shared, None, Some(0));
        // Warm-up (stamped before the measured phase) and the sender's own copy: not traced.
        on_event(delivery(999, 999, 3), &shared, None, Some(0));
        on_event(delivery(now, now, 0), &shared, None, Some(0));

        let path = std::env::temp_dir().join(format!("bench-trace-{}", std::process::id()));
        let trace = shared.stats().trace.take().unwrap();
        write_trace(std::fs::File::create(&path).unwrap(), &trace).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# scheduled_us latency_us from_write_us");
        assert_eq!(lines.len(), 2, "{text}");
        let fields: Vec<u64> = lines[1].split(' ').map(|f| f.parse().unwrap()).collect();
        assert_eq!(fields[0], now - 5000);
        // Received after it was scheduled and after it was written, 1 ms apart.
        assert!(fields[1] >= 5000 && fields[1] < 5_000_000, "{fields:?}");
        assert_eq!(fields[1] - fields[2], 1000);
    }

    fn sender(pace: Pace, limit: u64, deadline: Duration) -> (Sender, Instant) {
        let start = Instant::now();
        let sender = Sender {
            to: SendTo {
                field: "receiverId",
                id: Value::from(1),
                fanout: 1,
            },
            pace,
            index: 0,
            next_seq: 0,
            limit,
            start,
            deadline: start + deadline,
            done: false,
        };
        (sender, start)
    }

    #[test]
    fn open_loop_schedule_ignores_replies_and_stops_at_the_bounds() {
        let shared = shared();
        let interval = Duration::from_millis(100);
        let phase = Duration::from_millis(10);
        let (mut s, start) = sender(Pace::Open { interval, phase }, 3, Duration::from_secs(60));
        assert_eq!(s.next_due(start, &shared), Some(start + phase));
        s.next_seq = 2;
        // Due times follow the schedule even when the sender is late.
        assert_eq!(
            s.next_due(start + Duration::from_secs(5), &shared),
            Some(start + phase + interval * 2)
        );
        s.next_seq = 3;
        assert_eq!(s.next_due(start, &shared), None);
        assert!(s.done);
        assert_eq!(shared.senders_left.load(Ordering::Relaxed), 0);

        let shared = super::tests::shared();
        let (mut s, start) = sender(
            Pace::Open { interval, phase },
            1000,
            Duration::from_millis(250),
        );
        s.next_seq = 3; // due at 310 ms, past the 250 ms deadline
        assert_eq!(s.next_due(start, &shared), None);
        assert!(s.done);
    }

    #[test]
    fn window_waits_for_credit() {
        let shared = shared();
        let (mut s, start) = sender(
            Pace::Window {
                size: 2,
                in_flight: 2,
            },
            100,
            Duration::from_secs(60),
        );
        assert_eq!(s.next_due(start, &shared), None);
        assert!(!s.done);
        on_event(
            Event::MessageSent(crate::chat_conn::EventData {
                client_msg_id: Some("5-0-0".into()),
                ..Default::default()
            }),
            &shared,
            Some(&mut s),
            Some(0),
        );
        assert_eq!(s.next_due(start, &shared), Some(start));
    }

    #[test]
    fn counts_deliveries_but_not_self_echoes_or_warmup() {
        let mut shared = shared();
        shared.measure_from_us = 1000;
        let msg = |content: &str| {
            Event::NewMessage(crate::chat_conn::EventData {
                content: Some(content.into()),
                ..Default::default()
            })
        };
        on_event(msg("2000 1:0 2100 x"), &shared, None, Some(0));
        on_event(msg("2000 0:0 2100 x"), &shared, None, Some(0)); // own message
        on_event(msg("999 1:1 1000 x"), &shared, None, Some(0)); // warm-up
        on_event(msg("not stamped"), &shared, None, Some(0));
        let stats = shared.stats();
        assert_eq!(stats.delivered, 1);
        assert_eq!(stats.errors, 1);
    }
}
