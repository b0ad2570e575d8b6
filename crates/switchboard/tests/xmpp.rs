//! The xmpp platform through the gateway, in real worker processes, against a prosody
//! server the test starts on 127.0.0.1: two accounts, each driven by its own Switchboard
//! session (alice also by a second session sharing her connection).

mod common;
#[path = "peers/xmpp.rs"]
mod peer;

use std::sync::Arc;
use std::time::Duration;

use common::{LOCAL, config, worker_exe, worker_pids};
use peer::Prosody;
use serde_json::{Value, json};
use switchboard_engine::Engine;
use switchboard_gateway::{Gateway, Push, Session};
use switchboard_platform::Platform;
use switchboard_platform_xmpp::Xmpp;
use switchboard_protocol::context;
use tokio::sync::mpsc;

const ROOM: &str = "lobby@conference.localhost";

fn xmpp_gateway(accept_invalid_certs: bool) -> Gateway {
    let mut c = config(json!({"accept_invalid_certs": accept_invalid_certs}));
    c.request_timeout = Duration::from_secs(30);
    Gateway::new(c, Engine::embedded(), vec![Xmpp::manifest()], "test").unwrap()
}

/// XMPP logins run `switchboard-worker-xmpp` (the xmpp-only worker), which the gateway
/// prefers to the configured `switchboard-worker` because it sits next to it. (Other tests
/// in this binary run XMPP workers at the same time: all of them must.)
fn assert_workers_run_the_xmpp_binary() {
    let lean = std::fs::canonicalize(env!("CARGO_BIN_EXE_switchboard-worker-xmpp")).unwrap();
    let xmpp: Vec<_> = worker_pids()
        .into_iter()
        .filter_map(worker_exe)
        .filter(|(_, args)| args == &["platform", "xmpp"])
        .collect();
    assert!(!xmpp.is_empty(), "no xmpp worker process");
    for (exe, _) in xmpp {
        assert_eq!(exe, lean);
    }
}

/// A session and the pushes it receives.
struct Client {
    s: Session,
    pushes: mpsc::UnboundedReceiver<Value>,
    jid: String,
}

impl Client {
    async fn open(gw: &Gateway, user: &str) -> Client {
        let (tx, pushes) = mpsc::unbounded_channel();
        let s = gw
            .open_session(
                LOCAL,
                Arc::new(move |p| {
                    if let Push::Message(v) = p {
                        let _ = tx.send(v);
                    }
                }),
            )
            .await
            .unwrap();
        Client {
            s,
            pushes,
            jid: format!("{user}@localhost"),
        }
    }

    fn activity(&self, verb: &str, extra: Value) -> Value {
        let mut a = json!({
            "type": verb,
            "@context": context::canonical("xmpp"),
            "actor": {"id": self.jid, "type": "person"},
        });
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    }

    async fn credentials(&self, object: Value) {
        let mut creds = self.activity("credentials", json!({}));
        creds["object"] = object;
        let reply = self.s.credentials(self.s.ticket(), creds).await;
        assert!(reply.get("error").is_none(), "{reply}");
    }

    async fn login(&self, password: &str, port: u16) -> Value {
        self.credentials(json!({
            "type": "credentials", "userAddress": self.jid, "password": password,
            "resource": "test", "server": "127.0.0.1", "port": port
        }))
        .await;
        self.send("connect", json!({})).await
    }

    async fn send(&self, verb: &str, extra: Value) -> Value {
        self.s
            .message(self.s.ticket(), self.activity(verb, extra))
            .await
    }

    async fn ok(&self, verb: &str, extra: Value) -> Value {
        let reply = self.send(verb, extra).await;
        assert!(reply.get("error").is_none(), "{verb}: {reply}");
        reply
    }

    async fn fails(&self, verb: &str, extra: Value) -> String {
        let reply = self.send(verb, extra).await;
        reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{verb} should fail: {reply}"))
            .to_owned()
    }

    /// The next push matching `want`, skipping others; fails after 15 s.
    async fn expect(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match tokio::time::timeout_at(deadline, self.pushes.recv()).await {
                Ok(Some(v)) if want(&v) => return v,
                Ok(Some(_)) => continue,
                _ => panic!("{} never received {what}", self.jid),
            }
        }
    }

    /// No push matching `unwanted` arrives within `wait`.
    async fn never(&mut self, what: &str, wait: Duration, unwanted: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(v)) = tokio::time::timeout_at(deadline, self.pushes.recv()).await {
            assert!(
                !unwanted(&v),
                "{} unexpectedly received {what}: {v}",
                self.jid
            );
        }
    }
}

