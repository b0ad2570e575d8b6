//! A real `redis-server` for the tests: started on a free 127.0.0.1 port in a temp dir,
//! killed (by its own PID only) when the guard drops.

#![allow(dead_code)] // each test file uses a different part

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_engine_redis::RedisOptions;
use switchboard_testpeers::{TempDir, free_port, kill, require, wait_port};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    aof: bool,
}

impl RedisServer {
    /// A throw-away server: no snapshots, no AOF.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that persists every write to its append-only file before answering.
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(aof: bool) -> Self {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: TempDir::new("redis"),
            aof,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(require("redis-server"));
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        // Fails if ours exits (e.g. another process on this machine took the port), so a
        // PONG below is never a stranger's server.
        wait_port(
            self.port,
            &mut child,
            "redis-server",
            Duration::from_secs(10),
        );
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let mut buf = [0u8; 64];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn options(&self) -> RedisOptions {
        RedisOptions::new(self.url())
    }

    /// SIGKILL the server: no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Start it again on the same port and directory (so it reloads its AOF).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Before the TempDir field drops, so the server is gone when its dir is removed.
        self.kill();
    }
}

/// Options for the engine on `cluster`, every node a seed.
pub fn cluster_options(cluster: &switchboard_testpeers::RedisCluster) -> RedisOptions {
    RedisOptions {
        cluster: true,
        ..RedisOptions::new(cluster.seeds())
    }
}
