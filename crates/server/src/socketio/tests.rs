//! The transport against real clients on loopback: a WebSocket client (tokio-tungstenite)
//! and plain HTTP/1.1 for polling, against the real server with a real gateway (no
//! platforms: `schemas` and a refused `message` exercise the whole request path).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_engine::Engine;
use switchboard_gateway::{Gateway, GatewayConfig, WorkerCommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::ServerConfig;

const WAIT: Duration = Duration::from_secs(5);

struct Server {
    addr: SocketAddr,
    gateway: Gateway,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn config() -> ServerConfig {
    ServerConfig::default()
}

async fn start(config: ServerConfig) -> Server {
    let worker = WorkerCommand {
        program: "/nonexistent/no-workers-in-transport-tests".into(),
        args: vec![],
    };
    let gateway = Gateway::new(
        GatewayConfig::new(worker),
        Engine::embedded(),
        vec![],
        "test",
    )
    .expect("gateway");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(crate::serve(
        listener,
        gateway.clone(),
        config,
        Router::new(),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        gateway,
        stop: Some(stop),
    }
}

impl Server {
    fn sessions(&self) -> u64 {
        self.gateway.health()["sessions"]
            .as_u64()
            .unwrap_or(u64::MAX)
    }

    async fn wait_sessions(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.sessions() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "sessions stayed at {} (expected {n})",
                self.sessions()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn ws(server: &Server, query: &str) -> Client {
    let url = format!(
        "ws://{}/sockethub/?EIO=4&transport=websocket{query}",
        server.addr
    );
    let (client, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect");
    client
}

/// The next text frame (the test fails on anything else within the wait).
async fn recv(client: &mut Client) -> String {
    loop {
        match timeout(WAIT, client.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn send(client: &mut Client, text: &str) {
    client.send(Message::text(text)).await.expect("send");
}

/// Connected to `/` over WebSocket: returns the client after the handshake and CONNECT.
async fn connected(server: &Server) -> Client {
    let mut c = ws(server, "").await;
    let open = recv(&mut c).await;
    assert!(open.starts_with("0{"), "open packet first: {open}");
    let open: Value = serde_json::from_str(&open[1..]).expect("handshake JSON");
    assert_eq!(
        open["upgrades"],
        json!([]),
        "nothing to upgrade to from websocket"
    );
    send(&mut c, "40").await;
    let ack = recv(&mut c).await;
    assert!(ack.starts_with("40{\"sid\":\""), "connect reply: {ack}");
    c
}

/// The JSON of an ack packet `43<id>[...]`'s single argument.
fn ack_value(packet: &str, id: u64) -> Value {
    let prefix = format!("43{id}");
    let rest = packet
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("ack {id} expected, got {packet}"));
    let mut args: Vec<Value> = serde_json::from_str(rest).expect("ack JSON");
    assert_eq!(args.len(), 1);
    args.remove(0)
}

/// Read until the server closes; returns its close frame's code, if any.
async fn closed(client: &mut Client) -> Option<CloseCode> {
    loop {
        match timeout(WAIT, client.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

// ---------------------------------------------------------------- minimal HTTP/1.1

struct HttpReply {
    status: u16,
    body: String,
}

async fn http(addr: SocketAddr, method: &str, query: &str, body: &str) -> HttpReply {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} /sockethub/?EIO=4&{query} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        addr,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.expect("write head");
    tcp.write_all(body.as_bytes()).await.expect("write body");
    let mut raw = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("reply in time")
        .expect("read");
    let raw = String::from_utf8(raw).expect("utf-8 reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete reply");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpReply { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

async fn polling_handshake(server: &Server) -> String {
    let reply = http(server.addr, "GET", "transport=polling", "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let open: Value = serde_json::from_str(reply.body.strip_prefix('0').expect("open packet"))
        .expect("handshake JSON");
    assert_eq!(open["upgrades"], json!(["websocket"]));
    assert_eq!(open["pingInterval"], json!(25000));
    assert_eq!(open["pingTimeout"], json!(20000));
    open["sid"].as_str().expect("sid").to_owned()
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn websocket_client_gets_acks_and_replies_in_order() {
    let server = start(config()).await;
    let mut c = connected(&server).await;
    server.wait_sessions(1).await;
    send(&mut c, r#"421["schemas"]"#).await;
    send(&mut c, r#"422["message",{"type":"echo"}]"#).await;
    send(&mut c, r#"42["message","not an object"]"#).await;
    let schemas = ack_value(&recv(&mut c).await, 1);
    assert!(schemas["fingerprint"].is_string(), "{schemas}");
    let refused = ack_value(&recv(&mut c).await, 2);
    assert!(refused["error"].is_string(), "{refused}");
    // Without an ack, the reply comes as a `message` event.
    let event = recv(&mut c).await;
    assert!(event.starts_with(r#"42["message",{"#), "{event}");
    assert!(event.contains("error"), "{event}");
}

#[tokio::test]
async fn replies_finishing_together_arrive_whole_and_in_order() {
    let server = start(config()).await;
    let mut c = connected(&server).await;
    server.wait_sessions(1).await;
    // Sent in one go, these finish together and leave in as few writes as the server
    // can make: each must still arrive as its own frame, in order.
    let n = 40u64;
    for id in 1..=n {
        c.feed(Message::text(format!(r#"42{id}["schemas"]"#)))
            .await
            .expect("feed");
    }
    c.flush().await.expect("flush");
    for id in 1..=n {
        let schemas = ack_value(&recv(&mut c).await, id);
        assert!(schemas["fingerprint"].is_string(), "{schemas}");
    }
}

#[tokio::test]
async fn client_disconnect_closes_the_session() {
    let server = start(config()).await;
    let mut c = connected(&server).await;
    server.wait_sessions(1).await;
    send(&mut c, "41").await;
    server.wait_sessions(0).await;
    // An abrupt close releases it too.
    let c = connected(&server).await;
    server.wait_sessions(1).await;
    drop(c);
    server.wait_sessions(0).await;
}

#[tokio::test]
async fn unknown_namespace_gets_connect_error() {
    let server = start(config()).await;
    let mut c = ws(&server, "").await;
    recv(&mut c).await;
    send(&mut c, "40/admin,").await;
    assert_eq!(
        recv(&mut c).await,
        r#"44/admin,{"message":"Invalid namespace"}"#
    );
    assert_eq!(server.sessions(), 0, "no session for a refused namespace");
    // The connection is still usable for `/`.
    send(&mut c, "40").await;
    assert!(recv(&mut c).await.starts_with("40{"));
}

#[tokio::test]
async fn malformed_packets_close_the_connection() {
    for bad in ["", "9", "4", "42", "42[]", "42[1]", "4{", "42[\"message\""] {
        let server = start(config()).await;
        let mut c = connected(&server).await;
        server.wait_sessions(1).await;
        send(&mut c, bad).await;
        closed(&mut c).await;
        server.wait_sessions(0).await;
    }
}

#[tokio::test]
async fn binary_frames_are_refused_with_an_error_event() {
    let server = start(config()).await;
    let mut c = connected(&server).await;
    c.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    let error = recv(&mut c).await;
    assert!(error.starts_with(r#"42["error",{"#), "{error}");
    assert!(
        error.contains("binary attachments are not supported"),
        "{error}"
    );
    assert_eq!(recv(&mut c).await, "41");
    closed(&mut c).await;
    server.wait_sessions(0).await;
}

#[tokio::test]
async fn oversize_message_closes_with_1009_and_polling_body_with_413() {
    let mut cfg = config();
    cfg.max_payload = 16 * 1024; // transport limit: 64 KiB
    let server = start(cfg).await;
    let mut c = connected(&server).await;
    let big = format!(r#"42["message",{{"x":"{}"}}]"#, "a".repeat(70 * 1024));
    send(&mut c, &big).await;
    assert_eq!(closed(&mut c).await, Some(CloseCode::Size));
    server.wait_sessions(0).await;

    // Just under the transport limit reaches the gateway, which answers with an error.
    let mut c = connected(&server).await;
    let under = format!(r#"421["message",{{"x":"{}"}}]"#, "a".repeat(40 * 1024));
    send(&mut c, &under).await;
    let reply = ack_value(&recv(&mut c).await, 1);
    assert!(reply["error"].is_string(), "{reply}");

    let sid = polling_handshake(&server).await;
    let body = format!("4{big}");
    let reply = http(
        server.addr,
        "POST",
        &format!("transport=polling&sid={sid}"),
        &body,
    )
    .await;
    assert_eq!(reply.status, 413);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = http(
        server.addr,
        "GET",
        &format!("transport=polling&sid={sid}"),
        "",
    )
    .await;
    assert_eq!(reply.status, 400, "the session is gone: {}", reply.body);
}

#[tokio::test]
async fn heartbeat_timeout_closes_a_silent_client() {
    let mut cfg = config();
    cfg.ping_interval = Duration::from_millis(100);
    cfg.ping_timeout = Duration::from_millis(150);
    let server = start(cfg).await;

    // A client that answers every ping stays connected well past the timeout.
    let mut alive = connected(&server).await;
    let mut silent = connected(&server).await;
    server.wait_sessions(2).await;
    for _ in 0..5 {
        assert_eq!(recv(&mut alive).await, "2");
        send(&mut alive, "3").await;
    }
    // The silent one got its pings and was dropped.
    assert_eq!(recv(&mut silent).await, "2");
    closed(&mut silent).await;
    server.wait_sessions(1).await;
    send(&mut alive, r#"421["schemas"]"#).await;
    loop {
        let p = recv(&mut alive).await;
        if p == "2" {
            send(&mut alive, "3").await;
            continue;
        }
        assert!(ack_value(&p, 1)["fingerprint"].is_string());
        break;
    }
}

#[tokio::test]
async fn polling_session_upgrades_to_websocket() {
    let server = start(config()).await;
    let sid = polling_handshake(&server).await;
    let q = format!("transport=polling&sid={sid}");
    let post = http(server.addr, "POST", &q, "40\x1e421[\"schemas\"]").await;
    assert_eq!((post.status, post.body.as_str()), (200, "ok"));
    // Both replies may arrive in one poll or two.
    let mut got = Vec::new();
    while got.len() < 2 {
        let poll = http(server.addr, "GET", &q, "").await;
        assert_eq!(poll.status, 200);
        got.extend(poll.body.split('\x1e').map(str::to_owned));
    }
    assert!(got[0].starts_with("40{\"sid\":"), "{got:?}");
    assert!(ack_value(&got[1], 1)["fingerprint"].is_string());
    server.wait_sessions(1).await;

    // A poll waits while the client probes a WebSocket.
    let pending = {
        let addr = server.addr;
        let q = q.clone();
        tokio::spawn(async move { http(addr, "GET", &q, "").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = ws(&server, &format!("&sid={sid}")).await;
    send(&mut c, "2probe").await;
    assert_eq!(recv(&mut c).await, "3probe");
    let released = timeout(WAIT, pending)
        .await
        .expect("poll released")
        .expect("task");
    assert_eq!((released.status, released.body.as_str()), (200, "6"));
    send(&mut c, "5").await;
    send(&mut c, r#"422["schemas"]"#).await;
    assert!(ack_value(&recv(&mut c).await, 2)["fingerprint"].is_string());
    // Polling is over for this sid; the session lives on the WebSocket.
    assert_eq!(http(server.addr, "GET", &q, "").await.status, 400);
    assert_eq!(server.sessions(), 1);
    drop(c);
    server.wait_sessions(0).await;
}

#[tokio::test]
async fn bad_requests_get_the_spec_errors() {
    let server = start(config()).await;
    let cases = [
        ("GET", "transport=polling&EIO=3", 5), // checked with the last EIO given
        ("GET", "transport=carrier-pigeon", 0),
        ("GET", "transport=polling&sid=nope", 1),
        ("POST", "transport=polling", 2),
    ];
    for (method, query, code) in cases {
        let reply = http(server.addr, method, query, "").await;
        assert_eq!(reply.status, 400, "{method} {query}");
        let body: Value = serde_json::from_str(&reply.body).expect("JSON error");
        assert_eq!(body["code"], json!(code), "{method} {query}: {body}");
        assert!(body["message"].is_string());
    }
}

#[tokio::test]
async fn shutdown_closes_connections_and_sessions() {
    let mut server = start(config()).await;
    let mut c = connected(&server).await;
    server.wait_sessions(1).await;
    drop(server.stop.take());
    assert_eq!(closed(&mut c).await, Some(CloseCode::Away));
    server.wait_sessions(0).await;
}
