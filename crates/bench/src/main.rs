//! `switchboard-bench`: a load generator for Socket.IO v4 servers that speak
//! the Sockethub request/ack pattern (Switchboard, Sockethub, or a plain
//! socket.io peer), and for native chat servers (Switchboard's `/ws`, or the
//! node `ws` and socket.io chat peers). This file is the command line; each
//! mode lives in its own module.

mod chat;
mod chat_conn;
mod chat_read;
mod chat_setup;
mod echo;
mod fdlimit;
mod idle;
mod irc;
mod report;
mod rss;
mod sio;
mod ticker;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::chat::{ChatParams, Scenario, Timer};
use crate::chat_conn::{Endpoint, Proto};
use crate::chat_setup::RoomApi;
use crate::report::RssReport;
use crate::sio::Target;

#[derive(Parser)]
#[command(name = "switchboard-bench", version, about)]
struct Cli {
    /// Tokio worker threads for the bench itself (1 = single-threaded runtime).
    #[arg(long, global = true, default_value_t = 1, env = "BENCH_THREADS")]
    threads: usize,
    /// Print one JSON object instead of human-readable lines.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Closed-loop round trips of Sockethub dummy `echo` activities with acks.
    Echo {
        #[command(flatten)]
        server: ServerArgs,
        /// Requests in flight per connection.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Connections, sharing the request budget.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Measured requests in total (stops early at --duration-secs).
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// Wall-time bound of the measured phase (stops early at --requests).
        #[arg(long, default_value_t = 20)]
        duration_secs: u64,
        /// Requests sent before measuring, excluded from the stats.
        #[arg(long, default_value_t = 500)]
        warmup: u64,
    },
    /// Opens idle connections and measures how much the server's RSS grows.
    Idle {
        #[command(flatten)]
        server: ServerArgs,
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// How long to hold the connections once open.
        #[arg(long, default_value_t = 5)]
        hold_secs: u64,
        /// Server process whose RSS is measured.
        #[arg(long)]
        pid: u32,
    },
    /// IRC platform: RSS per IRC login (one worker each) and IRC server -> client push
    /// latency, against a running Switchboard and a local IRC server.
    Irc {
        #[command(flatten)]
        server: ServerArgs,
        /// Port of the IRC server on 127.0.0.1 (plain text).
        #[arg(long)]
        irc_port: u16,
        /// IRC logins to open, each its own session and worker.
        #[arg(long, default_value_t = 20)]
        logins: usize,
        /// Measured messages (one at a time).
        #[arg(long, default_value_t = 2000)]
        messages: usize,
        /// Messages sent before measuring.
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// The Switchboard server process (its children are the workers).
        #[arg(long)]
        pid: u32,
    },
    /// Native chat load: direct messages, room fan-out, idle connections.
    Chat {
        #[command(subcommand)]
        scenario: ChatCommand,
    },
    /// Prints the RSS of a process and its direct children.
    Rss {
        #[arg(long)]
        pid: u32,
    },
}

#[derive(Subcommand)]
enum ChatCommand {
    /// Saturated direct messages: pairs messaging each other with a window of
    /// messages in flight per sender (closed loop); reports deliveries/s.
    Throughput {
        #[command(flatten)]
        server: ChatServerArgs,
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, default_value_t = 50)]
        pairs: usize,
        /// Messages per sender without a `message_sent` yet.
        #[arg(long, default_value_t = 16)]
        window: u64,
    },
    /// Open loop: every connection sends `--rate` messages/s to its partner.
    Rate {
        #[command(flatten)]
        server: ChatServerArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// Connections (one user each, paired; rounded down to even).
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Messages per second per connection.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
    },
    /// Open loop: one publisher sends `--rate` messages/s to a room of subscribers.
    Fanout {
        #[command(flatten)]
        server: ChatServerArgs,
        #[command(flatten)]
        load: LoadArgs,
        #[arg(long, default_value_t = 500)]
        subscribers: usize,
        /// With `--sub-url`: how many of the subscribers use the publisher's node (the
        /// rest use the `--sub-url` node).
        #[arg(long, default_value_t = 0)]
        subscribers_on_publisher_node: usize,
        /// Messages per second from the publisher.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
    },
    /// Closed loop, one pair: fill a conversation with `--history` messages, mark them
    /// read, then time `--rounds` marks of one new message each (the cost of a read mark
    /// as history grows).
    Read {
        #[command(flatten)]
        server: ChatServerArgs,
        #[arg(long, default_value_t = 10_000)]
        history: u64,
        #[arg(long, default_value_t = 200)]
        rounds: u64,
        /// Messages in flight while filling the history.
        #[arg(long, default_value_t = 32)]
        window: u64,
        /// Wait between the fill and the first mark (to land it inside another run).
        #[arg(long, default_value_t = 0)]
        mark_delay_ms: u64,
    },
    /// Server RSS growth for N idle authenticated connections.
    Idle {
        #[command(flatten)]
        server: ChatServerArgs,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[arg(long, default_value_t = 3)]
        hold_secs: u64,
        /// Server process whose RSS is measured.
        #[arg(long)]
        pid: u32,
    },
}

