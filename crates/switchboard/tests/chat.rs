//! Native chat end to end: the real `switchboard` binary with SQLite on disk (and once
//! with a real PostgreSQL), driven by a real HTTP client (reqwest) and a real WebSocket
//! client (tokio-tungstenite).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_store::MessageStore;
use switchboard_testpeers::TempDir;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SECRET: &str = "test-secret-test-secret-test-secret-0123";

// The engine-redis tests' redis-server harness (a free port, a Drop guard killing its PID).
#[path = "../../engine-redis/tests/common/mod.rs"]
mod redis_server;
const WAIT: Duration = Duration::from_secs(5);

/// The SQLite database URL for a chat server keeping its data in `dir`.
fn db_url(dir: &TempDir) -> String {
    format!("sqlite://{}?mode=rwc", dir.path().join("chat.db").display())
}

/// A `switchboard serve` process on a free port; stopped (SIGTERM) on drop.
struct Server {
    child: Child,
    addr: String,
    http: reqwest::Client,
}

impl Server {
    fn start(db: &TempDir, extra: &[&str]) -> Server {
        Server::start_on(&db_url(db), extra)
    }

    /// A server on the store `database_url` names.
    fn start_on(database_url: &str, extra: &[&str]) -> Server {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args([
                "serve",
                "--port",
                "0",
                "--database-url",
                database_url,
                "--jwt-secret",
                SECRET,
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the switchboard binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no banner: {line:?}"))
            .to_owned();
        Server {
            child,
            addr,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn stop(mut self) {
        self.terminate();
    }

    /// SIGKILL, as a crash: nothing the process would still do gets done.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) {
        // Already reaped (killed): its pid may belong to another process by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Register `name` (password "password-{name}"); returns (id, token).
    async fn user(&self, name: &str) -> (i64, String) {
        let (status, body) = self
            .post(
                "/api/auth/register",
                None,
                json!({"username": name, "password": format!("password-{name}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["user"]["id"].as_i64().unwrap(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn connect(&self, token: &str) -> Client {
        let mut c = self.connect_raw(&format!("/ws?token={token}")).await;
        let hello = c.expect("connection_established").await;
        assert!(hello["userId"].is_i64(), "{hello}");
        c
    }

    async fn connect_raw(&self, path: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}{path}", self.addr))
            .await
            .expect("websocket handshake");
        Client { ws }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate();
    }
}

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    async fn send(&mut self, kind: &str, data: Value) {
        self.send_text(&json!({"type": kind, "data": data}).to_string())
            .await;
    }

    async fn send_text(&mut self, text: &str) {
        self.ws.send(Ws::Text(text.into())).await.unwrap();
    }

    /// The next frame (type, data), or `None` if nothing comes within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<(String, Value)> {
        // One deadline for the whole wait: pings (not returned) must not extend it.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??
                .ok()?;
            if let Ws::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).expect("server frames are JSON");
                return Some((v["type"].as_str().unwrap().to_owned(), v["data"].clone()));
            }
        }
    }

    /// The next frame, which must be of type `kind`.
    async fn expect(&mut self, kind: &str) -> Value {
        match self.next_within(WAIT).await {
            Some((k, data)) if k == kind => data,
            other => panic!("expected {kind}, got {other:?}"),
        }
    }

    /// The next frame of type `kind`, passing over frames of the `skip` types.
    async fn expect_past(&mut self, kind: &str, skip: &[&str]) -> Value {
        loop {
            match self.next_within(WAIT).await {
                Some((k, data)) if k == kind => return data,
                Some((k, _)) if skip.contains(&k.as_str()) => continue,
                other => panic!("expected {kind}, got {other:?}"),
            }
        }
    }

    /// The next `error` frame's message.
    async fn expect_error(&mut self) -> String {
        let data = self.expect("error").await;
        assert!(data["timestamp"].is_string(), "{data}");
        data["message"].as_str().unwrap().to_owned()
    }

    async fn expect_silence(&mut self, ms: u64) {
        if let Some(frame) = self.next_within(Duration::from_millis(ms)).await {
            panic!("expected nothing, got {frame:?}");
        }
    }

    /// Read until the server closes; returns the close code.
    async fn expect_close(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Ws::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Ws::Close(None))) | None => return u16::from(CloseCode::Status),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed instead of closing: {e}"),
            }
        }
    }
}

