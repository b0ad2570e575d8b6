//! IRC platform benchmark, against a running Switchboard and a local IRC server:
//! - memory: `logins` Socket.IO sessions each connect their own IRC login (one worker
//!   process per login); the RSS of the server's worker children, divided by the logins;
//! - latency: a raw IRC client sends PRIVMSGs, one at a time, to a channel the first login
//!   joined; the time from writing the line to the Socket.IO `message` push arriving.
//!   The same loop to a second raw IRC client (the IRC server's own relay time) is
//!   measured in the same run as the baseline.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::timeout;

use crate::report::Human;
use crate::rss;
use crate::sio::{Client, Incoming, Target};

const CONTEXT: [&str; 3] = [
    "https://www.w3.org/ns/activitystreams",
    "https://sockethub.org/ns/context/v1.jsonld",
    "https://sockethub.org/ns/context/platform/irc/v1.jsonld",
];
const CHANNEL: &str = "#bench";
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

pub struct IrcParams {
    pub logins: usize,
    pub messages: usize,
    pub warmup: usize,
    pub irc_port: u16,
    /// The Switchboard server process (its children are the workers).
    pub pid: u32,
}

#[derive(Debug, Serialize)]
pub struct IrcReport {
    pub mode: &'static str,
    pub logins: usize,
    pub workers: usize,
    pub server_rss_kb: u64,
    pub workers_rss_kb: u64,
    pub rss_per_login_kb: u64,
    /// Proportional set size per login: shared pages (binary text) split among workers.
    pub pss_per_login_kb: u64,
    pub worker_rss_max_kb: u64,
    pub messages: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub baseline_p50_us: u64,
    pub baseline_p99_us: u64,
}

impl Human for IrcReport {
    fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "logins      {} ({} worker processes)",
                self.logins, self.workers
            ),
            format!(
                "rss         server {} kB, workers {} kB: {} kB per login (max worker {} kB)",
                self.server_rss_kb,
                self.workers_rss_kb,
                self.rss_per_login_kb,
                self.worker_rss_max_kb
            ),
            format!(
                "pss         {} kB per login (shared pages divided among the workers)",
                self.pss_per_login_kb
            ),
            format!(
                "irc -> push {} messages: p50 {} us  p99 {} us  max {} us",
                self.messages, self.p50_us, self.p99_us, self.max_us
            ),
            format!(
                "irc -> irc  baseline: p50 {} us  p99 {} us",
                self.baseline_p50_us, self.baseline_p99_us
            ),
        ]
    }
}

/// A raw IRC client.
struct Raw {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Raw {
    async fn connect(port: u16, nick: &str) -> Result<Self> {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to the IRC server on port {port}"))?;
        tcp.set_nodelay(true)?;
        let (r, w) = tcp.into_split();
        let mut raw = Raw {
            reader: BufReader::new(r),
            writer: w,
        };
        raw.send(&format!("NICK {nick}\r\nUSER {nick} 0 * :bench"))
            .await?;
        raw.until(|l| l.contains(" 001 ")).await?;
        Ok(raw)
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await?;
        Ok(())
    }

    async fn until(&mut self, pred: impl Fn(&str) -> bool) -> Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = timeout(STEP_TIMEOUT, self.reader.read_line(&mut line))
                .await
                .map_err(|_| anyhow!("IRC server silent"))??;
            if n == 0 {
                bail!("IRC server closed the connection");
            }
            if let Some(token) = line.strip_prefix("PING ") {
                let pong = format!("PONG {}", token.trim_end());
                self.send(&pong).await?;
            }
            if pred(&line) {
                return Ok(line);
            }
        }
    }

    async fn join(&mut self, channel: &str) -> Result<()> {
        self.send(&format!("JOIN {channel}")).await?;
        self.until(|l| l.contains(" 366 ")).await?;
        Ok(())
    }
}

