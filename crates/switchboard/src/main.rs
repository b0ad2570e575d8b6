//! The `switchboard` binary: `serve` runs the server, `platform <name>` runs one platform
//! worker (the server starts the leaner `switchboard-worker` for these when it is
//! installed next to this binary), `config check` validates a configuration.

mod config;
mod serve;
mod user;

use anyhow::Result;
use clap::{Parser, Subcommand};
use switchboard::init_logging;

/// mimalloc instead of the system allocator: a request's many small JSON allocations cost
/// about a third of the server's CPU under glibc malloc, and mimalloc returns memory of idle
/// connections more readily.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Real-time messaging gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (Socket.IO at /sockethub, /health) on the embedded engine, or on Redis
    /// with --redis-url.
    Serve(config::ServeArgs),
    /// Run one platform worker on stdin/stdout (started by the server); with --redis-url,
    /// a remote worker node serving a stateless platform's jobs for every server on that
    /// Redis (same settings as serve; the secret must match theirs).
    Platform {
        /// Platform name (see `switchboard serve` banner for the list).
        name: String,
        #[command(flatten)]
        args: config::ServeArgs,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Chat accounts.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account (password from SWITCHBOARD_USER_PASSWORD or the first line of
    /// stdin) and print a token for it when tokens outlive the process (jwt_secret or keys
    /// set).
    Add {
        /// Username.
        name: String,
        /// Email address.
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        args: config::ServeArgs,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the configuration (file, environment, flags) and print the result.
    Check(config::ServeArgs),
}

/// The server's runtime. One thread keeps every hand-off between tasks a queue push
/// instead of a cross-thread wake-up (the dominant cost of a request on a small machine);
/// more threads add parallelism for many busy connections.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging("info");
            let settings = config::Settings::load(&args)?;
            runtime(settings.threads)?.block_on(serve::run(settings))
        }
        Command::Platform { name, args } if args.redis_url.is_some() => {
            init_logging("info");
            let settings = config::Settings::load(&args)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(serve::run_remote_worker(settings, &name))
        }
        Command::Platform { name, .. } => switchboard::run_worker(&name),
        Command::User {
            command: UserCommand::Add { name, email, args },
        } => {
            init_logging("warn");
            let settings = config::Settings::load(&args)?;
            runtime(1)?.block_on(user::add(settings, &name, email.as_deref()))
        }
        Command::Config {
            command: ConfigCommand::Check(args),
        } => {
            let settings = config::Settings::load(&args)?;
            println!("{}", settings.describe());
            Ok(())
        }
    }
}