async fn history(s: &Server, token: &str, with: i64) -> Vec<Value> {
    let (status, body) = s
        .get(&format!("/api/messages?with={with}"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["messages"].as_array().unwrap().clone()
}

/// The `content` of each message of a history page, in page order.
fn contents(page: &Value) -> Vec<&str> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn accounts_users_and_rest_errors() {
    let db = TempDir::new("rest");
    let s = Server::start(&db, &[]);
    let (alice, token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;

    let (status, body) = s
        .post(
            "/api/auth/register",
            None,
            json!({"username": "ALICE", "password": "whatever1"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("Username already taken"))
    );
    let (status, body) = s
        .post(
            "/api/auth/register",
            None,
            json!({"username": "x", "password": "whatever1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _) = s
        .post(
            "/api/auth/register",
            None,
            json!({"username": "shortpw", "password": "1234"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let res = s
        .http
        .post(s.url("/api/auth/register"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid JSON body"),
        "{body}"
    );

    let (status, body) = s
        .post(
            "/api/auth/login",
            None,
            json!({"username": "alice", "password": "password-alice"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"], json!({"id": alice, "username": "alice"}));
    let (status, body) = s
        .post(
            "/api/auth/login",
            None,
            json!({"username": "alice", "password": "wrong-password"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::UNAUTHORIZED,
            Some("Invalid username or password")
        )
    );
    let (status, _) = s
        .post(
            "/api/auth/login",
            None,
            json!({"username": "nobody", "password": "wrong-password"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, me) = s.get("/api/auth/me", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (me["id"].as_i64(), me["username"].as_str()),
        (Some(alice), Some("alice"))
    );
    let (status, body) = s.get("/api/auth/me", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Missing bearer token"))
    );
    let (status, body) = s.get("/api/auth/me", Some("not.a.token")).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("Invalid token"))
    );

    // Online flags follow live connections.
    let _bob_ws = s.connect(&bob_token).await;
    let (status, body) = s.get("/api/users", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    let users = body["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    let online: Vec<(i64, bool)> = users
        .iter()
        .map(|u| (u["id"].as_i64().unwrap(), u["online"].as_bool().unwrap()))
        .collect();
    assert!(
        online.contains(&(bob, true)) && online.contains(&(alice, false)),
        "{body}"
    );
    let (_, body) = s.get("/api/users?search=BO", Some(&token)).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 1);
    assert_eq!(body["users"][0]["username"], "bob");
    let (status, body) = s.get(&format!("/api/users/{bob}"), Some(&token)).await;
    assert_eq!(
        (status, body["online"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, _) = s.get("/api/users/999999", Some(&token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = s.get("/api/users/abc", Some(&token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = s.get("/api/nothing-here", Some(&token)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("No such API endpoint"))
    );
    let (status, body) = s.get("/api/messages", Some(&token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, doc) = s.get("/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/auth/register", "post"),
        ("/api/auth/login", "post"),
        ("/api/users/{id}", "get"),
        ("/api/messages", "post"),
        ("/api/rooms/{id}/messages", "get"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{path} {method} documented"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(
        doc["components"]["schemas"]["SendBody"]["properties"]["clientMsgId"].is_object(),
        "{doc}"
    );
}

#[tokio::test]
async fn direct_messages_receipts_history_and_idempotency() {
    let db = TempDir::new("direct");
    let s = Server::start(&db, &[]);
    let (alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    let mut b = s.connect(&bob_token).await;

    a.send(
        "chat_message",
        json!({"receiverId": bob, "content": "hello bob", "clientMsgId": "m-1"}),
    )
    .await;
    let sent = a.expect("message_sent").await;
    assert_eq!(
        (sent["clientMsgId"].as_str(), sent["status"].as_str()),
        (Some("m-1"), Some("sent"))
    );
    let id = sent["id"].as_i64().unwrap();
    let got = b.expect("new_message").await;
    assert_eq!(got["id"].as_i64(), Some(id));
    assert_eq!(
        (got["senderId"].as_i64(), got["receiverId"].as_i64()),
        (Some(alice), Some(bob))
    );
    assert_eq!(
        (got["content"].as_str(), got["clientMsgId"].as_str()),
        (Some("hello bob"), Some("m-1"))
    );
    assert_eq!(got["senderUsername"], "alice");
    assert!(got["createdAt"].is_string());
    let delivered = a.expect("message_delivered").await;
    assert_eq!(
        (
            delivered["messageId"].as_i64(),
            delivered["clientMsgId"].as_str()
        ),
        (Some(id), Some("m-1"))
    );
    let stored = history(&s, &alice_token, bob).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["status"], "delivered", "persisted");

    // Same clientMsgId again: not stored twice, not delivered twice.
    a.send(
        "chat_message",
        json!({"receiverId": bob, "content": "hello bob", "clientMsgId": "m-1"}),
    )
    .await;
    let again = a.expect("message_sent").await;
    assert_eq!(
        (again["id"].as_i64(), again["duplicate"].as_bool()),
        (Some(id), Some(true))
    );
    b.expect_silence(300).await;
    assert_eq!(history(&s, &bob_token, alice).await.len(), 1);

    // Read receipts.
    b.send("mark_read", json!({"senderId": alice})).await;
    let ok = b.expect("mark_read_success").await;
    assert_eq!(ok["messageIds"], json!([id]));
    let read = a.expect("messages_read").await;
    assert_eq!(
        (read["readerId"].as_i64(), read["messageIds"].clone()),
        (Some(bob), json!([id]))
    );
    let stored = history(&s, &alice_token, bob).await;
    assert_eq!(stored[0]["status"], "read");
    assert!(stored[0]["readAt"].is_string());

    // REST send path, then paging newest first.
    let (status, body) = s
        .post(
            "/api/messages",
            Some(&bob_token),
            json!({"receiverId": alice, "content": "via rest"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let got = a.expect("new_message").await;
    assert_eq!(got["content"], "via rest");
    for i in 0..3 {
        a.send(
            "chat_message",
            json!({"receiverId": bob, "content": format!("n{i}")}),
        )
        .await;
        a.expect_past("message_sent", &["message_delivered"]).await;
    }
    let (_, page) = s
        .get(
            &format!("/api/messages?with={alice}&limit=2"),
            Some(&bob_token),
        )
        .await;
    assert_eq!(contents(&page), ["n2", "n1"]);
    let cursor = page["nextCursor"].as_i64().unwrap();
    let (_, page) = s
        .get(
            &format!("/api/messages?with={alice}&limit=10&before={cursor}"),
            Some(&bob_token),
        )
        .await;
    assert_eq!(contents(&page), ["n0", "via rest", "hello bob"]);
    assert!(page["nextCursor"].is_null());
}

/// Frames a client writes back to back are read as one burst and stored together: every
/// send still gets its own answer, in order, a bad frame or a refused send in the middle
/// gets its error without stopping the others, and recipients get the messages in order.
#[tokio::test]
async fn a_burst_of_pipelined_frames_is_answered_in_order() {
    let db = TempDir::new("burst");
    let s = Server::start(&db, &[]);
    let (alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let (_, general) = s
        .post("/api/rooms", Some(&alice_token), json!({"name": "general"}))
        .await;
    let general = general["id"].as_i64().unwrap();
    let (status, _) = s
        .post(
            &format!("/api/rooms/{general}/join"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, bobs) = s
        .post("/api/rooms", Some(&bob_token), json!({"name": "bobs"}))
        .await;
    let bobs = bobs["id"].as_i64().unwrap();
    let mut a = s.connect(&alice_token).await;
    // bob has just been answered `connection_established`: his offline backlog was read
    // before that, so every message of the burst reaches him live, in send order.
    let mut b = s.connect(&bob_token).await;

    let to_bob = |content: &str, id: &str| json!({"type": "chat_message", "data": {"receiverId": bob, "content": content, "clientMsgId": id}});
    let to_room = |room: i64, content: &str, id: &str| json!({"type": "chat_message", "data": {"roomId": room, "content": content, "clientMsgId": id}});
    let frames = [
        to_bob("p0", "c0"),
        to_bob("p1", "c1"),
        Value::String("{nope".into()),
        json!({"type": "chat_message", "data": {"receiverId": alice, "content": "me", "clientMsgId": "self"}}),
        to_bob("p0 again", "c0"),
        to_room(general, "r0", "g0"),
        to_room(bobs, "r1", "b1"),
        to_room(general, "r2", "g2"),
        to_bob("p3", "c3"),
    ];
    for f in &frames {
        let text = match f {
            Value::String(raw) => raw.clone(),
            other => other.to_string(),
        };
        a.ws.feed(Ws::Text(text.into())).await.unwrap();
    }
    a.ws.flush().await.unwrap();

    let mut sent = Vec::new();
    let mut errors = Vec::new();
    while sent.len() < 6 || errors.len() < 3 {
        match a.next_within(WAIT).await {
            Some((k, d)) if k == "message_sent" => sent.push(d),
            Some((k, d)) if k == "error" => errors.push((
                d["message"].as_str().unwrap().to_owned(),
                d["clientMsgId"].as_str().map(str::to_owned),
            )),
            Some((k, _)) if k == "message_delivered" => {}
            other => panic!("expected answers to the burst, got {other:?}"),
        }
    }
    let keys: Vec<&str> = sent
        .iter()
        .map(|d| d["clientMsgId"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["c0", "c1", "c0", "g0", "g2", "c3"],
        "one answer per send, in order"
    );
    let ids: Vec<i64> = sent.iter().map(|d| d["id"].as_i64().unwrap()).collect();
    assert_eq!(sent[2]["duplicate"], true, "{}", sent[2]);
    assert_eq!(ids[2], ids[0], "the duplicate names the stored message");
    let fresh = [ids[0], ids[1], ids[3], ids[4], ids[5]];
    assert!(
        fresh.windows(2).all(|w| w[0] < w[1]),
        "stored in send order: {ids:?}"
    );
    errors.sort();
    assert_eq!(
        errors,
        [
            (
                "Cannot send message to yourself".to_owned(),
                Some("self".to_owned())
            ),
            (
                "Invalid message format. Please send valid JSON.".to_owned(),
                None
            ),
            (
                "You are not a member of this room".to_owned(),
                Some("b1".to_owned())
            ),
        ]
    );

    let mut got = Vec::new();
    while got.len() < 5 {
        let m = b.expect("new_message").await;
        got.push(m["content"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        got,
        ["p0", "p1", "r0", "r2", "p3"],
        "delivered once each, in order"
    );
    b.expect_silence(300).await;
    let (_, page) = s
        .get(&format!("/api/rooms/{bobs}/messages"), Some(&bob_token))
        .await;
    assert_eq!(
        contents(&page),
        Vec::<&str>::new(),
        "nothing stored in the refused room"
    );
}

#[tokio::test]
async fn rooms_membership_and_fan_out() {
    let db = TempDir::new("rooms");
    let s = Server::start(&db, &[]);
    let (alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let (_carol, carol_token) = s.user("carol").await;

    let (status, room) = s
        .post("/api/rooms", Some(&alice_token), json!({"name": "general"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    let room_id = room["id"].as_i64().unwrap();
    let (status, body) = s
        .post(
            &format!("/api/rooms/{room_id}/join"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["joined"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let (status, _) = s
        .post("/api/rooms/999999/join", Some(&bob_token), json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, members) = s
        .get(&format!("/api/rooms/{room_id}/members"), Some(&bob_token))
        .await;
    let ids: Vec<i64> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [alice, bob]);
    let (status, _) = s
        .get(&format!("/api/rooms/{room_id}/members"), Some(&carol_token))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let mut a = s.connect(&alice_token).await;
    let mut a2 = s.connect(&alice_token).await;
    let mut b = s.connect(&bob_token).await;
    let mut c = s.connect(&carol_token).await;
    a.send(
        "chat_message",
        json!({"roomId": room_id, "content": "hi room"}),
    )
    .await;
    let sent = a.expect("message_sent").await;
    assert_eq!(sent["roomId"].as_i64(), Some(room_id));
    for member in [&mut b, &mut a2] {
        let got = member.expect("new_message").await;
        assert_eq!(
            (got["roomId"].as_i64(), got["content"].as_str()),
            (Some(room_id), Some("hi room"))
        );
    }
    c.expect_silence(300).await;

    c.send(
        "chat_message",
        json!({"roomId": room_id, "content": "let me in"}),
    )
    .await;
    assert_eq!(c.expect_error().await, "You are not a member of this room");
    c.send(
        "chat_message",
        json!({"roomId": 999999, "content": "anyone?"}),
    )
    .await;
    assert_eq!(c.expect_error().await, "Room not found");

    b.send("mark_read", json!({"roomId": room_id})).await;
    let ok = b.expect("mark_read_success").await;
    assert_eq!(ok["lastReadId"], sent["id"]);
    for device in [&mut a, &mut a2] {
        let read = device.expect("messages_read").await;
        assert_eq!(
            (read["roomId"].as_i64(), read["readerId"].as_i64()),
            (Some(room_id), Some(bob))
        );
    }

    let (_, page) = s
        .get(&format!("/api/rooms/{room_id}/messages"), Some(&bob_token))
        .await;
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        1,
        "the refused sends left nothing"
    );
    let (status, _) = s
        .get(
            &format!("/api/rooms/{room_id}/messages"),
            Some(&carol_token),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = s
        .post(
            &format!("/api/rooms/{room_id}/leave"),
            Some(&bob_token),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, body["left"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    a.send(
        "chat_message",
        json!({"roomId": room_id, "content": "bye bob"}),
    )
    .await;
    a.expect("message_sent").await;
    a2.expect("new_message").await;
    b.expect_silence(300).await;
    let (_, mine) = s.get("/api/rooms?mine=true", Some(&bob_token)).await;
    assert_eq!(mine["rooms"], json!([]));
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let db = TempDir::new("bad");
    let s = Server::start(&db, &["--max-message-bytes", "100"]);
    let (alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    let mut b = s.connect(&bob_token).await;

    a.send_text("{not json").await;
    assert_eq!(
        a.expect_error().await,
        "Invalid message format. Please send valid JSON."
    );
    a.send("dance", json!({})).await;
    assert_eq!(a.expect_error().await, "Unknown message type: dance");
    a.send("chat_message", json!({"content": "to whom?"})).await;
    assert_eq!(
        a.expect_error().await,
        "Missing required fields: receiverId and content"
    );
    a.send("chat_message", json!({"receiverId": bob})).await;
    assert_eq!(
        a.expect_error().await,
        "Missing required fields: receiverId and content"
    );
    a.send(
        "chat_message",
        json!({"receiverId": bob, "content": "x".repeat(101), "clientMsgId": "big"}),
    )
    .await;
    let err = a.expect("error").await;
    assert_eq!(
        err["message"],
        "Message content is too long: at most 100 bytes"
    );
    assert_eq!(err["clientMsgId"], "big");
    a.send(
        "chat_message",
        json!({"receiverId": alice, "content": "me"}),
    )
    .await;
    assert_eq!(a.expect_error().await, "Cannot send message to yourself");
    a.send(
        "chat_message",
        json!({"receiverId": bob, "senderId": bob, "content": "forged"}),
    )
    .await;
    assert_eq!(
        a.expect_error().await,
        "senderId does not match the authenticated user"
    );
    a.send(
        "chat_message",
        json!({"receiverId": 999999, "content": "ghost"}),
    )
    .await;
    assert_eq!(a.expect_error().await, "Receiver not found");
    a.send(
        "chat_message",
        json!({"receiverId": "abc", "content": "bad id"}),
    )
    .await;
    assert_eq!(
        a.expect_error().await,
        "receiverId must be a user id (an integer)"
    );
    let (status, body) = s
        .post(
            "/api/messages",
            Some(&alice_token),
            json!({"receiverId": bob, "senderId": bob, "content": "forged"}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::FORBIDDEN,
            Some("senderId does not match the authenticated user")
        )
    );

    b.expect_silence(300).await;
    assert!(
        history(&s, &alice_token, bob).await.is_empty(),
        "nothing was stored"
    );
    // The connection is still good.
    a.send(
        "chat_message",
        json!({"receiverId": bob, "content": "finally", "senderId": alice}),
    )
    .await;
    a.expect("message_sent").await;
    assert_eq!(b.expect("new_message").await["content"], "finally");
}

#[tokio::test]
async fn typing_is_throttled_and_presence_is_reported() {
    let db = TempDir::new("typing");
    let s = Server::start(&db, &[]);
    let (alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    a.send("get_online_users", json!({})).await;
    let online = a.expect("online_users").await;
    assert_eq!(online["users"], json!([{"id": alice, "username": "alice"}]));

    let mut b = s.connect(&bob_token).await;
    let came = a.expect("user_online").await;
    assert_eq!(
        (came["userId"].as_i64(), came["username"].as_str()),
        (Some(bob), Some("bob"))
    );

    for _ in 0..3 {
        b.send("typing_start", json!({"receiverId": alice})).await;
    }
    let t = a.expect("typing_indicator").await;
    assert_eq!(
        (t["userId"].as_i64(), t["isTyping"].as_bool()),
        (Some(bob), Some(true))
    );
    a.expect_silence(400).await;
    b.send("typing_stop", json!({"receiverId": alice})).await;
    assert_eq!(a.expect("typing_indicator").await["isTyping"], false);

    // A second device keeps bob online; the last one leaving takes him offline.
    let mut b2 = s.connect(&bob_token).await;
    a.send(
        "chat_message",
        json!({"receiverId": bob, "content": "both?"}),
    )
    .await;
    a.expect("message_sent").await;
    assert_eq!(b.expect("new_message").await["content"], "both?");
    assert_eq!(b2.expect("new_message").await["content"], "both?");
    a.expect("message_delivered").await;
    drop(b);
    a.expect_silence(300).await;
    b2.ws.close(None).await.unwrap();
    let gone = a.expect("user_offline").await;
    assert_eq!(gone["userId"].as_i64(), Some(bob));
    assert!(gone["lastSeen"].is_string());
    let (_, user) = s
        .get(&format!("/api/users/{bob}"), Some(&alice_token))
        .await;
    assert_eq!(
        (user["online"].as_bool(), user["lastSeen"].clone()),
        (Some(false), gone["lastSeen"].clone())
    );
}

#[tokio::test]
async fn close_codes_and_token_expiry() {
    let db = TempDir::new("close");
    let s = Server::start(&db, &["--jwt-ttl-secs", "2"]);
    let (_, token) = s.user("alice").await;
    assert_eq!(s.connect_raw("/ws").await.expect_close().await, 4001);
    assert_eq!(
        s.connect_raw("/ws?token=garbage")
            .await
            .expect_close()
            .await,
        4002
    );
    // A well-signed token for a user that does not exist.
    let ghost = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "999999", "username": "ghost", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        s.connect_raw(&format!("/ws?token={ghost}"))
            .await
            .expect_close()
            .await,
        4003
    );

    // The token runs out mid-session: a clear error, then 4002.
    let mut a = s.connect(&token).await;
    let err = tokio::time::timeout(Duration::from_secs(4), a.expect_error())
        .await
        .expect("expiry within its ttl");
    assert_eq!(err, "Token expired");
    assert_eq!(a.expect_close().await, 4002);
    assert_eq!(
        s.connect_raw(&format!("/ws?token={token}"))
            .await
            .expect_close()
            .await,
        4002
    );
}

#[tokio::test]
async fn single_session_replaces_the_older_connection() {
    let db = TempDir::new("single");
    let s = Server::start(&db, &["--single-session"]);
    let (_, token) = s.user("alice").await;
    let mut first = s.connect(&token).await;
    let _second = s.connect(&token).await;
    assert_eq!(first.expect_close().await, 4005);
}

#[tokio::test]
async fn frames_over_the_rate_limit_get_an_error_and_the_next_window_works() {
    let db = TempDir::new("rate");
    let limit = [
        "--chat-rate-limit-max",
        "3",
        "--chat-rate-limit-window-ms",
        "1500",
    ];
    let s = Server::start(&db, &limit);
    let (_, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    let mut b = s.connect(&bob_token).await;

    // A burst of five in one window: three are answered, two refused, the send among them
    // with its clientMsgId; the connection stays open.
    for _ in 0..4 {
        a.send("mark_read", json!({"senderId": bob})).await;
    }
    let over = json!({"receiverId": bob, "content": "too fast", "clientMsgId": "c-over"});
    a.send("chat_message", over).await;
    let (mut answered, mut refused) = (0, Vec::new());
    for _ in 0..5 {
        match a.next_within(WAIT).await {
            Some((kind, _)) if kind == "mark_read_success" => answered += 1,
            Some((kind, data)) if kind == "error" => refused.push(data),
            other => panic!("expected an answer or an error, got {other:?}"),
        }
    }
    assert_eq!(answered, 3);
    assert_eq!(refused.len(), 2, "{refused:?}");
    for data in &refused {
        let message = data["message"].as_str().unwrap();
        assert!(
            message.starts_with("Rate limit exceeded: at most 3 frames per 1500 ms"),
            "{message}"
        );
        assert!(data["timestamp"].is_string(), "{data}");
    }
    assert_eq!(refused[1]["clientMsgId"], "c-over");
    b.expect_silence(300).await;
    assert!(
        history(&s, &alice_token, bob).await.is_empty(),
        "nothing stored"
    );

    // The next window takes frames again.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let ok = json!({"receiverId": bob, "content": "in time", "clientMsgId": "c-ok"});
    a.send("chat_message", ok).await;
    assert_eq!(a.expect("message_sent").await["clientMsgId"], "c-ok");
    assert_eq!(b.expect("new_message").await["content"], "in time");
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_refused_with_429() {
    let db = TempDir::new("per-ip");
    let s = Server::start(&db, &["--chat-max-connections-per-ip", "2"]);
    let (_, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    let b = s.connect(&bob_token).await;

    let url = format!("ws://{}/ws?token={bob_token}", s.addr);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                    .expect("a JSON body");
            assert_eq!(
                body["error"],
                "Too many connections from this address: at most 2"
            );
        }
        Ok(_) => panic!("a third connection from one address was accepted"),
        Err(e) => panic!("expected HTTP 429, got {e}"),
    }

    // The two already open are untouched.
    a.send(
        "chat_message",
        json!({"receiverId": bob, "content": "still here"}),
    )
    .await;
    a.expect("message_sent").await;
    let mut b = b;
    assert_eq!(b.expect("new_message").await["content"], "still here");

    // A connection that ends gives its place back.
    b.ws.close(None).await.unwrap();
    drop(b);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut again = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => break Client { ws },
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the freed place was not given back: {e}"),
        }
    };
    again.expect("connection_established").await;
}

#[tokio::test]
async fn offline_messages_survive_a_restart_and_arrive_in_order() {
    let db = TempDir::new("offline");
    let s = Server::start(&db, &[]);
    let (_alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    for i in 0..5 {
        a.send("chat_message", json!({"receiverId": bob, "content": format!("offline {i}"), "clientMsgId": format!("o{i}")})).await;
        assert_eq!(a.expect("message_sent").await["status"], "sent");
    }
    drop(a);
    s.stop();

    let s = Server::start(&db, &[]);
    let mut a = s.connect(&alice_token).await;
    let mut b = s.connect(&bob_token).await;
    for i in 0..5 {
        let got = b.expect("new_message").await;
        assert_eq!(got["content"], format!("offline {i}"), "in send order");
    }
    b.expect_silence(300).await;
    let mut receipts = Vec::new();
    for _ in 0..5 {
        receipts.push(
            a.expect("message_delivered").await["clientMsgId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(receipts, ["o0", "o1", "o2", "o3", "o4"]);
    drop(b);
    // Delivered once: a new connection gets no backlog.
    let mut b = s.connect(&bob_token).await;
    b.expect_silence(300).await;
}

/// A message answered with `message_sent` survives the server being killed right after,
/// before the store's writer commits the group it is in (the redo log runs it again on
/// the next start), with the id it was answered with, in order, delivered once.
#[tokio::test]
async fn answered_messages_survive_a_kill_of_the_server() {
    let db = TempDir::new("killed");
    let s = Server::start(&db, &["--chat-rate-limit-max", "0"]);
    let (_alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    for i in 0..50 {
        a.send(
            "chat_message",
            json!({"receiverId": bob, "content": format!("k{i}"), "clientMsgId": format!("k{i}")}),
        )
        .await;
    }
    let mut answered = Vec::new();
    for _ in 0..50 {
        answered.push(a.expect("message_sent").await["id"].as_i64().unwrap());
    }
    s.kill();

    let s = Server::start(&db, &[]);
    let mut b = s.connect(&bob_token).await;
    let mut got = Vec::new();
    for i in 0..50 {
        let m = b.expect("new_message").await;
        assert_eq!(m["content"], format!("k{i}"), "in send order");
        got.push(m["id"].as_i64().unwrap());
    }
    assert_eq!(got, answered, "the ids message_sent gave");
    b.expect_silence(300).await;
}

/// A clean stop (SIGTERM) closes every connection with 1001 and lets each end as a
/// disconnect does before the process exits: the user connected at the stop has a
/// `lastSeen` at the next start. The store closes too: the database file alone holds
/// everything, with no write-ahead log left beside it (a copy of the file is a backup).
#[tokio::test]
async fn a_clean_stop_records_last_seen_and_closes_the_store() {
    let db = TempDir::new("clean-stop");
    let s = Server::start(&db, &[]);
    let (alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    a.send(
        "chat_message",
        json!({"receiverId": bob, "content": "before the stop"}),
    )
    .await;
    a.expect("message_sent").await;
    let (_, online) = s
        .get(&format!("/api/users/{alice}"), Some(&alice_token))
        .await;
    assert_eq!(online["online"], true);
    assert!(online["lastSeen"].is_null(), "never disconnected: {online}");
    s.stop();
    assert_eq!(a.expect_close().await, 1001);
    let file = |suffix: &str| db.path().join(format!("chat.db{suffix}"));
    assert!(file("").exists());
    assert!(
        !file("-wal").exists(),
        "the log was folded into the database file"
    );

    let s = Server::start(&db, &[]);
    let (_, gone) = s
        .get(&format!("/api/users/{alice}"), Some(&alice_token))
        .await;
    assert_eq!(gone["online"], false);
    let (Some(seen), Some(created)) = (gone["lastSeen"].as_str(), gone["createdAt"].as_str())
    else {
        panic!("a lastSeen and a createdAt: {gone}");
    };
    assert!(seen >= created, "{seen} is after {created}");
    let mut b = s.connect(&bob_token).await;
    assert_eq!(b.expect("new_message").await["content"], "before the stop");
}

/// A backlog longer than any page limit arrives whole, in order, at one connect (the
/// connection used to stop after 40 pages of 500 and leave the rest for the next one).
///
/// Then a read mark takes all of it at once, and its receipts stay frames a client can
/// take: the sender hears every id, at most 1,000 to a `messages_read` frame; the reader
/// gets one `mark_read_success` with the count, the newest 1,000 ids and the newest id
/// read. Both connections stay open (a single frame listing all 24,000 ids used to
/// outgrow the server's write limit and drop them both).
#[tokio::test]
async fn a_long_backlog_arrives_whole_and_is_read_in_bounded_frames() {
    const COUNT: usize = 24_000;
    let db = TempDir::new("longbacklog");
    let s = Server::start(&db, &["--chat-rate-limit-max", "0"]);
    let Backlogged {
        alice,
        mut a,
        bob,
        bob_token,
        mut b,
        sent,
    } = backlog_of(&s, COUNT).await;
    b.expect_silence(300).await;
    drop(b);
    // Delivered once: a new connection gets no backlog.
    let mut b = s.connect(&bob_token).await;
    b.expect_silence(300).await;

    // Bob reads it all in one mark.
    b.send("mark_read", json!({"senderId": alice})).await;
    let ok = b.expect("mark_read_success").await;
    let newest: Vec<Value> = sent[COUNT - 1000..].iter().map(|id| json!(id)).collect();
    assert_eq!(ok["count"], COUNT);
    assert_eq!(ok["messageIds"], Value::Array(newest));
    assert_eq!(ok["lastReadId"], sent[COUNT - 1]);

    let read = read_receipts(&mut a, bob, sent[COUNT - 1], COUNT).await;
    assert_eq!(read, sent, "every id, in order, once");

    // Both connections are still open and answer.
    for client in [&mut a, &mut b] {
        client.send("get_online_users", json!({})).await;
        client
            .expect_past("online_users", &["message_delivered", "user_online"])
            .await;
    }
}

/// A read mark that fails part-way says so, and loses nothing. The mark goes in slices of
/// 1,000; here a trigger put into the server's database refuses the second slice. The
/// reader hears what was marked (`mark_read_success`) and then an error saying the newer
/// messages are still unread (it used to hear success alone); the sender gets receipts for
/// exactly the marked ones; a later mark takes the rest.
#[tokio::test]
async fn a_read_mark_cut_short_says_so_and_a_later_mark_takes_the_rest() {
    const COUNT: usize = 1_500;
    let db = TempDir::new("cutshort");
    let s = Server::start(&db, &["--chat-rate-limit-max", "0"]);
    let Backlogged {
        alice,
        mut a,
        bob,
        mut b,
        sent,
        ..
    } = backlog_of(&s, COUNT).await;

    let sql = rusqlite::Connection::open(db.path().join("chat.db")).unwrap();
    sql.busy_timeout(WAIT).unwrap();
    sql.execute_batch(&format!(
        "CREATE TRIGGER refuse_read BEFORE UPDATE OF status ON messages \
         WHEN OLD.id = {} AND NEW.status = 'read' \
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        sent[1_200]
    ))
    .unwrap();
    b.send("mark_read", json!({"senderId": alice})).await;
    let ok = b.expect("mark_read_success").await;
    assert_eq!(ok["count"], 1_000);
    assert_eq!(ok["lastReadId"], sent[999]);
    assert_eq!(
        b.expect_error().await,
        "Could not mark every message read: 1000 were, newer ones are still unread. \
         Please try again."
    );
    assert_eq!(
        read_receipts(&mut a, bob, sent[999], 1_000).await,
        sent[..1_000]
    );

    sql.execute_batch("DROP TRIGGER refuse_read").unwrap();
    b.send("mark_read", json!({"senderId": alice})).await;
    let ok = b.expect("mark_read_success").await;
    assert_eq!(ok["count"], 500);
    assert_eq!(ok["lastReadId"], sent[COUNT - 1]);
    assert_eq!(
        read_receipts(&mut a, bob, sent[COUNT - 1], 500).await,
        sent[1_000..]
    );
    a.expect_silence(300).await;
    b.expect_silence(300).await;
}

/// Alice (`a`) and bob (`b`), connected, after bob received a backlog of `sent`.
struct Backlogged {
    alice: i64,
    a: Client,
    bob: i64,
    bob_token: String,
    b: Client,
    sent: Vec<i64>,
}

/// Alice sends `count` one-byte messages to bob while he is offline (the rate limit must
/// be off); bob then connects and gets all of them as his backlog, in send order.
async fn backlog_of(s: &Server, count: usize) -> Backlogged {
    let (alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    let sent = send_many(&mut a, bob, count).await;
    let mut b = s.connect(&bob_token).await;
    let mut got = Vec::with_capacity(count);
    for _ in 0..count {
        got.push(b.expect("new_message").await["id"].as_i64().unwrap());
    }
    assert_eq!(got, sent, "all of it, in send order");
    Backlogged {
        alice,
        a,
        bob,
        bob_token,
        b,
        sent,
    }
}

/// The ids of the `messages_read` frames `a` gets from `reader` until it has `count`, each
/// frame of at most 1,000 ids and naming `last` as the newest read (delivery receipts on
/// the way are passed over).
async fn read_receipts(a: &mut Client, reader: i64, last: i64, count: usize) -> Vec<i64> {
    let mut read = Vec::with_capacity(count);
    while read.len() < count {
        let frame = a.expect_past("messages_read", &["message_delivered"]).await;
        assert_eq!(frame["readerId"], reader);
        assert_eq!(frame["lastReadId"], last);
        let ids = frame["messageIds"].as_array().unwrap();
        assert!(ids.len() <= 1000, "{} ids in one frame", ids.len());
        read.extend(ids.iter().map(|id| id.as_i64().unwrap()));
    }
    assert_eq!(read.len(), count, "{read:?}");
    read
}

#[tokio::test]
async fn a_connection_that_stops_answering_pings_is_closed_and_goes_offline() {
    let db = TempDir::new("ping");
    let s = Server::start(&db, &["--ping-interval-ms", "200"]);
    let (_, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    a.send("get_online_users", json!({})).await;
    a.expect("online_users").await;
    // Bob's client never reads again, so it never answers a ping.
    let _b = s.connect(&bob_token).await;
    assert_eq!(
        a.expect_past("user_online", &[]).await["userId"].as_i64(),
        Some(bob)
    );
    // Alice keeps reading (her client answers pings) and sees bob leave.
    let gone = a.expect("user_offline").await;
    assert_eq!(gone["userId"].as_i64(), Some(bob));
    a.expect_silence(500).await;
}

/// Alice sends `count` direct messages of `size` bytes to `to`, each once the previous one
/// has its `message_sent`, and returns their ids; any other frame meanwhile goes to `other`.
async fn flood(
    a: &mut Client,
    to: i64,
    count: usize,
    size: usize,
    mut other: impl FnMut((String, Value)),
) -> Vec<i64> {
    let mut sent = Vec::with_capacity(count);
    for i in 0..count {
        let content = format!("{i:02}{}", "x".repeat(size - 2));
        a.send(
            "chat_message",
            json!({"receiverId": to, "content": content}),
        )
        .await;
        loop {
            match a.next_within(WAIT).await {
                Some((k, data)) if k == "message_sent" => {
                    sent.push(data["id"].as_i64().unwrap());
                    break;
                }
                Some(frame) => other(frame),
                None => panic!("no message_sent for message {i}"),
            }
        }
    }
    sent
}

/// `count` one-byte messages from `a` to `to`, 500 in flight at a time (the rate limit
/// must be off); returns their ids. Receipts on the way are passed over.
async fn send_many(a: &mut Client, to: i64, count: usize) -> Vec<i64> {
    const WINDOW: usize = 500;
    let mut sent = Vec::with_capacity(count);
    while sent.len() < count {
        let window = WINDOW.min(count - sent.len());
        for _ in 0..window {
            a.send("chat_message", json!({"receiverId": to, "content": "x"}))
                .await;
        }
        for _ in 0..window {
            let ack = a.expect_past("message_sent", &["message_delivered"]).await;
            sent.push(ack["id"].as_i64().unwrap());
        }
    }
    sent
}

/// "Delivered" means written to the recipient's open connection. Bob's client stops
/// reading until the server's writes to him stall, then closes: what the server had queued
/// for him by then was never written, so it stays undelivered and comes as his offline
/// backlog, and Alice hears `message_delivered` for exactly what reached him.
#[tokio::test]
async fn messages_queued_for_a_connection_that_closes_come_as_backlog() {
    const SIZE: usize = 256 * 1024;
    // Far more than loopback socket buffers hold (4 MB send buffer at most here).
    const COUNT: usize = 40;
    let db = TempDir::new("closing");
    let s = Server::start(&db, &["--max-message-bytes", &SIZE.to_string()]);
    let (_, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    a.send("get_online_users", json!({})).await;
    a.expect("online_users").await;
    let mut b = s.connect(&bob_token).await;
    assert_eq!(a.expect("user_online").await["userId"].as_i64(), Some(bob));

    let mut delivered = Vec::new();
    // Receipts are collected; Bob coming back online is no surprise.
    let note = |(kind, data): (String, Value), delivered: &mut Vec<i64>| match kind.as_str() {
        "message_delivered" => delivered.push(data["messageId"].as_i64().unwrap()),
        "user_online" => assert_eq!(data["userId"].as_i64(), Some(bob)),
        _ => panic!("unexpected {kind} {data}"),
    };
    let sent = flood(&mut a, bob, COUNT, SIZE, |frame| {
        note(frame, &mut delivered)
    })
    .await;

    // Bob closes, then reads what the server wrote to him.
    b.ws.close(None).await.unwrap();
    let mut first = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, b.ws.next()).await {
            Ok(Some(Ok(Ws::Text(text)))) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["type"], "new_message");
                first.push(v["data"]["id"].as_i64().unwrap());
            }
            Ok(Some(Ok(Ws::Close(_))) | Some(Err(_)) | None) => break,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("bob's connection did not end"),
        }
    }
    loop {
        match a.next_within(WAIT).await {
            Some((k, data)) if k == "user_offline" => {
                assert_eq!(data["userId"].as_i64(), Some(bob));
                break;
            }
            Some(frame) => note(frame, &mut delivered),
            None => panic!("bob never went offline"),
        }
    }
    while let Some(frame) = a.next_within(Duration::from_millis(300)).await {
        note(frame, &mut delivered);
    }
    delivered.sort_unstable();
    assert_eq!(
        delivered, first,
        "message_delivered for exactly what Bob got"
    );

    // The rest, once each, when he connects again; and Alice hears it delivered.
    let mut b = s.connect(&bob_token).await;
    assert!(
        first.len() < sent.len(),
        "bob got every message: the server wrote to his closed connection, or its \
         writes to him never stalled (then send more than {COUNT})"
    );
    let mut backlog = Vec::new();
    while first.len() + backlog.len() < sent.len() {
        backlog.push(b.expect("new_message").await["id"].as_i64().unwrap());
    }
    b.expect_silence(300).await;
    let mut all = [first, backlog].concat();
    all.sort_unstable();
    assert_eq!(all, sent, "every message once, none lost");
    while delivered.len() < sent.len() {
        match a.next_within(WAIT).await {
            Some(frame) => note(frame, &mut delivered),
            None => break,
        }
    }
    delivered.sort_unstable();
    assert_eq!(delivered, sent, "the backlog is reported delivered");
}

/// A client that stops reading while messages keep coming fills the socket's buffers, and
/// the server's write to it stalls. The server gives up on it within a ping interval (the
/// user goes offline, as with a missed pong) and what it could not write comes as backlog.
#[tokio::test]
async fn a_connection_whose_writes_stall_is_closed_and_keeps_its_backlog() {
    const SIZE: usize = 256 * 1024;
    const COUNT: usize = 40;
    let db = TempDir::new("stall");
    let s = Server::start(
        &db,
        &[
            "--max-message-bytes",
            &SIZE.to_string(),
            "--ping-interval-ms",
            "1000",
        ],
    );
    let (_, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let mut a = s.connect(&alice_token).await;
    a.send("get_online_users", json!({})).await;
    a.expect("online_users").await;
    // Bob's client never reads: it neither takes messages nor answers pings.
    let stalled = s.connect(&bob_token).await;
    assert_eq!(a.expect("user_online").await["userId"].as_i64(), Some(bob));

    let (mut delivered, mut offline) = (Vec::new(), false);
    // Receipts are collected; `true` once Bob is reported offline.
    let note = |(kind, data): (String, Value), delivered: &mut Vec<i64>| match kind.as_str() {
        "message_delivered" => {
            delivered.push(data["messageId"].as_i64().unwrap());
            false
        }
        "user_offline" => {
            assert_eq!(data["userId"].as_i64(), Some(bob));
            true
        }
        _ => panic!("unexpected {kind} {data}"),
    };
    let sent = flood(&mut a, bob, COUNT, SIZE, |frame| {
        offline |= note(frame, &mut delivered);
    })
    .await;
    // Goes offline although its socket is still open: the server stopped waiting on it.
    while !offline {
        match a.next_within(WAIT).await {
            Some(frame) => offline |= note(frame, &mut delivered),
            None => panic!("a client that stopped reading kept its connection"),
        }
    }
    while let Some(frame) = a.next_within(Duration::from_millis(300)).await {
        note(frame, &mut delivered);
    }
    assert!(
        delivered.len() < sent.len(),
        "every message was written to bob: send more than {COUNT} to stall the writes"
    );

    // What was not written comes, once each, on his next connection.
    let mut b = s.connect(&bob_token).await;
    let mut backlog = Vec::new();
    while delivered.len() + backlog.len() < sent.len() {
        backlog.push(b.expect("new_message").await["id"].as_i64().unwrap());
    }
    b.expect_silence(300).await;
    let mut all = [delivered, backlog].concat();
    all.sort_unstable();
    assert_eq!(
        all, sent,
        "each message either written once or in the backlog"
    );
    drop(stalled);
}

#[tokio::test]
async fn eddsa_tokens_from_pem_keys() {
    let db = TempDir::new("eddsa");
    let private = db.path().join("ed.pem");
    let public = db.path().join("ed.pub.pem");
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let s = Server::start(
        &db,
        &[
            "--jwt-algorithm",
            "EdDSA",
            "--jwt-public-key",
            public.to_str().unwrap(),
            "--jwt-private-key",
            private.to_str().unwrap(),
        ],
    );
    let (alice, token) = s.user("alice").await;
    let header = token.split('.').next().unwrap();
    assert!(header.starts_with("eyJ"), "a JWT");
    let (status, me) = s.get("/api/auth/me", Some(&token)).await;
    assert_eq!((status, me["id"].as_i64()), (StatusCode::OK, Some(alice)));
    let _ws = s.connect(&token).await;
    // An HS256 token signed with the old shared secret is refused.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": alice.to_string(), "username": "alice", "exp": 4_000_000_000u64}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let (status, _) = s.get("/api/auth/me", Some(&forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.connect_raw(&format!("/ws?token={forged}"))
            .await
            .expect_close()
            .await,
        4002
    );
}

#[tokio::test]
async fn user_add_creates_an_account_the_server_accepts() {
    let db = TempDir::new("useradd");
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "user",
            "add",
            "carol",
            "--database-url",
            &db_url(&db),
            "--jwt-secret",
            SECRET,
        ])
        .env("SWITCHBOARD_USER_PASSWORD", "carol-password")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("created user carol (id "), "{text}");
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("a token")
        .to_owned();

    let again = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["user", "add", "carol", "--database-url", &db_url(&db)])
        .env("SWITCHBOARD_USER_PASSWORD", "carol-password")
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("Username already taken"));

    let s = Server::start(&db, &[]);
    let (status, me) = s.get("/api/auth/me", Some(&token)).await;
    assert_eq!(
        (status, me["username"].as_str()),
        (StatusCode::OK, Some("carol"))
    );
    let (status, _) = s
        .post(
            "/api/auth/login",
            None,
            json!({"username": "carol", "password": "carol-password"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn chat_runs_on_postgres_and_its_messages_outlive_the_server() {
    let pg = switchboard_store::test_postgres::TempPostgres::start();
    let s = Server::start_on(&pg.url(), &[]);
    let (alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let (status, body) = s
        .post(
            "/api/auth/register",
            None,
            json!({"username": "Alice", "password": "whatever1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let mut a = s.connect(&alice_token).await;
    // Alice watches presence (only watchers hear user_online / user_offline).
    a.send("get_online_users", json!({})).await;
    a.expect("online_users").await;
    let mut b = s.connect(&bob_token).await;
    assert_eq!(a.expect("user_online").await["userId"].as_i64(), Some(bob));
    a.send(
        "chat_message",
        json!({"receiverId": bob, "content": "hello over postgres", "clientMsgId": "pg-1"}),
    )
    .await;
    let id = a.expect("message_sent").await["id"].as_i64().unwrap();
    let got = b.expect("new_message").await;
    assert_eq!(
        (got["id"].as_i64(), got["content"].as_str()),
        (Some(id), Some("hello over postgres"))
    );
    a.expect("message_delivered").await;
    // Bob's connection drops; once Alice sees him offline (as a user would), a message to
    // him waits in PostgreSQL.
    drop(b);
    let gone = a.expect("user_offline").await;
    assert_eq!(gone["userId"].as_i64(), Some(bob));
    let (_, user) = s
        .get(&format!("/api/users/{bob}"), Some(&alice_token))
        .await;
    assert_eq!(
        (user["online"].as_bool(), user["lastSeen"].clone()),
        (Some(false), gone["lastSeen"].clone()),
        "last seen is stored in PostgreSQL"
    );
    a.send(
        "chat_message",
        json!({"receiverId": bob, "content": "while you were away", "clientMsgId": "pg-2"}),
    )
    .await;
    assert_eq!(a.expect("message_sent").await["status"], "sent");
    a.expect_silence(300).await;
    drop(a);
    s.stop();

    // The rows are in PostgreSQL, not in a local file.
    let store = switchboard_store::PgStore::open(&pg.url()).await.unwrap();
    let stored = switchboard_store::MessageStore::message(&store, id)
        .await
        .unwrap()
        .expect("in PostgreSQL");
    assert_eq!((stored.sender_id, stored.receiver_id), (alice, Some(bob)));
    store.close().await;

    // A new server on the same database: history and the offline message are there.
    let s = Server::start_on(&pg.url(), &[]);
    let mut b = s.connect(&bob_token).await;
    assert_eq!(
        b.expect("new_message").await["content"],
        "while you were away"
    );
    let messages = history(&s, &bob_token, alice).await;
    let contents: Vec<_> = messages.iter().map(|m| m["content"].clone()).collect();
    assert_eq!(
        contents,
        [json!("while you were away"), json!("hello over postgres")],
        "newest first"
    );
}

/// `online_users` as seen by `client`: the ids, sorted.
async fn online_ids(client: &mut Client) -> Vec<i64> {
    client.send("get_online_users", json!({})).await;
    let online = client
        .expect_past("online_users", &["user_online", "user_offline"])
        .await;
    let mut ids: Vec<i64> = online["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn two_nodes_on_redis_share_presence_and_a_killed_nodes_users_go_offline() {
    let pg = switchboard_store::test_postgres::TempPostgres::start();
    let redis = redis_server::RedisServer::start();
    let url = redis.url();
    let secret = "ab".repeat(32);
    let args = [
        "--redis-url",
        url.as_str(),
        "--secret",
        secret.as_str(),
        "--redis-presence-ttl-ms",
        "1000",
    ];
    let a = Server::start_on(&pg.url(), &args);
    let mut b = Server::start_on(&pg.url(), &args);
    let (alice, alice_token) = a.user("alice").await;
    let (bob, bob_token) = b.user("bob").await;

    let mut on_a = a.connect(&alice_token).await;
    let _on_b = b.connect(&bob_token).await;
    let both = {
        let mut v = vec![alice, bob];
        v.sort_unstable();
        v
    };
    assert_eq!(
        online_ids(&mut on_a).await,
        both,
        "node A sees bob on node B"
    );

    // A second device of alice, on node B: B sees her too, and she stays online when the
    // one on A leaves.
    let mut alice_on_b = b.connect(&alice_token).await;
    assert_eq!(online_ids(&mut alice_on_b).await, both);
    drop(on_a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(online_ids(&mut alice_on_b).await, both);

    // Node B dies without a goodbye: after the presence TTL, A no longer lists its users.
    let mut on_a = a.connect(&alice_token).await;
    b.child.kill().expect("SIGKILL node B");
    let _ = b.child.wait();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ids = online_ids(&mut on_a).await;
        if ids == [alice] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node B's users still online: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The live node keeps working past the TTL.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(online_ids(&mut on_a).await, [alice]);
}

/// `count` nodes on one Redis and one PostgreSQL, presence TTL 1 s.
fn cluster(pg: &str, redis_url: &str, count: usize) -> Vec<Server> {
    cluster_with(pg, redis_url, count, &[])
}

fn cluster_with(pg: &str, redis_url: &str, count: usize, extra: &[&str]) -> Vec<Server> {
    let secret = "ab".repeat(32);
    let mut args = vec![
        "--redis-url",
        redis_url,
        "--secret",
        secret.as_str(),
        "--redis-presence-ttl-ms",
        "1000",
    ];
    args.extend_from_slice(extra);
    (0..count).map(|_| Server::start_on(pg, &args)).collect()
}

/// The members' ids of a room created by `owner_token` on `nodes[0]` and joined by each
/// of `joiners` (node, token) on their own node.
async fn room_across(nodes: &[Server], owner_token: &str, joiners: &[(usize, &str)]) -> i64 {
    let (status, room) = nodes[0]
        .post(
            "/api/rooms",
            Some(owner_token),
            json!({"name": "everywhere"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    let room_id = room["id"].as_i64().unwrap();
    for (node, token) in joiners {
        let (status, body) = nodes[*node]
            .post(
                &format!("/api/rooms/{room_id}/join"),
                Some(token),
                json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    room_id
}

#[tokio::test]
async fn three_nodes_route_messages_receipts_typing_and_presence_between_them() {
    let pg = switchboard_store::test_postgres::TempPostgres::start();
    let redis = redis_server::RedisServer::start();
    let mut nodes = cluster(&pg.url(), &redis.url(), 3);
    let (alice, alice_token) = nodes[0].user("alice").await;
    let (bob, bob_token) = nodes[1].user("bob").await;
    let (carol, carol_token) = nodes[2].user("carol").await;
    let (dave, dave_token) = nodes[1].user("dave").await;

    // alice on A watches presence; bob has a device on B and one on C; carol is on C.
    let mut alice_a = nodes[0].connect(&alice_token).await;
    assert_eq!(online_ids(&mut alice_a).await, [alice]);
    let mut bob_b = nodes[1].connect(&bob_token).await;
    let came = alice_a.expect("user_online").await;
    assert_eq!(
        (came["userId"].as_i64(), came["username"].as_str()),
        (Some(bob), Some("bob")),
        "a user coming online on B is announced on A"
    );
    let mut bob_c = nodes[2].connect(&bob_token).await;
    let mut carol_c = nodes[2].connect(&carol_token).await;
    assert_eq!(alice_a.expect("user_online").await["userId"], carol);
    alice_a.expect_silence(300).await; // bob's second device is no new arrival

    // A direct message from A reaches both of bob's devices, on B and C; alice hears
    // `message_delivered` once.
    alice_a
        .send(
            "chat_message",
            json!({"receiverId": bob, "content": "hi bob", "clientMsgId": "m1"}),
        )
        .await;
    let sent = alice_a.expect("message_sent").await;
    for device in [&mut bob_b, &mut bob_c] {
        let got = device.expect("new_message").await;
        assert_eq!(
            (
                got["id"].clone(),
                got["content"].as_str(),
                got["senderUsername"].as_str()
            ),
            (sent["id"].clone(), Some("hi bob"), Some("alice"))
        );
    }
    let delivered = alice_a.expect("message_delivered").await;
    assert_eq!(
        (
            delivered["messageId"].clone(),
            delivered["clientMsgId"].as_str()
        ),
        (sent["id"].clone(), Some("m1"))
    );
    alice_a.expect_silence(300).await;

    // Typing and read receipts cross nodes too.
    bob_c
        .send("typing_start", json!({"receiverId": alice}))
        .await;
    let typing = alice_a.expect("typing_indicator").await;
    assert_eq!(
        (typing["userId"].as_i64(), typing["isTyping"].as_bool()),
        (Some(bob), Some(true))
    );
    bob_b.send("mark_read", json!({"senderId": alice})).await;
    assert_eq!(bob_b.expect("mark_read_success").await["count"], 1);
    let read = alice_a.expect("messages_read").await;
    assert_eq!(
        (read["readerId"].as_i64(), read["messageIds"].clone()),
        (Some(bob), json!([sent["id"]]))
    );

    // A room with members on every node: one message reaches every member's devices but
    // the sending connection.
    let room = room_across(&nodes, &alice_token, &[(1, &bob_token), (2, &carol_token)]).await;
    let mut alice_b = nodes[1].connect(&alice_token).await;
    alice_a
        .send(
            "chat_message",
            json!({"roomId": room, "content": "hello room"}),
        )
        .await;
    let sent = alice_a.expect("message_sent").await;
    for member in [&mut bob_b, &mut bob_c, &mut carol_c, &mut alice_b] {
        let got = member.expect("new_message").await;
        assert_eq!(
            (
                got["id"].clone(),
                got["roomId"].as_i64(),
                got["content"].as_str()
            ),
            (sent["id"].clone(), Some(room), Some("hello room"))
        );
    }
    alice_a.expect_silence(300).await;
    // Where the members are was looked up for that message; a device that comes since, on
    // a node that held no connection of its user, gets the next one.
    let mut carol_b = nodes[1].connect(&carol_token).await;
    alice_a
        .send(
            "chat_message",
            json!({"roomId": room, "content": "and you"}),
        )
        .await;
    alice_a.expect("message_sent").await;
    for member in [
        &mut carol_b,
        &mut carol_c,
        &mut bob_b,
        &mut bob_c,
        &mut alice_b,
    ] {
        assert_eq!(member.expect("new_message").await["content"], "and you");
    }
    drop(carol_b);
    carol_c.send("typing_start", json!({"roomId": room})).await;
    for member in [&mut alice_a, &mut alice_b, &mut bob_b, &mut bob_c] {
        assert_eq!(member.expect("typing_indicator").await["userId"], carol);
    }
    carol_c.send("mark_read", json!({"roomId": room})).await;
    carol_c.expect("mark_read_success").await;
    for member in [&mut alice_a, &mut bob_c] {
        let read = member.expect("messages_read").await;
        assert_eq!(
            (read["roomId"].as_i64(), read["readerId"].as_i64()),
            (Some(room), Some(carol))
        );
    }
    drop(alice_b);
    // (bob_b also has the room read receipt queued; drain it before the next checks.)
    assert_eq!(bob_b.expect("messages_read").await["readerId"], carol);

    // A message to a user with no connection waits; when they connect on C, the sender
    // on A hears it was delivered.
    alice_a
        .send(
            "chat_message",
            json!({"receiverId": dave, "content": "later"}),
        )
        .await;
    let sent = alice_a.expect("message_sent").await;
    alice_a.expect_silence(300).await;
    let mut dave_c = nodes[2].connect(&dave_token).await;
    assert_eq!(dave_c.expect("new_message").await["content"], "later");
    let online = alice_a.expect("user_online").await;
    assert_eq!(online["userId"], dave);
    let delivered = alice_a.expect("message_delivered").await;
    assert_eq!(delivered["messageId"], sent["id"]);
    dave_c.ws.close(None).await.unwrap();
    let gone = alice_a.expect("user_offline").await;
    assert_eq!(gone["userId"], dave, "a user leaving C is announced on A");

    // Node C dies without a goodbye: within the presence TTL, A announces carol offline
    // (her only node was C) but not bob (still on B), and A and B keep working.
    let mut c = nodes.pop().unwrap();
    c.child.kill().expect("SIGKILL node C");
    let _ = c.child.wait();
    let gone = alice_a.expect("user_offline").await;
    assert_eq!(
        (gone["userId"].as_i64(), gone["username"].as_str()),
        (Some(carol), Some("carol"))
    );
    alice_a.expect_silence(1500).await;
    assert_eq!(online_ids(&mut alice_a).await, {
        let mut v = vec![alice, bob];
        v.sort_unstable();
        v
    });
    alice_a
        .send(
            "chat_message",
            json!({"roomId": room, "content": "still here"}),
        )
        .await;
    alice_a.expect("message_sent").await;
    assert_eq!(bob_b.expect("new_message").await["content"], "still here");
}

#[tokio::test]
async fn chat_across_nodes_survives_a_redis_restart_with_aof() {
    let pg = switchboard_store::test_postgres::TempPostgres::start();
    let mut redis = redis_server::RedisServer::start_durable();
    let nodes = cluster(&pg.url(), &redis.url(), 2);
    let (alice, alice_token) = nodes[0].user("alice").await;
    let (bob, bob_token) = nodes[1].user("bob").await;
    let mut alice_a = nodes[0].connect(&alice_token).await;
    let mut bob_b = nodes[1].connect(&bob_token).await;
    alice_a
        .send(
            "chat_message",
            json!({"receiverId": bob, "content": "before"}),
        )
        .await;
    alice_a.expect("message_sent").await;
    assert_eq!(bob_b.expect("new_message").await["content"], "before");
    alice_a.expect("message_delivered").await;

    redis.restart(); // SIGKILL, then the same port and append-only file
    // Both nodes may have missed frames meanwhile: they say so by closing their
    // connections, and the clients reconnect once the nodes are back on Redis.
    assert_eq!(alice_a.expect_close().await, 1012);
    assert_eq!(bob_b.expect_close().await, 1012);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut alice_a = nodes[0].connect(&alice_token).await;
    let mut bob_b = nodes[1].connect(&bob_token).await;
    let mut both = vec![alice, bob];
    both.sort_unstable();
    assert_eq!(
        online_ids(&mut alice_a).await,
        both,
        "presence came back from the append-only file"
    );
    alice_a
        .send(
            "chat_message",
            json!({"receiverId": bob, "content": "after"}),
        )
        .await;
    let sent = alice_a.expect("message_sent").await;
    assert_eq!(bob_b.expect("new_message").await["content"], "after");
    assert_eq!(
        alice_a.expect("message_delivered").await["messageId"],
        sent["id"]
    );
    bob_b
        .send(
            "chat_message",
            json!({"receiverId": alice, "content": "and back"}),
        )
        .await;
    bob_b.expect_past("message_sent", &[]).await;
    assert_eq!(alice_a.expect("new_message").await["content"], "and back");
}

#[tokio::test]
async fn single_session_replaces_a_connection_on_another_node() {
    let pg = switchboard_store::test_postgres::TempPostgres::start();
    let redis = redis_server::RedisServer::start();
    let nodes = cluster_with(&pg.url(), &redis.url(), 2, &["--single-session"]);
    let (_, token) = nodes[0].user("alice").await;
    let mut old = nodes[0].connect(&token).await;
    let mut new = nodes[1].connect(&token).await;
    assert_eq!(
        old.expect_close().await,
        4005,
        "replaced from the other node"
    );
    new.expect_silence(300).await;
}

/// A Socket.IO session on `/sockethub` of `server`, spoken by hand over a WebSocket
/// (Engine.IO open, namespace CONNECT, then events with acks).
async fn sockethub(server: &Server) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
    let url = format!("ws://{}/sockethub/?EIO=4&transport=websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("sockethub websocket handshake");
    let open = sockethub_recv(&mut ws).await;
    assert!(open.starts_with("0{"), "Engine.IO open first: {open}");
    ws.send(Ws::Text("40".into())).await.unwrap();
    let connected = sockethub_recv(&mut ws).await;
    assert!(
        connected.starts_with("40{"),
        "namespace connect: {connected}"
    );
    ws
}

async fn sockethub_recv(ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Ws::Text(t))) => return t.to_string(),
            Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Send a dummy `echo` as event `message` with ack `id`; the ack's activity.
async fn sockethub_echo(
    ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
    id: u64,
    content: &str,
) -> Value {
    let activity = json!({
        "type": "echo",
        "@context": switchboard_protocol::context::canonical("dummy"),
        "actor": {"id": "tester", "type": "person"},
        "object": {"type": "message", "content": content}
    });
    ws.send(Ws::Text(
        format!("42{id}{}", json!(["message", activity])).into(),
    ))
    .await
    .unwrap();
    let prefix = format!("43{id}");
    loop {
        let packet = sockethub_recv(ws).await;
        if let Some(rest) = packet.strip_prefix(&prefix) {
            let mut args: Vec<Value> = serde_json::from_str(rest).expect("ack JSON");
            return args.remove(0);
        }
    }
}

/// The same deployment on a real Redis Cluster (three masters): two nodes exchange a chat
/// message and presence, and Socket.IO sessions on both get their echoes (jobs on the
/// shared queue, replies on the sessions' pub/sub channels). The keys it writes spread over
/// more than one master, so this cannot pass on one node by accident.
#[tokio::test]
async fn two_nodes_on_a_redis_cluster_exchange_chat_messages_and_gateway_echoes() {
    let pg = switchboard_store::test_postgres::TempPostgres::start();
    let redis = switchboard_testpeers::RedisCluster::start(3);
    // Seeds in a different order per node: each node's subscriber connection sits on a
    // different cluster node, so replies and chat really cross the cluster bus.
    let urls = redis.urls();
    let nodes: Vec<Server> = (0..2)
        .map(|first| {
            let seeds = (0..urls.len())
                .map(|i| urls[(first + i) % urls.len()].clone())
                .collect::<Vec<_>>()
                .join(",");
            cluster_with(&pg.url(), &seeds, 1, &["--redis-cluster"]).remove(0)
        })
        .collect();
    let (alice, alice_token) = nodes[0].user("alice").await;
    let (bob, bob_token) = nodes[1].user("bob").await;
    let mut alice_a = nodes[0].connect(&alice_token).await;
    assert_eq!(online_ids(&mut alice_a).await, [alice]);
    let mut bob_b = nodes[1].connect(&bob_token).await;
    assert_eq!(
        alice_a.expect("user_online").await["userId"],
        bob,
        "presence crosses nodes"
    );

    alice_a
        .send(
            "chat_message",
            json!({"receiverId": bob, "content": "hi over the cluster", "clientMsgId": "c1"}),
        )
        .await;
    let sent = alice_a.expect("message_sent").await;
    let got = bob_b.expect("new_message").await;
    assert_eq!(
        (got["id"].clone(), got["content"].as_str()),
        (sent["id"].clone(), Some("hi over the cluster"))
    );
    assert_eq!(
        alice_a
            .expect_past("message_delivered", &["user_online"])
            .await["messageId"],
        sent["id"]
    );

    let mut on_a = sockethub(&nodes[0]).await;
    let mut on_b = sockethub(&nodes[1]).await;
    for i in 0..10u64 {
        for (ws, node) in [(&mut on_a, "A"), (&mut on_b, "B")] {
            let content = format!("echo {i} via {node}");
            let reply = sockethub_echo(ws, i, &content).await;
            assert_eq!(reply["object"]["content"], content.as_str(), "{reply}");
            assert!(reply.get("error").is_none(), "{reply}");
        }
    }

    let holding: Vec<usize> = (0..redis.len())
        .filter(|&n| redis.keys(n).iter().any(|k| k.starts_with("switchboard:")))
        .collect();
    assert!(
        holding.len() > 1,
        "the deployment's keys must spread over several masters, only {holding:?} hold any"
    );
}