/// Emit and wait for the ack (events meanwhile are skipped); an `error` is a failure.
async fn request(client: &mut Client, event: &str, data: Value) -> Result<Value> {
    let id = client.emit_with_ack(event, &data).await?;
    loop {
        match timeout(STEP_TIMEOUT, client.next()).await {
            Err(_) => bail!("no ack for {event} within {STEP_TIMEOUT:?}"),
            Ok(Ok(Some(Incoming::Ack { id: got, args }))) if got == id => {
                let reply = args.into_iter().next().unwrap_or(Value::Null);
                if let Some(e) = reply.get("error") {
                    bail!("{event} failed: {e}");
                }
                return Ok(reply);
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => bail!("server closed the connection"),
            Ok(Err(e)) => return Err(e),
        }
    }
}

fn activity(nick: &str, verb: &str) -> Value {
    json!({"@context": CONTEXT, "type": verb, "actor": {"id": format!("{nick}@127.0.0.1"), "type": "person"}})
}

async fn login(target: &Target, nick: &str, port: u16) -> Result<Client> {
    let mut client = Client::connect(target, None).await?;
    let mut creds = activity(nick, "credentials");
    creds["object"] = json!({"type": "credentials", "nick": nick, "server": "127.0.0.1", "port": port, "secure": false});
    request(&mut client, "credentials", creds).await?;
    request(&mut client, "message", activity(nick, "connect")).await?;
    Ok(client)
}

fn percentile(h: &Histogram<u64>, q: f64) -> u64 {
    h.value_at_quantile(q)
}

pub async fn run(target: &Target, p: &IrcParams) -> Result<IrcReport> {
    if p.logins == 0 || p.messages == 0 {
        bail!("--logins and --messages must be at least 1");
    }
    let mut clients = Vec::with_capacity(p.logins);
    for i in 0..p.logins {
        clients.push(login(target, &format!("bench{i}"), p.irc_port).await?);
    }
    let mut join = activity("bench0", "join");
    join["target"] = json!({"id": format!("{CHANNEL}@127.0.0.1"), "type": "room", "name": CHANNEL});
    request(&mut clients[0], "message", join).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let procs = rss::with_children(p.pid)?;
    let server_rss_kb = procs.first().map_or(0, |s| s.rss_kb);
    let workers = &procs[1.min(procs.len())..];
    let workers_rss_kb: u64 = workers.iter().map(|w| w.rss_kb).sum();
    let worker_rss_max_kb = workers.iter().map(|w| w.rss_kb).max().unwrap_or(0);
    let workers_pss_kb: u64 = workers.iter().filter_map(|w| rss::pss_kb(w.pid).ok()).sum();

    let mut source = Raw::connect(p.irc_port, "bsource").await?;
    source.join(CHANNEL).await?;
    // Through Switchboard: IRC line -> worker -> gateway -> Socket.IO push.
    let mut through = Histogram::<u64>::new(3)?;
    for seq in 0..p.warmup + p.messages {
        let text = format!("m{seq}");
        let started = Instant::now();
        source.send(&format!("PRIVMSG {CHANNEL} :{text}")).await?;
        loop {
            match timeout(STEP_TIMEOUT, clients[0].next()).await {
                Err(_) => bail!("no push for message {seq}"),
                Ok(Ok(Some(Incoming::Event { args })))
                    if args.get(1).and_then(|a| a.pointer("/object/content"))
                        == Some(&Value::String(text.clone())) =>
                {
                    break;
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => bail!("server closed the connection"),
                Ok(Err(e)) => return Err(e),
            }
        }
        if seq >= p.warmup {
            through.saturating_record(started.elapsed().as_micros() as u64);
        }
    }

    // Baseline: the same loop to a raw IRC client. (It joins only now: unread during the
    // first loop, its send queue would fill up on the server.)
    let mut sink = Raw::connect(p.irc_port, "bsink").await?;
    sink.join(CHANNEL).await?;
    let mut baseline = Histogram::<u64>::new(3)?;
    for seq in 0..p.warmup + p.messages {
        let text = format!(":b{seq}\r\n");
        let started = Instant::now();
        source.send(&format!("PRIVMSG {CHANNEL} :b{seq}")).await?;
        sink.until(|l| l.ends_with(&text)).await?;
        if seq >= p.warmup {
            baseline.saturating_record(started.elapsed().as_micros() as u64);
        }
    }

    for c in clients {
        c.close().await;
    }
    Ok(IrcReport {
        mode: "irc",
        logins: p.logins,
        workers: workers.len(),
        server_rss_kb,
        workers_rss_kb,
        rss_per_login_kb: workers_rss_kb / p.logins as u64,
        pss_per_login_kb: workers_pss_kb / p.logins as u64,
        worker_rss_max_kb,
        messages: p.messages,
        p50_us: percentile(&through, 0.5),
        p99_us: percentile(&through, 0.99),
        max_us: through.max(),
        baseline_p50_us: percentile(&baseline, 0.5),
        baseline_p99_us: percentile(&baseline, 0.99),
    })
}
