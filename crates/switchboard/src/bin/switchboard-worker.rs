//! `switchboard-worker platform <name>`: one platform worker on stdin/stdout, the process
//! `switchboard serve` starts for each platform instance (one per IRC login, one per
//! feeds or metadata burst).
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
    let names = switchboard::platforms::names();
    switchboard_platform::entry::main("switchboard-worker", &names, |name| async move {
        switchboard::platforms::run_worker(&name).await
    })
}
