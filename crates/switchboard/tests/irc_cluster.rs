//! One IRC login shared by sessions on different nodes: two `switchboard serve` processes
//! on one real redis-server, a real ngircd, raw IRC observers, and clients speaking
//! Socket.IO over WebSocket to `/sockethub` as Sockethub clients do. What is asserted is
//! what ngircd and the clients see: how many users the IRC server counts, who gets which
//! message, and what happens when the node running the login is killed with SIGKILL.

mod irc_peers;
// The engine-redis tests' redis-server harness (a free port, a Drop guard killing its PID).
#[path = "../../engine-redis/tests/common/mod.rs"]
mod redis_server;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use irc_peers::{Ircd, Observer};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c";
const HOST: &str = "127.0.0.1";
const IRC_CONTEXT: &str = "https://sockethub.org/ns/context/platform/irc/v1.jsonld";
/// Tells a client's writer task to close the WebSocket.
const CLOSE: &str = "close";
/// A killed node's leases expire this long after its last renewal.
const LEASE_TTL_MS: &str = "1500";

/// A `switchboard serve` node on Redis; SIGKILLed (by its PID) on drop if still running.
struct Node {
    child: Child,
    addr: String,
    _db: switchboard_testpeers::TempDir,
}

impl Node {
    fn start(redis_url: &str) -> Node {
        Node::start_with(redis_url, &["--redis-presence-ttl-ms", LEASE_TTL_MS])
    }

    fn start_with(redis_url: &str, extra: &[&str]) -> Node {
        let db = switchboard_testpeers::TempDir::new("irc-cluster-db");
        let database_url = format!("sqlite://{}?mode=rwc", db.path().join("chat.db").display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--host", HOST, "--port", "0", "--database-url"])
            .arg(&database_url)
            .args(["--redis-url", redis_url])
            .args(["--request-timeout-ms", "10000"])
            .args(extra)
            .env("SWITCHBOARD_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the switchboard binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("banner");
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no banner: {line:?}"))
            .to_owned();
        Node {
            child,
            addr,
            _db: db,
        }
    }

    /// SIGTERM, and wait for the node to finish shutting down.
    fn terminate(&mut self) {
        // SAFETY: signalling the PID of a child this test started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the node");
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type WsStream = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

/// The next text frame during the handshake.
async fn next_text(stream: &mut WsStream) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("socket ended during the handshake: {other:?}"),
        }
    }
}

/// A Sockethub client: Socket.IO v5 over Engine.IO v4 on a WebSocket.
struct Client {
    nick: String,
    out: mpsc::UnboundedSender<String>,
    acks: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    next_id: AtomicU64,
    /// The server's `message` events (incoming traffic, shared results, errors).
    messages: mpsc::UnboundedReceiver<Value>,
}

impl Client {
    async fn connect(node: &Node, nick: &str) -> Client {
        let url = format!("ws://{}/sockethub/?EIO=4&transport=websocket", node.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        let (mut sink, mut stream) = ws.split();
        let open = next_text(&mut stream).await;
        assert!(open.starts_with("0{"), "open packet first: {open}");
        sink.send(Message::text("40")).await.expect("send");
        let ack = next_text(&mut stream).await;
        assert!(ack.starts_with("40{"), "connect reply: {ack}");

        let (out, mut out_rx) = mpsc::unbounded_channel::<String>();
        let acks: Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let (events, messages) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(t) = out_rx.recv().await {
                if t == CLOSE {
                    let _ = sink.close().await;
                    return;
                }
                if sink.send(Message::text(t)).await.is_err() {
                    return;
                }
            }
        });
        let pong = out.clone();
        let waiting = acks.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(t) = frame else { continue };
                let t = t.as_str();
                if t == "2" {
                    let _ = pong.send("3".into());
                } else if let Some(rest) = t.strip_prefix("43") {
                    let split = rest.find('[').expect("ack args");
                    let id: u64 = rest[..split].parse().expect("ack id");
                    let mut args: Vec<Value> = serde_json::from_str(&rest[split..]).expect("ack");
                    let tx = waiting.lock().unwrap().remove(&id);
                    if let Some(tx) = tx {
                        let _ = tx.send(args.remove(0));
                    }
                } else if let Some(rest) = t.strip_prefix("42") {
                    let args: Vec<Value> = serde_json::from_str(rest).expect("event");
                    if args[0] == "message" {
                        let _ = events.send(args[1].clone());
                    }
                }
            }
        });
        Client {
            nick: nick.to_owned(),
            out,
            acks,
            next_id: AtomicU64::new(1),
            messages,
        }
    }

    /// Close the WebSocket (the server ends the session).
    fn close(self) {
        let _ = self.out.send(CLOSE.into());
    }

    async fn emit(&self, event: &str, payload: Value) -> Value {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.acks.lock().unwrap().insert(id, tx);
        self.out
            .send(format!("42{id}{}", json!([event, payload])))
            .expect("socket open");
        tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .unwrap_or_else(|_| panic!("{}: no answer to {event} in 20 s", self.nick))
            .expect("socket open")
    }

    fn activity(&self, verb: &str) -> Value {
        json!({
            "type": verb,
            "@context": ["https://www.w3.org/ns/activitystreams", "https://sockethub.org/ns/context/v1.jsonld", IRC_CONTEXT],
            "actor": {"id": format!("{}@{HOST}", self.nick), "type": "person", "name": self.nick},
        })
    }

    /// Store credentials for `port` (with `extra` fields) and connect; the reply.
    async fn login(&self, port: u16, extra: Value) -> Value {
        let mut creds = json!({"type": "credentials", "server": HOST, "port": port, "nick": self.nick, "secure": false});
        for (k, v) in extra.as_object().expect("object") {
            creds[k] = v.clone();
        }
        let mut c = self.activity("credentials");
        c["object"] = creds;
        let reply = self.emit("credentials", c).await;
        assert!(reply.get("error").is_none(), "{reply}");
        self.emit("message", self.activity("connect")).await
    }

    async fn ok(&self, mut a: Value) -> Value {
        if a.get("@context").is_none() {
            a = self.activity(a["type"].as_str().unwrap());
        }
        let reply = self.emit("message", a).await;
        assert!(reply.get("error").is_none(), "{}: {reply}", self.nick);
        reply
    }

    async fn join(&self, channel: &str) {
        let mut a = self.activity("join");
        a["target"] = json!({"id": format!("{channel}@{HOST}"), "type": "room", "name": channel});
        self.ok(a).await;
    }

    async fn say(&self, channel: &str, text: &str) {
        let mut a = self.activity("send");
        a["target"] = json!({"id": format!("{channel}@{HOST}"), "type": "room", "name": channel});
        a["object"] = json!({"type": "message", "content": text});
        self.ok(a).await;
    }

    /// The next `message` event matching `pred` (others skipped); panics after `secs`.
    async fn expect(&mut self, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(m)) if pred(&m) => return m,
                Ok(Some(_)) => {}
                Ok(None) => panic!("{}: socket closed waiting for {what}", self.nick),
                Err(_) => panic!("{}: no {what} within {secs} s", self.nick),
            }
        }
    }
}

