//! Result records of each mode and how they are printed: aligned
//! human-readable lines by default, one JSON object with `--json`.

use serde::Serialize;

use crate::rss::{ProcRss, Settled};

/// Outcome of an echo run (latencies in microseconds).
#[derive(Debug, Serialize)]
pub struct EchoReport {
    pub mode: &'static str,
    pub concurrency: usize,
    pub connections: usize,
    /// Verified round trips in the measured phase.
    pub ok: u64,
    /// Failed requests in any phase: error replies, mismatches, unanswered.
    pub errors: u64,
    /// The part of `errors` that got no ack at all.
    pub unanswered: u64,
    pub elapsed_s: f64,
    pub rps: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Outcome of an idle-connections run (RSS in KiB).
#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub mode: &'static str,
    pub requested: usize,
    pub connections: usize,
    pub failed: usize,
    /// Connections the server closed while they were held.
    pub dropped: u64,
    pub hold_s: f64,
    pub rss_before_kb: u64,
    /// Chat idle only: sampled after the first half of the connections
    /// opened; `bytes_per_conn` is then the growth over the second half.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_half_kb: Option<u64>,
    /// Sampled about a second after the last connection opened (chat idle: once settled).
    pub rss_after_kb: u64,
    /// Sampled at the end of the hold.
    pub rss_end_kb: u64,
    /// `(rss_after - rss_before) / connections`, or over the second half
    /// only when `rss_half_kb` is set.
    pub bytes_per_conn: f64,
    /// Chat idle only: how the half and after samples settled (see `rss::settled_kb`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle: Option<[Settled; 2]>,
    pub fd_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Outcome of a native-chat load run (latencies in microseconds, from the
/// scheduled send time to receipt).
#[derive(Debug, Serialize)]
pub struct ChatReport {
    pub mode: &'static str,
    pub scenario: &'static str,
    pub proto: String,
    pub connections: usize,
    pub senders: usize,
    /// Deliveries per second the schedule asks for (open-loop scenarios).
    pub offered_per_s: Option<f64>,
    /// Messages written, warm-up included.
    pub sent: u64,
    /// Deliveries the measured messages should produce.
    pub expected: u64,
    /// Measured deliveries that arrived (`new_message` at a recipient).
    pub delivered: u64,
    pub delivered_pct: f64,
    /// From the end of the warm-up to the last delivery.
    pub elapsed_s: f64,
    pub delivered_per_s: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// `message_sent` latency seen by the sender.
    pub ack_p50_us: u64,
    pub ack_p99_us: u64,
    /// From the instant each message was actually written to its receipt: the latency
    /// without the generator's own lateness (which `p50_us`… include, as they must to
    /// charge a server that holds the sender up).
    pub from_write_p50_us: u64,
    pub from_write_p99_us: u64,
    /// The generator's lateness: actual write − scheduled instant, per message.
    pub late_p50_us: u64,
    pub late_p99_us: u64,
    pub late_max_us: u64,
    /// More than 1 % of messages were written over 1 ms late: the latencies include
    /// the generator's own lag (or the server held the senders up).
    pub generator_lagged: bool,
    /// Server `error` frames, broken connections, unparseable events.
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Outcome of a read-mark run (`chat read`; times in microseconds).
#[derive(Debug, Serialize)]
pub struct ReadReport {
    pub mode: &'static str,
    /// Messages in the conversation before the timed marks.
    pub history: u64,
    /// How long filling the history took.
    pub fill_s: f64,
    /// The mark that took the whole history at once.
    pub first_mark_us: u64,
    /// Timed marks of one message each, and their round trips.
    pub rounds: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// RSS of a process and its direct children (in KiB).
#[derive(Debug, Serialize)]
pub struct RssReport {
    pub mode: &'static str,
    pub processes: Vec<ProcRss>,
    pub total_kb: u64,
}

/// Prints a report as JSON or as human-readable lines.
pub fn print(report: &(impl Serialize + Human), json: bool) {
    if json {
        match serde_json::to_string(report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("error: cannot serialise report: {e}"),
        }
    } else {
        for line in report.lines() {
            println!("{line}");
        }
    }
}

/// Human-readable rendering of a report.
pub trait Human {
    fn lines(&self) -> Vec<String>;
}

impl Human for EchoReport {
    fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "mode        {} ({} connection(s) x {} in flight)",
                self.mode, self.connections, self.concurrency
            ),
            format!(
                "requests    {} ok, {} failed ({} unanswered)",
                self.ok, self.errors, self.unanswered
            ),
            format!("elapsed     {:.3} s", self.elapsed_s),
            format!("throughput  {:.0} round trips/s", self.rps),
            format!(
                "latency us  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
            ),
        ];
        if let Some(error) = &self.first_error {
            lines.push(format!("first error {error}"));
        }
        lines
    }
}

impl Human for ChatReport {
    fn lines(&self) -> Vec<String> {
        let offered = self.offered_per_s.map_or_else(
            || "saturating".to_owned(),
            |r| format!("{r:.0} deliveries/s offered"),
        );
        let mut lines = vec![
            format!(
                "mode        chat {} over {} ({} connections, {} sender(s), {offered})",
                self.scenario, self.proto, self.connections, self.senders
            ),
            format!(
                "delivered   {} of {} ({:.3} %), {} sent in all, {} error(s)",
                self.delivered, self.expected, self.delivered_pct, self.sent, self.errors
            ),
            format!(
                "throughput  {:.0} deliveries/s over {:.3} s",
                self.delivered_per_s, self.elapsed_s
            ),
            format!(
                "latency us  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us
            ),
            format!(
                "ack us      p50 {}  p99 {}",
                self.ack_p50_us, self.ack_p99_us
            ),
            format!(
                "from write  p50 {}  p99 {} us (latency from the actual write)",
                self.from_write_p50_us, self.from_write_p99_us
            ),
            format!(
                "sent late   p50 {}  p99 {}  max {} us (write - schedule)",
                self.late_p50_us, self.late_p99_us, self.late_max_us
            ),
        ];
        if self.generator_lagged {
            lines.push(
                "warning     over 1 % of messages were written > 1 ms late: latencies include the generator's lag"
                    .to_owned(),
            );
        }
        if let Some(error) = &self.first_error {
            lines.push(format!("first error {error}"));
        }
        lines
    }
}

impl Human for IdleReport {
    fn lines(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "connections {} open of {} ({} failed, {} dropped), held {:.1} s",
                self.connections, self.requested, self.failed, self.dropped, self.hold_s
            ),
            format!("rss before  {}", mib(self.rss_before_kb)),
            format!(
                "rss after   {} ({})",
                mib(self.rss_after_kb),
                if self.settle.is_some() {
                    "settled"
                } else {
                    "1 s after opening"
                }
            ),
            format!("rss end     {} (end of hold)", mib(self.rss_end_kb)),
            format!("per conn    {:.0} bytes", self.bytes_per_conn),
        ];
        if let Some(kb) = self.rss_half_kb {
            lines.insert(2, format!("rss half    {} (first half open)", mib(kb)));
        }
        if let Some(settle) = &self.settle {
            let how = |s: &Settled| {
                let state = if s.settled { "settled" } else { "still moving" };
                format!("{state} after {:.2} s", s.after_s)
            };
            lines.push(format!(
                "settle      half {}, after {}",
                how(&settle[0]),
                how(&settle[1])
            ));
        }
        if let Some(limit) = self.fd_limit {
            lines.push(format!("fd limit    {limit}"));
        }
        if let Some(note) = &self.note {
            lines.push(format!("note        {note}"));
        }
        lines
    }
}

impl Human for ReadReport {
    fn lines(&self) -> Vec<String> {
        vec![
            format!("mode        {}", self.mode),
            format!(
                "history     {} messages, filled in {:.1} s, marked read in one mark of {} us",
                self.history, self.fill_s, self.first_mark_us
            ),
            format!(
                "one unread  {} marks: p50 {}  p90 {}  p99 {}  max {} us",
                self.rounds, self.p50_us, self.p90_us, self.p99_us, self.max_us
            ),
        ]
    }
}

impl Human for RssReport {
    fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .processes
            .iter()
            .map(|p| format!("{:>8} {:<16} {}", p.pid, p.name, mib(p.rss_kb)))
            .collect();
        lines.push(format!("{:>8} {:<16} {}", "", "total", mib(self.total_kb)));
        lines
    }
}

fn mib(kb: u64) -> String {
    format!("{:.1} MiB ({kb} kB)", kb as f64 / 1024.0)
}
