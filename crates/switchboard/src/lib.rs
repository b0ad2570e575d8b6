//! What the two binaries share: the platforms compiled in, and how a platform worker runs.
//!
//! `switchboard` is the server (and everything else); `switchboard-worker` is only the
//! platform worker the server starts per platform instance (one per IRC or XMPP login).
//! Keeping the worker in its own binary keeps the server, chat, store and Redis code out
//! of every worker process: a worker's RSS counts the pages of its binary it touches, and
//! a small binary touches few.

pub mod platforms;

/// Logs to stderr at `default` level unless `RUST_LOG` says otherwise. (A worker's stdout
/// is its pipe to the server.)
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Run platform `name` as a pipe worker on stdin/stdout until the server goes away.
pub fn run_worker(name: &str) -> anyhow::Result<()> {
    init_logging("warn");
    // One thread is plenty for a worker and keeps its memory small.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(platforms::run_worker(name))
}
