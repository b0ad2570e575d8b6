//! XMPP platform benchmark against a local prosody (started here, like the tests):
//!
//! 1. Memory per login: `LOGINS` accounts log in through the gateway, each in its own
//!    worker process (one per actor and credentials). Reports each worker's RSS before
//!    its login (an idle worker) and after (connected, roster fetched, presence sent):
//!    first for the shared `switchboard-worker` (every platform linked in), then for
//!    `switchboard-worker-xmpp`, which the server runs for XMPP.
//! 2. Incoming latency: a sender account, driven in-process by the same xmpp platform code,
//!    sends `MESSAGES` chat messages one at a time to a receiver; the time from the
//!    sender's write to the receiver session's push (prosody → worker → gateway → session).
//!    Measured in the same run against a receiver running the platform in-process (no
//!    worker process, pipe or gateway): the floor set by prosody and tokio-xmpp.
//!
//! cargo bench -p switchboard --bench xmpp -- [logins] [messages]

#[path = "../tests/peers/xmpp.rs"]
mod peer;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_engine::Engine;
use switchboard_gateway::{Gateway, GatewayConfig, Push, Session, WorkerCommand};
use switchboard_platform::frame::FromWorker;
use switchboard_platform::worker::test_context;
use switchboard_platform::{Job, Platform};
use switchboard_platform_xmpp::Xmpp;
use switchboard_protocol::context;
use tokio::sync::mpsc;

fn activity(jid: &str, verb: &str, extra: Value) -> Value {
    let mut a = json!({
        "type": verb,
        "@context": context::canonical("xmpp"),
        "actor": {"id": jid, "type": "person"},
    });
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    a
}

fn creds(jid: &str, password: &str, port: u16) -> Value {
    json!({"type": "credentials", "userAddress": jid, "password": password,
           "resource": "bench", "server": "127.0.0.1", "port": port})
}

