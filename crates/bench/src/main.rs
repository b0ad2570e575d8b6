//! `switchboard-bench`: a load generator for Socket.IO v4 servers that speak
//! the Sockethub request/ack pattern (Switchboard, Sockethub, or a plain
//! socket.io peer). This file is the command line; each mode lives in its own
//! module.

mod echo;
mod fdlimit;
mod idle;
mod irc;
mod report;
mod rss;
mod sio;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

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
    /// Prints the RSS of a process and its direct children.
    Rss {
        #[arg(long)]
        pid: u32,
    },
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