fn said(m: &Value, text: &str) -> bool {
    m["type"] == "send" && m["object"]["content"] == text
}

/// How many users ngircd counts on its network (`LUSERS` 251), the observer included: the
/// last 251 before the answer to a PING sent after it (so none from earlier is taken).
async fn users(watcher: &mut Observer) -> u32 {
    watcher.send("LUSERS").await;
    watcher.send("PING :lusers-done").await;
    let mut count = None;
    loop {
        let line = watcher
            .expect(|l| l.contains(" 251 ") || l.contains("lusers-done"))
            .await;
        if line.contains("lusers-done") {
            break;
        }
        count = line
            .split(":There are ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok());
    }
    count.expect("a LUSERS count")
}

#[tokio::test]
async fn sessions_on_two_nodes_share_one_irc_login_that_moves_when_its_node_dies() {
    let redis = redis_server::RedisServer::start();
    let ircd = Ircd::ngircd(Some("srvpw"));
    let mut a_node = Node::start(&redis.url());
    let b_node = Node::start(&redis.url());
    let pw = json!({"password": "srvpw"});
    let mut watcher = Observer::connect(ircd.port, "watcher", Some("srvpw")).await;
    assert_eq!(users(&mut watcher).await, 1);

    // The same nick and secret on node A and node B: one login, on A (first to connect).
    let mut a = Client::connect(&a_node, "shared").await;
    let mut b = Client::connect(&b_node, "shared").await;
    let r = a.login(ircd.port, pw.clone()).await;
    assert!(r.get("error").is_none(), "{r}");
    let r = b.login(ircd.port, pw.clone()).await;
    assert!(r.get("error").is_none(), "shared, not a second login: {r}");
    assert_eq!(
        users(&mut watcher).await,
        2,
        "exactly one IRC login for both nodes"
    );

    // Incoming traffic reaches the sessions on both nodes.
    a.join("#s").await;
    watcher.send("JOIN #s").await;
    watcher.expect(|l| l.contains(" 366 ")).await;
    watcher.send("PRIVMSG #s :to both").await;
    for c in [&mut a, &mut b] {
        c.expect("the channel message", 10, |m| said(m, "to both"))
            .await;
    }

    // B sends through the login on A; A's session is shown B's send.
    b.say("#s", "from b").await;
    watcher
        .expect(|l| l.starts_with(":shared!") && l.ends_with("PRIVMSG #s :from b"))
        .await;
    a.expect("b's send", 10, |m| said(m, "from b")).await;
    assert_eq!(users(&mut watcher).await, 2, "still one login");

    // Other credentials are another login, even across nodes: its nick collides.
    let other = Client::connect(&b_node, "shared").await;
    let r = other
        .login(ircd.port, json!({"password": "srvpw", "username": "other"}))
        .await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(e.contains("already in use"), "{e}");

    // Node A dies with its login. B's session hears the connection is gone once A's lease
    // runs out, and its next connect logs in again, now on node B.
    a_node.kill9();
    // A job B sends before anyone knows is answered with the loss, not left to time out.
    let mut void = b.activity("send");
    void["target"] = json!({"id": format!("#s@{HOST}"), "type": "room", "name": "#s"});
    void["object"] = json!({"type": "message", "content": "into the void"});
    let r = b.emit("message", void).await;
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("closed unexpectedly")),
        "{r}"
    );
    let lost = b
        .expect("the lost login", 15, |m| m["type"] == "error")
        .await;
    assert!(
        lost["error"]
            .as_str()
            .is_some_and(|e| e.contains("closed unexpectedly")),
        "{lost}"
    );
    let r = b.login(ircd.port, pw.clone()).await;
    assert!(r.get("error").is_none(), "a new login on node B: {r}");
    assert_eq!(
        users(&mut watcher).await,
        2,
        "A's login gone, B's in its place"
    );
    b.join("#s").await;
    watcher.send("PRIVMSG #s :after the move").await;
    b.expect("a message after the move", 10, |m| {
        said(m, "after the move")
    })
    .await;

    // A second session on B shares B's login.
    let mut b2 = Client::connect(&b_node, "shared").await;
    let r = b2.login(ircd.port, pw).await;
    assert!(r.get("error").is_none(), "{r}");
    watcher.send("PRIVMSG #s :to b twice").await;
    for c in [&mut b, &mut b2] {
        c.expect("the channel message", 10, |m| said(m, "to b twice"))
            .await;
    }
    assert_eq!(users(&mut watcher).await, 2);
}

