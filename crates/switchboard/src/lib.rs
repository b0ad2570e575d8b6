//! What the binaries share: the platforms compiled in, and how a platform worker runs.
//!
//! `switchboard` is the server (and everything else); `switchboard-worker` is only the
//! platform worker the server starts per platform instance, and `switchboard-worker-xmpp`
//! a worker for the xmpp platform alone (one per XMPP login). Keeping workers in their own
//! binaries keeps the server, chat, store and Redis code — and for XMPP every other
//! platform — out of every worker process: a worker's RSS counts the pages of its binary it
//! touches, and a small binary touches few. The server runs `switchboard-worker-<platform>`
//! when it is installed next to `switchboard-worker` (see `WorkerCommand::program_for`).

pub mod platforms;

/// Logs to stderr at `default` level unless `RUST_LOG` says otherwise. (Workers log
/// through `switchboard_platform::entry` instead.)
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
    switchboard_platform::entry::block_on(platforms::run_worker(name))?
}