/// `field` of `/proc/<pid>/<file>` (`status`: `VmRSS`, `RssAnon`; `smaps_rollup`: `Pss`),
/// in KiB.
fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.split(':').next() == Some(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Total RSS, its private (anonymous) part, and PSS (shared pages divided among the
/// processes sharing them: the binary's code is shared by every worker process).
fn rss_kib(pid: u32) -> [u64; 3] {
    [
        proc_kib(pid, "status", "VmRSS"),
        proc_kib(pid, "status", "RssAnon"),
        proc_kib(pid, "smaps_rollup", "Pss"),
    ]
}

/// PIDs of this process's `switchboard-worker platform xmpp` children.
fn xmpp_workers() -> Vec<u32> {
    let me = std::process::id();
    let mut out = vec![];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the ")" that ends the command name: state, ppid, …
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(me) && cmdline.split(|b| *b == 0).any(|a| a == b"xmpp") {
            out.push(pid);
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn median_kib(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

async fn session(gw: &Gateway) -> (Session, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let s = gw
        .open_session(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Arc::new(move |p| {
                if let Push::Message(v) = p {
                    let _ = tx.send(v);
                }
            }),
        )
        .await
        .unwrap();
    (s, rx)
}

/// An xmpp platform running in this process, logged in.
async fn in_process(jid: &str, password: &str, port: u16) -> (Xmpp, mpsc::Receiver<FromWorker>) {
    let (ctx, rx) = test_context(json!({"accept_invalid_certs": true}));
    let x = Xmpp::new(ctx);
    let job = Job {
        id: "c".into(),
        session: "bench".into(),
        activity: activity(jid, "connect", json!({})),
        credentials: Some(creds(jid, password, port)),
    };
    x.handle(job).await.expect("in-process login");
    (x, rx)
}

fn chat(from: &str, to: &str, n: usize) -> Job {
    Job {
        id: format!("m{n}"),
        session: "bench".into(),
        activity: activity(
            from,
            "send",
            json!({"target": {"id": to, "type": "person"},
                   "object": {"type": "message", "content": format!("bench {n}")}}),
        ),
        credentials: None,
    }
}

/// Send `count` messages one at a time, each timed until `rx` pushes it.
async fn latencies(
    sender: &Arc<Xmpp>,
    to: &str,
    count: usize,
    rx: &mut mpsc::UnboundedReceiver<Value>,
) -> Vec<Duration> {
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let job = chat("sender@localhost", to, n);
        let s = sender.clone();
        let start = Instant::now();
        let sent = tokio::spawn(async move { s.handle(job).await });
        wait_push(rx, format!("bench {n}")).await;
        out.push(start.elapsed());
        sent.await.unwrap().expect("send accepted");
    }
    out.sort_unstable();
    out
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let logins = args.first().copied().unwrap_or(20);
    let messages = args.get(1).copied().unwrap_or(2000);
    let users: Vec<(String, String)> = (0..logins)
        .map(|i| (format!("user{i}"), format!("pw{i}")))
        .chain([
            ("sender".into(), "senderpw".into()),
            ("floor".into(), "floorpw".into()),
        ])
        .collect();
    let refs: Vec<(&str, &str)> = users
        .iter()
        .map(|(u, p)| (u.as_str(), p.as_str()))
        .collect();
    let server = peer::Prosody::start(&refs);

    // 1. Memory per login: first with the shared `switchboard-worker` running the xmpp
    // platform (for comparison: started through a link in a directory of our own, where no
    // per-platform binary sits next to it), then with what the server runs,
    // `switchboard-worker-xmpp`, whose logins the latency part uses.
    let shared_dir = switchboard_testpeers::TempDir::new("xmpp-bench");
    let shared = shared_dir.path().join("switchboard-worker");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_switchboard-worker"), &shared).unwrap();
    let (gw, sessions) = logins_memory(&shared, &users[..logins], server.port).await;
    close(gw, sessions).await;
    let lean = std::path::Path::new(env!("CARGO_BIN_EXE_switchboard-worker"));
    let (gw, mut sessions) = logins_memory(lean, &users[..logins], server.port).await;

    // 2. Incoming latency, gateway path.
    let (sender, _sender_events) = in_process("sender@localhost", "senderpw", server.port).await;
    let sender = Arc::new(sender);
    let (_, rx) = &mut sessions[0];
    // Warm-up, then measure.
    let _ = latencies(&sender, "user0@localhost/bench", 50, rx).await;
    let gateway = latencies(&sender, "user0@localhost/bench", messages, rx).await;

    // Same run, in-process receiver: the floor.
    let (_floor, mut events) = in_process("floor@localhost", "floorpw", server.port).await;
    let (tx, mut floor_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(f) = events.recv().await {
            if let FromWorker::Event { activity, .. } = f {
                let _ = tx.send(activity);
            }
        }
    });
    let _ = latencies(&sender, "floor@localhost/bench", 50, &mut floor_rx).await;
    let floor = latencies(&sender, "floor@localhost/bench", messages, &mut floor_rx).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("incoming chat message → push, {messages} sequential messages:");
    for (name, v) in [
        ("gateway session (worker process)", &gateway),
        ("in-process receiver (floor)", &floor),
    ] {
        println!(
            "  {name}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap()),
        );
    }
    println!(
        "  ratio gateway/floor: p50 {:.2}x, p99 {:.2}x",
        ms(percentile(&gateway, 0.5)) / ms(percentile(&floor, 0.5)),
        ms(percentile(&gateway, 0.99)) / ms(percentile(&floor, 0.99)),
    );
    close(gw, sessions).await;
}

type Sessions = Vec<(Session, mpsc::UnboundedReceiver<Value>)>;

/// Log each of `users` in through a gateway whose workers are `program` (or the
/// per-platform binary next to it, as the server does), each in its own worker process,
/// and print the workers' memory before and after login.
async fn logins_memory(
    program: &std::path::Path,
    users: &[(String, String)],
    port: u16,
) -> (Gateway, Sessions) {
    let mut config = GatewayConfig::new(WorkerCommand {
        program: program.to_owned(),
        args: vec![],
    });
    config.worker_settings = json!({"accept_invalid_certs": true});
    config.max_instances = users.len() + 8;
    config.rate_max = 100_000;
    let gw = Gateway::new(config, Engine::embedded(), vec![Xmpp::manifest()], "bench").unwrap();

    let mut sessions = vec![];
    let (mut idle, mut online) = (vec![], vec![]);
    let mut exe = None;
    for (user, password) in users {
        let jid = format!("{user}@localhost");
        let (s, rx) = session(&gw).await;
        let mut c = activity(&jid, "credentials", json!({}));
        c["object"] = creds(&jid, password, port);
        s.credentials(s.ticket(), c).await;
        let before: Vec<u32> = xmpp_workers();
        // A verb that needs no connection starts the worker without logging in.
        let r = s
            .message(
                s.ticket(),
                activity(
                    &jid,
                    "leave",
                    json!({"target": {"id": "r@conference.localhost", "type": "room"}}),
                ),
            )
            .await;
        assert!(r.get("error").is_some());
        let pid = *xmpp_workers()
            .iter()
            .find(|p| !before.contains(p))
            .expect("a new worker");
        exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        tokio::time::sleep(Duration::from_millis(200)).await;
        idle.push(rss_kib(pid));
        let r = s
            .message(s.ticket(), activity(&jid, "connect", json!({})))
            .await;
        assert!(r.get("error").is_none(), "{r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        online.push(rss_kib(pid));
        sessions.push((s, rx));
    }
    let exe = exe.expect("a worker ran");
    let size = std::fs::metadata(&exe).map(|m| m.len() / 1024).unwrap_or(0);
    println!(
        "xmpp logins: {} (one worker process each), workers run {} ({size} KiB)",
        users.len(),
        exe.display()
    );
    for (name, pick) in [("RSS", 0), ("private (RssAnon)", 1), ("PSS", 2)] {
        let get = |v: &[[u64; 3]]| -> Vec<u64> { v.iter().map(|p| p[pick]).collect() };
        let (before, after) = (get(&idle), get(&online));
        let deltas = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        println!(
            "  worker {name}: idle median {} KiB; logged in median {} KiB, max {} KiB; the login adds median {} KiB",
            median_kib(before),
            median_kib(after.clone()),
            after.iter().max().unwrap(),
            median_kib(deltas),
        );
    }
    (gw, sessions)
}

async fn close(gw: Gateway, sessions: Sessions) {
    for (s, _) in sessions {
        s.close().await;
    }
    gw.shutdown().await;
}

async fn wait_push(rx: &mut mpsc::UnboundedReceiver<Value>, want: String) {
    loop {
        let v = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("push within 10 s")
            .expect("session open");
        if v["type"] == "send" && v["object"]["content"] == want.as_str() {
            return;
        }
    }
}