#[tokio::test]
async fn anonymous_sessions_on_two_nodes_never_share_a_login() {
    let redis = redis_server::RedisServer::start();
    let ircd = Ircd::ngircd(None);
    let a_node = Node::start(&redis.url());
    let b_node = Node::start(&redis.url());
    let mut watcher = Observer::connect(ircd.port, "watcher", None).await;

    let a = Client::connect(&a_node, "anon").await;
    let b = Client::connect(&b_node, "anon").await;
    let r = a.login(ircd.port, json!({})).await;
    assert!(r.get("error").is_none(), "{r}");
    // Identical credentials without a secret: B tries a login of its own, whose nick is
    // taken by A's.
    let r = b.login(ircd.port, json!({})).await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(e.contains("already in use"), "{e}");
    // Under another nick B's own login works: two logins.
    let b2 = Client::connect(&b_node, "anon2").await;
    let r = b2.login(ircd.port, json!({})).await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(users(&mut watcher).await, 3);
}

#[tokio::test]
async fn a_shared_login_lives_while_a_session_on_another_node_uses_it() {
    let redis = redis_server::RedisServer::start();
    let ircd = Ircd::ngircd(Some("srvpw"));
    let idle = [
        "--idle-timeout-ms",
        "500",
        "--redis-presence-ttl-ms",
        LEASE_TTL_MS,
    ];
    let a_node = Node::start_with(&redis.url(), &idle);
    let b_node = Node::start_with(&redis.url(), &idle);
    let pw = json!({"password": "srvpw"});
    let mut watcher = Observer::connect(ircd.port, "watcher", Some("srvpw")).await;

    let a = Client::connect(&a_node, "keeper").await;
    let b = Client::connect(&b_node, "keeper").await;
    assert!(a.login(ircd.port, pw.clone()).await.get("error").is_none());
    assert!(b.login(ircd.port, pw.clone()).await.get("error").is_none());
    assert_eq!(users(&mut watcher).await, 2);

    // The owner's own session leaves: node A has nobody attached, but B's session still
    // uses the login, so it outlives several idle timeouts.
    a.close();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(users(&mut watcher).await, 2, "not reaped while B uses it");
    b.join("#kept").await;

    // Once B's session leaves too, nobody uses it anywhere: it is reaped.
    b.close();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while users(&mut watcher).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unused login was never reaped"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_nick_change_from_another_node_rekeys_the_shared_login() {
    let redis = redis_server::RedisServer::start();
    let ircd = Ircd::ngircd(Some("srvpw"));
    let a_node = Node::start(&redis.url());
    let b_node = Node::start(&redis.url());
    let pw = json!({"password": "srvpw"});
    let mut watcher = Observer::connect(ircd.port, "watcher", Some("srvpw")).await;

    let mut a = Client::connect(&a_node, "renamer").await;
    let mut b = Client::connect(&b_node, "renamer").await;
    assert!(a.login(ircd.port, pw.clone()).await.get("error").is_none());
    assert!(b.login(ircd.port, pw.clone()).await.get("error").is_none());
    a.join("#k").await;
    watcher.send("JOIN #k").await;
    watcher.expect(|l| l.contains(" 366 ")).await;

    // B (not the node running the login) renames it.
    let mut update = b.activity("update");
    update["target"] =
        json!({"id": format!("renamed@{HOST}"), "type": "person", "name": "renamed"});
    update["object"] = json!({"type": "address"});
    b.ok(update).await;
    watcher
        .expect(|l| l.starts_with(":renamer!") && l.ends_with("NICK :renamed"))
        .await;
    a.expect("the nick change", 10, |m| m["type"] == "update")
        .await;

    // Both sessions now reach the one login as the new actor.
    a.nick = "renamed".into();
    b.nick = "renamed".into();
    b.say("#k", "b as renamed").await;
    watcher
        .expect(|l| l.starts_with(":renamed!") && l.ends_with("PRIVMSG #k :b as renamed"))
        .await;
    a.say("#k", "a as renamed").await;
    watcher
        .expect(|l| l.starts_with(":renamed!") && l.ends_with("PRIVMSG #k :a as renamed"))
        .await;
    watcher.send("PRIVMSG #k :hello renamed").await;
    for c in [&mut a, &mut b] {
        c.expect("a message after the rename", 10, |m| {
            said(m, "hello renamed")
        })
        .await;
    }
    assert_eq!(users(&mut watcher).await, 2, "still one login");
}

