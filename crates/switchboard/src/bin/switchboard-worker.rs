//! `switchboard-worker platform <name>`: one platform worker on stdin/stdout, the process
//! `switchboard serve` starts for each platform instance (one per IRC or XMPP login).
//!
//! It does what `switchboard platform <name>` does, from a binary that links only the
//! platform runtime and the platforms: none of the server, chat, store or Redis code, so
//! every worker process maps and touches less (see "Gateway" in BENCHMARKS.md). The
//! arguments are the same as the full binary's so the server starts either one alike.

use std::process::ExitCode;

/// Same allocator as the server's (see `main.rs`); with `no_thp` an idle worker's heap
/// stays in the hundreds of KiB.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [verb, name] = args.as_slice() else {
        return usage();
    };
    if verb != "platform" {
        return usage();
    }
    match switchboard::run_worker(name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: switchboard-worker platform <name>\n\
         Runs one platform worker on stdin/stdout; `switchboard serve` starts it.\n\
         platforms: {}",
        switchboard::platforms::names().join(", ")
    );
    ExitCode::from(2)
}
