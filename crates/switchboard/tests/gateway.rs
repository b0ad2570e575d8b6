//! The gateway driven through its session API with real worker processes (this crate's
//! `switchboard-worker platform dummy`, as the server starts them): credential isolation, instance sharing and scoping,
//! heartbeats, reaping, caps, shutdown. The wire-level behaviour is covered by the npm
//! client suite in `tests/clients`.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use common::worker_pids;
use serde_json::{Value, json};
use switchboard_engine::Engine;
use switchboard_gateway::{Gateway, GatewayConfig, Push, Session, WorkerCommand};
use switchboard_platform::Platform;
use switchboard_platform_dummy::Dummy;
use switchboard_protocol::{Manifest, context};
use tokio::sync::mpsc;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Every test here starts worker processes as children of this test process, and some
/// count them: they run one at a time.
static CHILDREN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config() -> GatewayConfig {
    let mut c = GatewayConfig::new(WorkerCommand {
        program: env!("CARGO_BIN_EXE_switchboard-worker").into(),
        args: vec![],
    });
    c.request_timeout = Duration::from_secs(10);
    c
}

/// The dummy worker, declared as a persistent platform whose `echo` needs credentials
/// with a password: stands in for irc/xmpp without a remote server.
fn persistent(require_password: bool) -> Manifest {
    let mut m = Dummy::manifest();
    m.persist = true;
    m.concurrency = 1;
    if require_password {
        m.require_credentials = vec!["echo"];
        m.credentials = json!({
            "required": ["object"],
            "properties": {"object": {"type": "object", "required": ["password"]}}
        });
    }
    m
}

fn gateway(config: GatewayConfig, manifest: Manifest) -> (Gateway, Engine) {
    let engine = Engine::embedded();
    let gw = Gateway::new(config, engine.clone(), vec![manifest], "test").unwrap();
    (gw, engine)
}

fn echo(actor: &str, content: &str) -> Value {
    json!({
        "type": "echo",
        "@context": context::canonical("dummy"),
        "actor": {"id": actor, "type": "person"},
        "object": {"type": "message", "content": content}
    })
}

fn credentials(actor: &str, password: &str) -> Value {
    json!({
        "type": "credentials",
        "@context": context::canonical("dummy"),
        "actor": {"id": actor, "type": "person"},
        "object": {"type": "credentials", "password": password}
    })
}

async fn open(gw: &Gateway) -> (Session, mpsc::UnboundedReceiver<Push>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let session = gw
        .open_session(LOCAL, Arc::new(move |p| drop(tx.send(p))))
        .await
        .unwrap();
    (session, rx)
}

async fn send(s: &Session, activity: Value) -> Value {
    s.message(s.ticket(), activity).await
}