#[tokio::test]
async fn a_node_shutting_down_hands_its_logins_over_at_once() {
    let redis = redis_server::RedisServer::start();
    let ircd = Ircd::ngircd(Some("srvpw"));
    // Leases far longer than the request timeout: a login that had to wait for one to run
    // out would time out instead.
    let long = ["--redis-presence-ttl-ms", "60000"];
    let mut a_node = Node::start_with(&redis.url(), &long);
    let b_node = Node::start_with(&redis.url(), &long);
    let pw = json!({"password": "srvpw"});
    let mut watcher = Observer::connect(ircd.port, "watcher", Some("srvpw")).await;

    let a = Client::connect(&a_node, "leaver").await;
    let mut b = Client::connect(&b_node, "leaver").await;
    assert!(a.login(ircd.port, pw.clone()).await.get("error").is_none());
    assert!(b.login(ircd.port, pw.clone()).await.get("error").is_none());

    // A stops cleanly: B's session is told the login stopped, and A's lease is released,
    // so B's next connect logs in on B without waiting for the lease to run out.
    a_node.terminate();
    let stopped = b
        .expect("the stopped login", 10, |m| m["type"] == "error")
        .await;
    assert_eq!(
        stopped["error"], "irc platform instance stopped",
        "{stopped}"
    );
    // ngircd frees the nick once it has read the old login's QUIT.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while users(&mut watcher).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A's login never left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = b.login(ircd.port, pw).await;
    assert!(r.get("error").is_none(), "a new login on node B: {r}");
    assert_eq!(users(&mut watcher).await, 2);
    drop(a);
}
