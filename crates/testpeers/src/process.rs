//! Stopping a peer: only ever the child this harness started, by its handle (never by
//! name).

use std::process::Child;

/// SIGKILL `child` and reap it; a child that already exited is fine.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
