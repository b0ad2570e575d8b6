//! `switchboard-worker-xmpp platform xmpp`: the worker for one XMPP login, which the server
//! runs instead of `switchboard-worker` when it finds this binary next to it.
//!
//! Same arguments and behaviour as `switchboard-worker platform xmpp`, from a binary that
//! links the platform runtime and the xmpp platform only (no other platform, no
//! `switchboard` library): an XMPP worker lives as long as its login, and every page of
//! code it touches counts in its RSS, so a binary without the other platforms' code, their
//! regex engine and the other TLS users keeps each login under the 8 MB target (see
//! "XMPP platform" in BENCHMARKS.md).

use std::process::ExitCode;

use switchboard_platform::{entry, worker};
use switchboard_platform_xmpp::Xmpp;

/// Same allocator as the other binaries (see `main.rs`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The C library's `pow`, defined here so that the linker finds it in the binary and drops
/// `libm.so.6`, whose pages (0.3 MB) would otherwise count in every XMPP worker's RSS.
/// `pow` is the only libm function the binary uses, from the statistics of tokio's
/// multi-thread scheduler, which a worker (one current-thread runtime) never runs; the
/// pure-Rust `libm` crate is musl's implementation.
#[unsafe(no_mangle)]
extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

fn main() -> ExitCode {
    entry::main("switchboard-worker-xmpp", &["xmpp"], |_| {
        worker::run::<Xmpp>()
    })
}