async fn next_push(rx: &mut mpsc::UnboundedReceiver<Push>) -> Push {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a push within 5 s")
        .expect("push stream open")
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn a_session_cannot_use_another_sessions_credentials() {
    let _serial = CHILDREN.lock().await;
    let (gw, _) = gateway(config(), persistent(true));
    let (a, _pa) = open(&gw).await;
    let (b, _pb) = open(&gw).await;

    let stored = a
        .credentials(a.ticket(), credentials("alice", "hunter2"))
        .await;
    assert!(stored.get("error").is_none(), "{stored}");
    let reply = send(&a, echo("alice", "hi")).await;
    assert_eq!(reply["object"]["content"], "hi", "{reply}");

    let reply = send(&b, echo("alice", "hi")).await;
    assert_eq!(reply["error"], "credentials not found for dummy:alice");
    a.close().await;
    b.close().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn credentials_are_sealed_and_deleted_on_disconnect() {
    let _serial = CHILDREN.lock().await;
    let (gw, engine) = gateway(config(), persistent(true));
    let (a, _pa) = open(&gw).await;
    a.credentials(a.ticket(), credentials("alice", "hunter2"))
        .await;

    let blob = engine
        .credentials
        .get(a.id(), "dummy:alice")
        .await
        .unwrap()
        .expect("credentials stored");
    assert!(
        !blob.windows(7).any(|w| w == b"hunter2"),
        "stored in plaintext"
    );

    a.close().await;
    assert_eq!(
        engine.credentials.get(a.id(), "dummy:alice").await.unwrap(),
        None
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn invalid_credentials_are_refused_with_the_schema_error() {
    let _serial = CHILDREN.lock().await;
    let (gw, engine) = gateway(config(), persistent(true));
    let (a, _pa) = open(&gw).await;
    let mut bad = credentials("alice", "x");
    bad["object"] = json!({"type": "credentials"});
    let reply = a.credentials(a.ticket(), bad).await;
    assert_eq!(
        reply["error"],
        "[dummy] /object: must have required property 'password'"
    );
    assert_eq!(
        engine.credentials.get(a.id(), "dummy:alice").await.unwrap(),
        None
    );
    a.close().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn same_secret_shares_one_connection_and_its_results() {
    let _serial = CHILDREN.lock().await;
    let (gw, _) = gateway(config(), persistent(true));
    let (a, _pa) = open(&gw).await;
    let (b, mut pb) = open(&gw).await;
    for s in [&a, &b] {
        s.credentials(s.ticket(), credentials("alice", "same"))
            .await;
    }
    send(&a, echo("alice", "one")).await;
    let reply = send(&b, echo("alice", "two")).await;
    assert_eq!(reply["object"]["content"], "two");
    assert_eq!(gw.health()["instances"], 1, "same secret, one instance");
    assert_eq!(worker_pids().len(), 1);

    // B sees A's traffic on the shared connection.
    send(&a, echo("alice", "three")).await;
    match next_push(&mut pb).await {
        Push::Message(m) => assert_eq!(m["object"]["content"], "three"),
        other => panic!("unexpected push {other:?}"),
    }

    let (c, _pc) = open(&gw).await;
    c.credentials(c.ticket(), credentials("alice", "other"))
        .await;
    send(&c, echo("alice", "four")).await;
    assert_eq!(
        gw.health()["instances"],
        2,
        "another secret, another instance"
    );
    for s in [a, b, c] {
        s.close().await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn anonymous_sessions_never_share() {
    let _serial = CHILDREN.lock().await;
    let (gw, _) = gateway(config(), persistent(false));
    let (a, _pa) = open(&gw).await;
    let (b, _pb) = open(&gw).await;
    send(&a, echo("alice", "x")).await;
    send(&b, echo("alice", "y")).await;
    assert_eq!(gw.health()["instances"], 2);
    gw.shutdown().await;
    assert!(worker_pids().is_empty(), "shutdown leaves no worker");
}

#[tokio::test]
async fn instance_cap_answers_with_an_error() {
    let _serial = CHILDREN.lock().await;
    let mut c = config();
    c.max_instances = 1;
    let (gw, _) = gateway(c, persistent(false));
    let (a, _pa) = open(&gw).await;
    let (b, _pb) = open(&gw).await;
    assert_eq!(send(&a, echo("alice", "x")).await["object"]["content"], "x");
    let refused = send(&b, echo("bob", "y")).await;
    assert_eq!(
        refused["error"],
        "platform instance limit reached (1); cannot start new dummy instance"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_silent_worker_is_killed_and_replaced() {
    let _serial = CHILDREN.lock().await;
    let mut c = config();
    c.heartbeat_interval = Duration::from_millis(100);
    c.heartbeat_timeout = Duration::from_millis(600);
    let (gw, _) = gateway(c, Dummy::manifest());
    let (a, _pa) = open(&gw).await;
    assert_eq!(send(&a, echo("alice", "x")).await["object"]["content"], "x");
    let pids = worker_pids();
    assert_eq!(pids.len(), 1);

    // Freeze the worker: no heartbeats, no answers.
    // SAFETY: kill(2) on a PID this test's gateway spawned and still owns.
    unsafe { libc::kill(pids[0] as i32, libc::SIGSTOP) };
    let reply = send(&a, echo("alice", "frozen")).await;
    assert_eq!(
        reply["error"],
        "Error: session thread closed unexpectedly: SIGKILL"
    );

    let reply = send(&a, echo("alice", "again")).await;
    assert_eq!(
        reply["object"]["content"], "again",
        "a fresh worker answers"
    );
    assert!(!worker_pids().contains(&pids[0]));
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_instances_are_reaped() {
    let _serial = CHILDREN.lock().await;
    let mut c = config();
    c.idle_timeout = Duration::from_millis(300);
    let (gw, _) = gateway(c, Dummy::manifest());
    let (a, _pa) = open(&gw).await;
    send(&a, echo("alice", "x")).await;
    assert_eq!(gw.health()["instances"], 1);
    eventually("the idle instance is stopped", || {
        gw.health()["instances"] == 0
    })
    .await;
    eventually("its worker exits", || worker_pids().is_empty()).await;
    // And the next request simply starts a new one.
    assert_eq!(send(&a, echo("alice", "y")).await["object"]["content"], "y");
    gw.shutdown().await;
}

#[tokio::test]
async fn events_keep_arrival_order_across_credentials_and_messages() {
    let _serial = CHILDREN.lock().await;
    let (gw, _) = gateway(config(), persistent(true));
    let (a, _pa) = open(&gw).await;
    // Tickets taken in order, futures run in reverse: credentials must still come first.
    let t_creds = a.ticket();
    let t_echo = a.ticket();
    let echo_fut = a.message(t_echo, echo("alice", "after creds"));
    let creds_fut = a.credentials(t_creds, credentials("alice", "pw"));
    let (reply, stored) = tokio::join!(echo_fut, creds_fut);
    assert!(stored.get("error").is_none(), "{stored}");
    assert_eq!(reply["object"]["content"], "after creds", "{reply}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_crash_takes_down_only_its_own_instance() {
    let _serial = CHILDREN.lock().await;
    let (gw, _) = gateway(config(), persistent(false));
    let (a, mut pa) = open(&gw).await;
    let (b, _pb) = open(&gw).await;
    send(&a, echo("alice", "x")).await;
    send(&b, echo("bob", "y")).await;
    let before = worker_pids();
    assert_eq!(before.len(), 2);

    let mut crash = echo("alice", "bye");
    crash["type"] = json!("exit1");
    let reply = send(&a, crash).await;
    assert_eq!(
        reply["error"],
        "Error: session thread closed unexpectedly: 1"
    );
    // The persistent instance's session is told its connection is gone.
    match next_push(&mut pa).await {
        Push::Message(m) => {
            assert_eq!(m["type"], "error");
            assert_eq!(m["actor"], json!({"id": "alice", "type": "service"}));
        }
        other => panic!("unexpected push {other:?}"),
    }

    // Bob's worker is untouched and still answers.
    assert_eq!(
        send(&b, echo("bob", "still here")).await["object"]["content"],
        "still here"
    );
    let after = worker_pids();
    assert!(
        after.iter().any(|p| before.contains(p)),
        "bob's worker survived"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_waiting_job_holds_up_nothing_and_fails_with_its_worker() {
    let _serial = CHILDREN.lock().await;
    let (gw, _) = gateway(config(), Dummy::manifest());
    let (a, _pa) = open(&gw).await;
    let verb = |v: &str| {
        let mut activity = echo("alice", v);
        activity["type"] = json!(v);
        activity
    };
    // Tickets in order: the hung job reaches the worker before the echo.
    let (t_hang, t_echo) = (a.ticket(), a.ticket());
    let hung = tokio::spawn({
        let a = a.clone();
        let hang = verb("hang");
        async move { a.message(t_hang, hang).await }
    });
    // The worker answers what finishes at once while the other job waits (in its task).
    let reply = a.message(t_echo, echo("alice", "meanwhile")).await;
    assert_eq!(reply["object"]["content"], "meanwhile", "{reply}");
    assert!(!hung.is_finished(), "the hung job is still waiting");

    // The worker dies: the job it still held is answered with why, not left to time out.
    let reply = send(&a, verb("sigkill")).await;
    assert_eq!(
        reply["error"],
        "Error: session thread closed unexpectedly: SIGKILL"
    );
    let hung = tokio::time::timeout(Duration::from_secs(5), hung)
        .await
        .expect("the hung job is answered when its worker dies")
        .unwrap();
    assert_eq!(
        hung["error"],
        "Error: session thread closed unexpectedly: SIGKILL"
    );
    assert_eq!(
        send(&a, echo("alice", "after")).await["object"]["content"],
        "after"
    );
    gw.shutdown().await;
}
