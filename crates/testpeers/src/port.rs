//! Loopback ports: finding a free one, waiting for a started server to listen on it.

use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}

/// Wait until something accepts connections on 127.0.0.1:`port`. Panics if `child`
/// (the server, named `name` in messages) exits first, or after `timeout` (killing it
/// first, so a hung server does not outlive the test).
pub fn wait_port(port: u16, child: &mut Child, name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
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
