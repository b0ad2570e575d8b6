//! How a worker binary starts: `<binary> platform <name>` on the command line, logs to
//! stderr, one current-thread runtime, an exit code.
//!
//! Shared by `switchboard-worker` (every platform) and the per-platform worker binaries
//! (`switchboard-worker-xmpp`, …) so they take the same arguments and the server starts
//! any of them alike. Nothing here pulls in more code than a worker needs: the log filter
//! is [`Targets`], not `EnvFilter` (whose regex engine would be mapped into every worker).

use std::fmt::Display;
use std::process::ExitCode;

use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Run `<binary> platform <name>`: `run(name)` on a current-thread runtime for a `name` in
/// `platforms`; an error (exit code 1) for another name, usage (exit code 2) for other
/// arguments.
pub fn main<F, E>(binary: &str, platforms: &[&str], run: impl FnOnce(String) -> F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut args = std::env::args().skip(1);
    let (Some(verb), Some(name), None) = (args.next(), args.next(), args.next()) else {
        return usage(binary, platforms);
    };
    if verb != "platform" {
        return usage(binary, platforms);
    }
    if !platforms.contains(&name.as_str()) {
        eprintln!(
            "Error: unknown platform {name:?} (available: {})",
            platforms.join(", ")
        );
        return ExitCode::FAILURE;
    }
    match block_on(run(name)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run a worker future the way every worker runs: logging on stderr (stdout is the pipe to
/// the server) and one thread, which is plenty for a worker and keeps its memory small.
pub fn block_on<F: Future>(worker: F) -> std::io::Result<F::Output> {
    init_logging();
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(worker))
}

/// Logs at `warn` unless `RUST_LOG` says otherwise. `RUST_LOG` is read as
/// `level` / `target=level` directives (what [`Targets`] parses); one the worker cannot
/// read (`EnvFilter`'s span and field filters) is reported once and `warn` used instead.
fn init_logging() {
    let default = || Targets::new().with_default(Level::WARN);
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec.parse().unwrap_or_else(|e| {
            eprintln!("worker: ignoring RUST_LOG={spec:?} ({e}); logging warnings and errors");
            default()
        }),
        _ => default(),
    };
    // A second call (a test running two workers in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .try_init();
}

fn usage(binary: &str, platforms: &[&str]) -> ExitCode {
    eprintln!(
        "usage: {binary} platform <name>\n\
         Runs one platform worker on stdin/stdout; `switchboard serve` starts it.\n\
         platforms: {}",
        platforms.join(", ")
    );
    ExitCode::from(2)
}