/// Which chat server to talk to and how to set it up.
#[derive(Args)]
struct ChatServerArgs {
    /// Framing: `ws` (Switchboard `/ws`, node ws peer) or `sio` (socket.io peer).
    #[arg(long, value_enum, default_value_t = Proto::Ws)]
    proto: Proto,
    /// Server base URL (REST and websocket), http://host:port.
    #[arg(long, default_value = "http://127.0.0.1:10550", env = "BENCH_URL")]
    url: String,
    /// Fan-out only: the subscribers' server (another node of the same cluster).
    #[arg(long)]
    sub_url: Option<String>,
    /// Socket.IO path for `--proto sio`.
    #[arg(long, default_value = "/socket.io")]
    sio_path: String,
    /// REST path creating a room: POST {"name"} with the owner's bearer token.
    #[arg(long, default_value = "/api/rooms")]
    room_create: String,
    /// REST path joining a room, `{id}` replaced by the room id.
    #[arg(long, default_value = "/api/rooms/{id}/join")]
    room_join: String,
}

/// Timing and bounds of a load run.
#[derive(Args)]
struct LoadArgs {
    /// Measured phase (sending stops after it).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Sending before the measured phase, not counted.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Longest wait for outstanding deliveries after the last send.
    #[arg(long, default_value_t = 10)]
    drain_secs: u64,
    /// Message budget over all senders (a bound on top of the time).
    #[arg(long, default_value_t = 5_000_000)]
    messages: u64,
    /// Padding bytes in each message's content.
    #[arg(long, default_value_t = 64)]
    content_bytes: usize,
    /// What wakes open-loop senders: a `timerfd` on the bench's own event loop
    /// (`precise`, the default: tens of microseconds late), or tokio's
    /// millisecond timer (`tokio`: up to about 2 ms late, which lands in every
    /// latency from the schedule; BENCHMARKS.md, "Session 8").
    #[arg(long, value_enum, default_value_t = Timer::Precise, env = "BENCH_TIMER")]
    timer: Timer,
    /// Also write every measured delivery to this file, one line each
    /// (`scheduled_us latency_us from_write_us`): when the slow ones happened.
    #[arg(long, env = "BENCH_TRACE")]
    trace: Option<PathBuf>,
}

impl ChatServerArgs {
    fn params(&self, load: Option<&LoadArgs>) -> Result<ChatParams> {
        let endpoint = |url: &str| Endpoint::new(self.proto, url, &self.sio_path);
        Ok(ChatParams {
            endpoint: endpoint(&self.url)?,
            sub_endpoint: self.sub_url.as_deref().map(endpoint).transpose()?,
            rooms: RoomApi {
                create: self.room_create.clone(),
                join: self.room_join.clone(),
            },
            warmup: Duration::from_secs(load.map_or(0, |l| l.warmup_secs)),
            duration: Duration::from_secs(load.map_or(0, |l| l.duration_secs)),
            drain: Duration::from_secs(load.map_or(0, |l| l.drain_secs)),
            messages: load.map_or(0, |l| l.messages),
            content_bytes: load.map_or(0, |l| l.content_bytes),
            timer: load.map_or(Timer::Tokio, |l| l.timer),
            trace: load.and_then(|l| l.trace.clone()),
        })
    }
}

