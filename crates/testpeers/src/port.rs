//! Loopback ports: finding a free one, waiting for a started server to listen on it.

use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports already handed out in this process. The kernel may give a released port to the
/// next `bind(0)` at once, and the tests of one binary run in parallel threads: without
/// this, two tests could start their servers on one port, and the loser's `wait_port`
/// would see the winner's server listening.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it next), never one
/// this process has handed out before.
pub fn free_port() -> u16 {
    let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("find a free loopback port");
        if seen.insert(port) {
            return port;
        }
    }
    panic!("no fresh loopback port after 1000 tries");
}

/// Wait until something accepts connections on 127.0.0.1:`port`. Panics if `child`
/// (the server, named `name` in messages) exits first, or after `timeout` (killing it
/// first, so a hung server does not outlive the test).
pub fn wait_port(port: u16, child: &mut Child, name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Something listens; make sure it is not another server while ours failed
            // to bind and is on its way out.
            std::thread::sleep(Duration::from_millis(20));
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{name} exited after {port} began listening (someone else's?): {status}");
            }
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited before listening on {port}: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::kill(child);
    panic!("{name} not listening on 127.0.0.1:{port} after {timeout:?}");
}
