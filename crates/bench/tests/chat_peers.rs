//! The chat load generator against the real node peers (`bench/peers/chat-ws.mjs`,
//! `bench/peers/chat-sio.mjs`), each started here on a free loopback port:
//! small, bounded runs of every scenario must deliver everything they send,
//! with no errors. Needs `node` and `npm ci` in `bench/peers` (scripts/test.sh
//! does it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A peer server process, killed when dropped.
struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    fn start(script: &str) -> Self {
        let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers");
        assert!(
            peers.join("node_modules/ws").is_dir() && peers.join("node_modules/socket.io").is_dir(),
            "bench/peers has no node_modules: run `npm ci` in bench/peers (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(script)
            .arg("0")
            .current_dir(&peers)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is required to run the chat peers");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the peer's first line");
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script} did not start: {line:?}"));
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `switchboard-bench --json chat <args>`; returns (success, stdout JSON, stderr).
fn bench(args: &[&str]) -> (bool, Option<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard-bench"))
        .args(["--json", "chat"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running switchboard-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim()).ok();
    (
        out.status.success(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_all_delivered(report: &Value, scenario: &str, expected_at_least: u64) {
    assert_eq!(report["scenario"], scenario, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let expected = report["expected"].as_u64().unwrap();
    assert!(expected >= expected_at_least, "{report}");
    assert_eq!(report["delivered"].as_u64().unwrap(), expected, "{report}");
    assert!(report["p99_us"].as_u64().unwrap() > 0, "{report}");
    assert!(report["ack_p99_us"].as_u64().unwrap() > 0, "{report}");
}

fn every_scenario(script: &str, proto: &str) {
    let peer = Peer::start(script);
    let url = peer.url();
    let common = [
        "--proto",
        proto,
        "--url",
        &url,
        "--warmup-secs",
        "0",
        "--duration-secs",
        "1",
    ];

    // 8 connections x 20/s for 1 s: about 160 messages, each delivered once, each a line
    // of the trace.
    let trace =
        std::env::temp_dir().join(format!("bench-peer-trace-{proto}-{}", std::process::id()));
    let (ok, report, err) = bench(
        &[
            &["rate"][..],
            &common,
            &["--connections", "8", "--rate", "20", "--trace"],
            &[trace.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    let report = report.unwrap();
    assert_all_delivered(&report, "rate", 100);
    let text = std::fs::read_to_string(&trace).unwrap();
    std::fs::remove_file(&trace).unwrap();
    let lines = text.lines().filter(|l| !l.starts_with('#')).count() as u64;
    assert_eq!(Some(lines), report["delivered"].as_u64(), "{report}");

    // 1 -> 20 subscribers at 20/s for 1 s: about 400 deliveries.
    let (ok, report, err) = bench(
        &[
            &["fanout"][..],
            &common,
            &["--subscribers", "20", "--rate", "20"],
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    assert_all_delivered(&report.unwrap(), "fanout", 300);

    // Closed loop, bounded by a small message budget.
    let (ok, report, err) = bench(
        &[
            &["throughput"][..],
            &common,
            &["--pairs", "2", "--window", "4", "--messages", "400"],
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    let report = report.unwrap();
    assert_all_delivered(&report, "throughput", 1);
    assert!(report["sent"].as_u64().unwrap() <= 400, "{report}");

    // Read marks (the ws peer only: the socket.io peer has no `mark_read`). The scenario
    // fails unless the first mark takes the whole history and every later one exactly one.
    if proto == "ws" {
        let (ok, report, err) = bench(&[
            "read",
            "--proto",
            proto,
            "--url",
            &url,
            "--history",
            "300",
            "--rounds",
            "20",
        ]);
        assert!(ok, "{err}");
        let report = report.unwrap();
        assert_eq!(
            (report["history"].as_u64(), report["rounds"].as_u64()),
            (Some(300), Some(20))
        );
        assert!(report["p50_us"].as_u64() > Some(0), "{report}");
    }

    let pid = peer.child.id().to_string();
    let (ok, report, err) = bench(&[
        "idle",
        "--proto",
        proto,
        "--url",
        &url,
        "--connections",
        "50",
        "--hold-secs",
        "1",
        "--pid",
        &pid,
    ]);
    assert!(ok, "{err}");
    let report = report.unwrap();
    assert_eq!(report["connections"], 50, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["dropped"], 0, "{report}");
}

#[test]
fn drives_the_node_ws_chat_peer() {
    every_scenario("chat-ws.mjs", "ws");
}

#[test]
fn drives_the_socketio_chat_peer() {
    every_scenario("chat-sio.mjs", "sio");
}

/// A trace file that cannot be created fails the run before it starts (no server is
/// even asked), rather than after a measurement whose report would then be lost.
#[test]
fn reports_an_unwritable_trace_file_first() {
    let missing = std::env::temp_dir().join(format!("no-such-dir-{}", std::process::id()));
    let trace = missing.join("trace.txt");
    let (ok, report, err) = bench(&[
        "rate",
        "--url",
        "http://127.0.0.1:9",
        "--connections",
        "2",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(report.is_none());
    assert!(err.contains("cannot create the trace file"), "{err}");
    assert!(err.contains(trace.to_str().unwrap()), "{err}");
}

/// A server without the chat API (every request answered 404) gets a clear
/// error, not a hang or a zero-filled report.
#[test]
fn reports_a_missing_chat_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot found");
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    let (ok, report, err) = bench(&[
        "rate",
        "--url",
        &url,
        "--connections",
        "2",
        "--duration-secs",
        "1",
    ]);
    assert!(!ok);
    assert!(report.is_none());
    assert!(err.contains("no native chat API"), "{err}");
}