/// Which Socket.IO server to talk to.
#[derive(Args)]
struct ServerArgs {
    /// Server base URL (http:// or ws://).
    #[arg(long, default_value = "http://127.0.0.1:10550", env = "BENCH_URL")]
    url: String,
    /// Socket.IO path (`/sockethub` for Sockethub, `/socket.io` for a plain server).
    #[arg(long, default_value = "/sockethub", env = "BENCH_PATH")]
    path: String,
}

impl ServerArgs {
    fn target(&self) -> Result<Target> {
        Target::new(&self.url, &self.path)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let fd_limit = fdlimit::raise();
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    }
    .context("building the tokio runtime")?;
    runtime.block_on(run(cli, fd_limit))
}

async fn run(cli: Cli, fd_limit: Option<u64>) -> Result<()> {
    match cli.command {
        Command::Echo {
            server,
            concurrency,
            connections,
            requests,
            duration_secs,
            warmup,
        } => {
            if concurrency == 0 || connections == 0 {
                bail!("--concurrency and --connections must be at least 1");
            }
            let params = echo::EchoParams {
                connections,
                concurrency,
                requests,
                duration: Duration::from_secs(duration_secs),
                warmup,
            };
            let report = echo::run(&server.target()?, &params).await?;
            report::print(&report, cli.json);
            if report.errors > 0 {
                bail!("{} request(s) failed or went unanswered", report.errors);
            }
        }
        Command::Idle {
            server,
            connections,
            hold_secs,
            pid,
        } => {
            let params = idle::IdleParams {
                connections,
                hold: Duration::from_secs(hold_secs),
                pid,
                fd_limit,
            };
            let report = idle::run(&server.target()?, &params).await?;
            report::print(&report, cli.json);
            if report.connections < report.requested {
                bail!(
                    "only {} of {} connections opened",
                    report.connections,
                    report.requested
                );
            }
        }
        Command::Irc {
            server,
            irc_port,
            logins,
            messages,
            warmup,
            pid,
        } => {
            let params = irc::IrcParams {
                logins,
                messages,
                warmup,
                irc_port,
                pid,
            };
            let report = irc::run(&server.target()?, &params).await?;
            report::print(&report, cli.json);
        }
        Command::Chat { scenario } => {
            let (server, load, scenario) = match scenario {
                ChatCommand::Throughput {
                    server,
                    load,
                    pairs,
                    window,
                } => (server, load, Scenario::Throughput { pairs, window }),
                ChatCommand::Rate {
                    server,
                    load,
                    connections,
                    rate,
                } => (server, load, Scenario::Rate { connections, rate }),
                ChatCommand::Fanout {
                    server,
                    load,
                    subscribers,
                    subscribers_on_publisher_node,
                    rate,
                } => (
                    server,
                    load,
                    Scenario::Fanout {
                        subscribers,
                        on_publisher_node: subscribers_on_publisher_node.min(subscribers),
                        rate,
                    },
                ),
                ChatCommand::Read {
                    server,
                    history,
                    rounds,
                    window,
                    mark_delay_ms,
                } => {
                    let params = chat_read::ReadParams {
                        history,
                        rounds,
                        window,
                        mark_delay: Duration::from_millis(mark_delay_ms),
                    };
                    let report = chat_read::run(&server.params(None)?.endpoint, &params).await?;
                    report::print(&report, cli.json);
                    return Ok(());
                }
                ChatCommand::Idle {
                    server,
                    connections,
                    hold_secs,
                    pid,
                } => {
                    let params = server.params(None)?;
                    let hold = Duration::from_secs(hold_secs);
                    let report = chat::idle(&params, connections, hold, pid, fd_limit).await?;
                    report::print(&report, cli.json);
                    return Ok(());
                }
            };
            let report = chat::run(scenario, &server.params(Some(&load))?).await?;
            report::print(&report, cli.json);
        }
        Command::Rss { pid } => {
            let processes = rss::with_children(pid)?;
            let total_kb = processes.iter().map(|p| p.rss_kb).sum();
            let report = RssReport {
                mode: "rss",
                processes,
                total_kb,
            };
            report::print(&report, cli.json);
        }
    }
    Ok(())
}
