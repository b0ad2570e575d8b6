//! A throwaway PostgreSQL server for tests (feature `suite`): `initdb` into a temp
//! directory, `postgres` on a free loopback port, stopped and removed on drop.
//!
//! PostgreSQL refuses to run as root, so when the tests do, the server runs as the
//! `postgres` system user (created by the Debian package) through `setpriv`. Missing
//! binaries fail the test with a message saying what to install.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchboard_testpeers::{TempDir, chown_tree, command_as, free_port, kill, service_user};

/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Who runs the server when the tests run as root.
const SERVICE_USER: &str = "postgres";

/// A running server; [`url`](Self::url) reaches its `postgres` database as the `postgres`
/// superuser (trust authentication on 127.0.0.1 only).
pub struct TempPostgres {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl TempPostgres {
    /// Start a fresh server. Panics, with the server's log, if it cannot.
    pub fn start() -> TempPostgres {
        let bin = bindir();
        let dir = TempDir::new("pg");
        let service = service_user(SERVICE_USER);
        chown_tree(dir.path(), service);
        let data = dir.path().join("data");
        let initdb = command_as(&bin.join("initdb"), service)
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );

        let port = free_port();
        let log = File::create(dir.path().join("postgres.log")).expect("create the PostgreSQL log");
        // setpriv execs postgres, so the child's PID is the server's (the only process the
        // guard signals).
        let child = command_as(&bin.join("postgres"), service)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
            // Throwaway data: durability only costs time here.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let mut pg = TempPostgres { child, dir, port };
        pg.wait_ready(&bin);
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn wait_ready(&mut self, bin: &Path) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("postgres exited ({status}): {}", self.log());
            }
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready after {START_TIMEOUT:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: sessions are ended, the server exits.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                kill(&mut self.child);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The TempDir field removes the directory after this.
    }
}

/// The directory with `initdb` and `postgres`: `pg_config --bindir` when it has them
/// (pg_config may come from a client-only package), else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bindir() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| has_server(d)) {
        return dir;
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_server(dir))
        .collect();
    versioned.sort();
    versioned.pop().map(|(_, dir)| dir).unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, postgres) not found via pg_config or in \
             /usr/lib/postgresql/*/bin: install postgresql-15 (scripts/test.sh does)"
        )
    })
}