fn room_target() -> Value {
    json!({"target": {"id": ROOM, "type": "room"}})
}

/// A join of the test room as `user`, with nickname `nick`.
fn join_as(user: &str, nick: &str) -> Value {
    let mut join = room_target();
    join["actor"] = json!({"id": format!("{user}@localhost"), "type": "person", "name": nick});
    join
}

fn person(jid: &str) -> Value {
    json!({"id": jid, "type": "person"})
}

#[tokio::test]
async fn chat_presence_friends_and_a_shared_connection() {
    let server = Prosody::start(&[("alice", "alicepw"), ("bob", "bobpw")]);
    let gw = xmpp_gateway(true);
    let mut alice = Client::open(&gw, "alice").await;
    let mut alice2 = Client::open(&gw, "alice").await;
    let mut bob = Client::open(&gw, "bob").await;
    alice.login("alicepw", server.port).await;
    assert!(
        alice
            .login("alicepw", server.port)
            .await
            .get("error")
            .is_none()
    );
    // The second session with the same credentials shares alice's connection.
    let r = alice2.login("alicepw", server.port).await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(gw.health()["instances"], 1);
    assert_workers_run_the_xmpp_binary();
    let r = bob.login("bobpw", server.port).await;
    assert!(r.get("error").is_none(), "{r}");

    // Friend request, accepted: both sides hear about it.
    alice
        .ok("request-friend", json!({"target": person("bob@localhost")}))
        .await;
    let req = bob
        .expect("a friend request", |v| v["type"] == "request-friend")
        .await;
    assert_eq!(req["actor"], person("alice@localhost"));
    assert_eq!(req["target"]["id"], "bob@localhost");
    bob.ok("make-friend", json!({"target": person("alice@localhost")}))
        .await;
    let made = alice
        .expect("the acceptance", |v| v["type"] == "make-friend")
        .await;
    assert_eq!(made["actor"]["id"], "bob@localhost");
    alice
        .expect("a roster push", |v| {
            v["type"] == "update"
                && v["object"]["type"] == "contact"
                && v["actor"]["id"] == "bob@localhost"
        })
        .await;
    // bob asked back in make-friend; alice accepts.
    alice
        .expect("bob's own request", |v| v["type"] == "request-friend")
        .await;
    alice
        .ok("make-friend", json!({"target": person("bob@localhost")}))
        .await;

    // Presence with a status reaches the contact.
    alice
        .ok(
            "update",
            json!({"object": {"type": "presence", "presence": "away", "content": "lunch"}}),
        )
        .await;
    let p = bob
        .expect("alice's presence", |v| {
            v["type"] == "update" && v["object"]["presence"] == "away"
        })
        .await;
    assert_eq!(p["actor"]["id"], "alice@localhost/test");
    assert_eq!(p["object"]["content"], "lunch");

    // 1:1 chat both ways; both of alice's sessions get bob's message.
    let sent = alice
        .ok(
            "send",
            json!({"target": person("bob@localhost/test"), "object": {"type": "message", "content": "hi bob"}}),
        )
        .await;
    let id = sent["object"]["id"]
        .as_str()
        .expect("a message id")
        .to_owned();
    let m = bob.expect("alice's message", |v| v["type"] == "send").await;
    assert_eq!(m["object"]["content"], "hi bob");
    assert_eq!(m["object"]["id"], id.as_str());
    assert_eq!(m["actor"]["id"], "alice@localhost/test");
    assert_eq!(
        m["target"],
        json!({"type": "person", "id": "bob@localhost/test"})
    );
    // alice2 sees the result of alice's request on their shared connection.
    alice2
        .expect("the shared send result", |v| {
            v["type"] == "send" && v["object"]["content"] == "hi bob"
        })
        .await;

    bob.ok(
        "send",
        json!({"target": person("alice@localhost"), "object": {"type": "message", "content": "hello alice"}}),
    )
    .await;
    for session in [&mut alice, &mut alice2] {
        let m = session
            .expect("bob's message", |v| {
                v["type"] == "send" && v["object"]["content"] == "hello alice"
            })
            .await;
        assert_eq!(m["actor"]["id"], "bob@localhost/test");
    }

    // A correction (XEP-0308) names the message it replaces.
    alice
        .ok(
            "send",
            json!({"target": person("bob@localhost/test"), "object": {
                "type": "message", "content": "hi Bob", "xmpp:replace": {"id": id}
            }}),
        )
        .await;
    let fix = bob.expect("the correction", |v| v["type"] == "send").await;
    assert_eq!(fix["object"]["content"], "hi Bob");
    assert_eq!(fix["object"]["xmpp:replace"]["id"], id.as_str());

    // A message the server refuses is a failure with the server's reason.
    let e = alice
        .fails(
            "send",
            json!({"target": person("nobody@conference.localhost"), "object": {"type": "message", "content": "x"}}),
        )
        .await;
    assert!(!e.is_empty(), "{e}");

    // Removing the friend: the roster push says so.
    alice
        .ok("remove-friend", json!({"target": person("bob@localhost")}))
        .await;
    alice
        .expect("the removal roster push", |v| {
            v["object"]["type"] == "contact" && v["object"]["subscription"] == "remove"
        })
        .await;
    let e = alice
        .fails(
            "remove-friend",
            json!({"target": person("carol@localhost")}),
        )
        .await;
    assert!(e.contains("item-not-found"), "{e}");

    alice.ok("disconnect", json!({})).await;
    let e = alice
        .fails(
            "send",
            json!({"target": person("bob@localhost"), "object": {"type": "message", "content": "x"}}),
        )
        .await;
    assert!(e.contains("uninitialized"), "{e}");
    for c in [alice, alice2, bob] {
        c.s.close().await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn muc_join_send_correct_query_and_leave() {
    let server = Prosody::start(&[("alice", "alicepw"), ("bob", "bobpw"), ("carol", "carolpw")]);
    let gw = xmpp_gateway(true);
    let mut alice = Client::open(&gw, "alice").await;
    let mut bob = Client::open(&gw, "bob").await;
    let mut carol = Client::open(&gw, "carol").await;
    for (c, pw) in [(&alice, "alicepw"), (&bob, "bobpw"), (&carol, "carolpw")] {
        let r = c.login(pw, server.port).await;
        assert!(r.get("error").is_none(), "{r}");
    }

    // alice creates the room (prosody locks it until configured); the platform unlocks it,
    // or bob could not enter.
    alice.ok("join", join_as("alice", "Alice")).await;
    bob.ok("join", join_as("bob", "Bob")).await;
    let p = alice
        .expect("bob's arrival", |v| {
            v["type"] == "update" && v["actor"]["name"] == "Bob"
        })
        .await;
    assert_eq!(p["actor"]["type"], "room");
    assert_eq!(p["actor"]["id"], format!("{ROOM}/Bob"));
    assert_eq!(p["object"]["presence"], "online");
    assert_eq!(p["object"]["role"], "participant");

    // A taken nickname: refused with the room's reason.
    let e = carol.fails("join", join_as("carol", "Bob")).await;
    assert!(e.contains("conflict"), "{e}");

    // Groupchat: bob's message reaches alice as a room message; bob's ack means the room
    // accepted it.
    let mut msg = room_target();
    msg["object"] = json!({"type": "message", "content": "hello room"});
    let sent = bob.ok("send", msg).await;
    let id = sent["object"]["id"].as_str().unwrap().to_owned();
    let m = alice
        .expect("the room message", |v| v["type"] == "send")
        .await;
    assert_eq!(m["target"], json!({"type": "room", "id": ROOM}));
    assert_eq!(m["actor"]["name"], "Bob");
    assert_eq!(m["object"]["content"], "hello room");
    let mut fix = room_target();
    fix["object"] =
        json!({"type": "message", "content": "hello, room", "xmpp:replace": {"id": id}});
    bob.ok("send", fix).await;
    let m = alice
        .expect("the room correction", |v| v["type"] == "send")
        .await;
    assert_eq!(m["object"]["xmpp:replace"]["id"], id.as_str());
    // Not in the room: the room refuses the message, and the ack says so.
    let mut msg = room_target();
    msg["object"] = json!({"type": "message", "content": "let me in"});
    let e = carol.fails("send", msg).await;
    assert!(e.contains("not-acceptable"), "{e}");

    // Someone arriving later gets the room's history, stamped with when it was said.
    carol.ok("join", join_as("carol", "Carol")).await;
    let old = carol
        .expect("the room history", |v| {
            v["type"] == "send" && v["object"]["content"] == "hello room"
        })
        .await;
    assert!(
        old["published"].as_str().is_some_and(|p| p.ends_with('Z')),
        "{old}"
    );
    carol.ok("leave", room_target()).await;
    // Bob's occupant list follows the presences his own connection receives, which may
    // come after Carol's leave is acknowledged to her.
    bob.expect("Carol leaving", |v| {
        v["type"] == "update"
            && v["object"]["presence"] == "offline"
            && v["actor"]["name"] == "Carol"
    })
    .await;

    // Attendance and room info.
    let mut q = room_target();
    q["object"] = json!({"type": "attendance"});
    let r = bob.ok("query", q).await;
    assert_eq!(r["object"]["type"], "attendance");
    let mut members: Vec<String> = serde_json::from_value(r["object"]["members"].clone()).unwrap();
    members.sort();
    assert_eq!(members, ["Alice", "Bob"]);
    bob.expect("the attendance push", |v| v["type"] == "query")
        .await;
    let mut q = room_target();
    q["object"] = json!({"type": "room-info"});
    let r = bob.ok("query", q).await;
    assert_eq!(r["object"]["type"], "room-info");
    assert!(
        r["object"]["features"]
            .as_array()
            .unwrap()
            .contains(&json!("http://jabber.org/protocol/muc")),
        "{r}"
    );

    // Leaving: alice sees bob go.
    bob.ok("leave", room_target()).await;
    let p = alice
        .expect("bob leaving", |v| {
            v["type"] == "update"
                && v["actor"]["name"] == "Bob"
                && v["object"]["presence"] == "offline"
        })
        .await;
    assert_eq!(p["actor"]["type"], "room");
    let e = bob.fails("leave", room_target()).await;
    assert!(e.contains("not in room"), "{e}");
    for c in [alice, bob, carol] {
        c.s.close().await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_password_tls_opt_in_and_direct_tls() {
    let server = Prosody::start(&[("alice", "alicepw")]);
    let gw = xmpp_gateway(true);
    let alice = Client::open(&gw, "alice").await;
    let r = alice.login("wrong", server.port).await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert_eq!(
        e,
        "connection failed: authentication failed: not-authorized"
    );
    alice.s.close().await;

    // Direct TLS (XEP-0368) works the same.
    let alice = Client::open(&gw, "alice").await;
    alice
        .credentials(json!({
            "type": "credentials", "userAddress": "alice@localhost", "password": "alicepw",
            "resource": "tls", "server": "127.0.0.1", "port": server.tls_port, "directTls": true
        }))
        .await;
    alice.ok("connect", json!({})).await;
    alice.s.close().await;
    gw.shutdown().await;

    // Without the operator's opt-in, the self-signed certificate is refused.
    let strict = xmpp_gateway(false);
    let alice = Client::open(&strict, "alice").await;
    let r = alice.login("alicepw", server.port).await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(
        e.starts_with("connection failed: TLS handshake with localhost failed"),
        "{e}"
    );
    assert!(e.contains("certificate"), "{e}");
    assert!(e.ends_with("runs with --accept-invalid-certs)"), "{e}");
    alice.s.close().await;

    // Nobody listening: a clear failure, not a hang.
    let alice = Client::open(&strict, "alice").await;
    let r = alice.login("alicepw", peer::free_port()).await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(
        e.starts_with("connection failed: cannot talk to 127.0.0.1:"),
        "{e}"
    );
    // Verbs before connect.
    let e = alice.fails("join", room_target()).await;
    assert!(e.contains("uninitialized"), "{e}");
    alice.s.close().await;
    strict.shutdown().await;
}

/// Each SASL mechanism the platform offers, against a server that allows only that one.
#[tokio::test]
async fn every_sasl_mechanism() {
    for (mechanism, settings) in [
        (
            "SCRAM-SHA-256",
            r#"authentication = "internal_plain"
disable_sasl_mechanisms = { "SCRAM-SHA-1", "PLAIN" }"#,
        ),
        (
            "SCRAM-SHA-1",
            r#"authentication = "internal_hashed"
disable_sasl_mechanisms = { "SCRAM-SHA-256", "PLAIN" }"#,
        ),
        (
            "PLAIN",
            r#"authentication = "internal_plain"
disable_sasl_mechanisms = { "SCRAM-SHA-1", "SCRAM-SHA-256" }"#,
        ),
    ] {
        let server = Prosody::start_with(&[("alice", "alicepw")], settings);
        let gw = xmpp_gateway(true);
        let alice = Client::open(&gw, "alice").await;
        let r = alice.login("wrong", server.port).await;
        assert_eq!(
            r["error"], "connection failed: authentication failed: not-authorized",
            "{mechanism}: {r}"
        );
        let r = alice.login("alicepw", server.port).await;
        assert!(r.get("error").is_none(), "{mechanism}: {r}");
        alice.s.close().await;
        gw.shutdown().await;
    }
    // The control: with all three disabled, the server really offers none of them, so
    // each login above used the one left.
    let server = Prosody::start_with(
        &[("alice", "alicepw")],
        r#"authentication = "internal_plain"
disable_sasl_mechanisms = { "SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN" }"#,
    );
    let gw = xmpp_gateway(true);
    let alice = Client::open(&gw, "alice").await;
    let r = alice.login("alicepw", server.port).await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    // prosody closes the stream when it has nothing left to offer.
    assert!(e.contains("No stream features to proceed with"), "{e}");
    alice.s.close().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn server_drop_reconnects_and_rejoins() {
    let mut server = Prosody::start(&[("alice", "alicepw"), ("bob", "bobpw")]);
    let gw = xmpp_gateway(true);
    let mut alice = Client::open(&gw, "alice").await;
    let mut bob = Client::open(&gw, "bob").await;
    alice.login("alicepw", server.port).await;
    alice.ok("join", join_as("alice", "Alice")).await;

    server.kill();
    let lost = alice
        .expect("the connection loss", |v| {
            v["type"] == "connect" && v["object"]["status"] == "reconnecting"
        })
        .await;
    assert!(
        lost["error"]
            .as_str()
            .unwrap()
            .starts_with("Connection lost"),
        "{lost}"
    );
    let e = alice
        .fails(
            "send",
            json!({"target": person("bob@localhost"), "object": {"type": "message", "content": "x"}}),
        )
        .await;
    assert!(e.contains("reconnecting"), "{e}");
    server.restart();
    alice
        .expect("the reconnection", |v| {
            v["type"] == "connect" && v["object"]["status"] == "online"
        })
        .await;

    // alice is back in the room: bob joins and talks to her there.
    bob.login("bobpw", server.port).await;
    bob.ok("join", join_as("bob", "Bob")).await;
    let mut q = room_target();
    q["object"] = json!({"type": "attendance"});
    let r = bob.ok("query", q).await;
    assert!(
        r["object"]["members"]
            .as_array()
            .unwrap()
            .contains(&json!("Alice")),
        "{r}"
    );
    let mut msg = room_target();
    msg["object"] = json!({"type": "message", "content": "welcome back"});
    bob.ok("send", msg).await;
    alice
        .expect("the room message after reconnecting", |v| {
            v["type"] == "send" && v["object"]["content"] == "welcome back"
        })
        .await;
    bob.never("its own reflection", Duration::from_millis(300), |v| {
        v["type"] == "send" && v["object"]["content"] == "welcome back"
    })
    .await;
    for c in [alice, bob] {
        c.s.close().await;
    }
    gw.shutdown().await;
}

/// The core flows against a second implementation: login (and a refused one), 1:1 chat
/// both ways, a new room joined by two users, and a groupchat message.
#[tokio::test]
async fn ejabberd_core_flows() {
    let server = peer::Ejabberd::start(&[("alice", "alicepw"), ("bob", "bobpw")]);
    let gw = xmpp_gateway(true);
    let mut alice = Client::open(&gw, "alice").await;
    let mut bob = Client::open(&gw, "bob").await;
    let r = alice.login("nope", server.port).await;
    assert_eq!(
        r["error"], "connection failed: authentication failed: not-authorized",
        "{r}"
    );
    let r = alice.login("alicepw", server.port).await;
    assert!(r.get("error").is_none(), "{r}");
    let r = bob.login("bobpw", server.port).await;
    assert!(r.get("error").is_none(), "{r}");

    alice
        .ok(
            "send",
            json!({"target": person("bob@localhost/test"), "object": {"type": "message", "content": "hi bob"}}),
        )
        .await;
    let m = bob.expect("alice's message", |v| v["type"] == "send").await;
    assert_eq!(m["object"]["content"], "hi bob");
    bob.ok(
        "send",
        json!({"target": person("alice@localhost/test"), "object": {"type": "message", "content": "hi alice"}}),
    )
    .await;
    let m = alice.expect("bob's message", |v| v["type"] == "send").await;
    assert_eq!(m["object"]["content"], "hi alice");
    assert_eq!(m["actor"]["id"], "bob@localhost/test");

    alice.ok("join", join_as("alice", "Alice")).await;
    bob.ok("join", join_as("bob", "Bob")).await;
    let mut msg = room_target();
    msg["object"] = json!({"type": "message", "content": "hello room"});
    bob.ok("send", msg).await;
    let m = alice
        .expect("the room message", |v| {
            v["type"] == "send" && v["target"]["type"] == "room"
        })
        .await;
    assert_eq!(m["object"]["content"], "hello room");
    assert_eq!(m["actor"]["name"], "Bob");
    for c in [alice, bob] {
        c.s.close().await;
    }
    gw.shutdown().await;
}
