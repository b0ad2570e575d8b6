//! The irc platform through the gateway, in its real worker processes, against real IRC
//! servers the tests start on 127.0.0.1 (ngircd; InspIRCd with atheme for IRCv3 and SASL)
//! and a raw-socket observer client on the same network.

mod common;
mod irc_peers;

use std::sync::Arc;
use std::time::Duration;

use irc_peers::{Ircd, Observer};
use serde_json::{Value, json};
use switchboard_engine::Engine;
use switchboard_gateway::{Gateway, Push, Session};
use switchboard_platform::Platform;
use switchboard_platform_irc::Irc;
use switchboard_protocol::context;
use tokio::sync::mpsc;

const HOST: &str = "127.0.0.1";

fn gateway(settings: Value) -> Gateway {
    Gateway::new(
        common::config(settings),
        Engine::embedded(),
        vec![Irc::manifest()],
        "test",
    )
    .unwrap()
}

/// A session and what the server pushes to it.
struct Client {
    s: Session,
    rx: mpsc::UnboundedReceiver<Push>,
    nick: String,
}

async fn open(gw: &Gateway, nick: &str) -> Client {
    let (tx, rx) = mpsc::unbounded_channel();
    let s = gw
        .open_session(
            common::LOCAL,
            Arc::new(move |p| {
                let _ = tx.send(p);
            }),
        )
        .await
        .unwrap();
    Client {
        s,
        rx,
        nick: nick.to_owned(),
    }
}

fn actor(nick: &str) -> Value {
    json!({"id": format!("{nick}@{HOST}"), "type": "person", "name": nick})
}

fn room(channel: &str) -> Value {
    json!({"id": format!("{channel}@{HOST}"), "type": "room", "name": channel})
}

impl Client {
    fn activity(&self, verb: &str, target: Option<Value>, object: Option<Value>) -> Value {
        let mut a = json!({"type": verb, "@context": context::canonical("irc"), "actor": actor(&self.nick)});
        if let Some(t) = target {
            a["target"] = t;
        }
        if let Some(o) = object {
            a["object"] = o;
        }
        a
    }

    async fn credentials(&self, object: Value) {
        let mut creds =
            json!({"type": "credentials", "server": HOST, "nick": self.nick, "secure": false});
        for (k, v) in object.as_object().unwrap() {
            creds[k] = v.clone();
        }
        let a = json!({"type": "credentials", "@context": context::canonical("irc"), "actor": actor(&self.nick), "object": creds});
        let reply = self.s.credentials(self.s.ticket(), a).await;
        assert!(reply.get("error").is_none(), "{reply}");
    }

    async fn send_raw(&self, a: Value) -> Value {
        self.s.message(self.s.ticket(), a).await
    }

    async fn ok(&self, verb: &str, target: Option<Value>, object: Option<Value>) -> Value {
        let reply = self.send_raw(self.activity(verb, target, object)).await;
        assert!(reply.get("error").is_none(), "{verb} failed: {reply}");
        reply
    }

    async fn fails(&self, verb: &str, target: Option<Value>, object: Option<Value>) -> String {
        let reply = self.send_raw(self.activity(verb, target, object)).await;
        reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{verb} should fail: {reply}"))
            .to_owned()
    }

    async fn connect(&self, port: u16, extra: Value) -> Value {
        let mut o = extra;
        o["port"] = json!(port);
        self.credentials(o).await;
        self.send_raw(self.activity("connect", None, None)).await
    }

    async fn say(&self, channel: &str, text: &str) -> Value {
        self.ok(
            "send",
            Some(room(channel)),
            Some(json!({"type": "message", "content": text})),
        )
        .await
    }

    /// The next pushed message matching `pred` (others are skipped); panics after 10 s.
    async fn push(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Push::Message(m))) if pred(&m) => return m,
                Ok(Some(_)) => {}
                Ok(None) => panic!("{}: session closed waiting for {what}", self.nick),
                Err(_) => panic!("{}: no push for {what} within 10 s", self.nick),
            }
        }
    }
}

fn is(a: &Value, verb: &str, object_type: &str) -> bool {
    a["type"] == verb && a["object"]["type"] == object_type
}

#[tokio::test]
async fn core_flows_against_ngircd() {
    let ircd = Ircd::ngircd(None);
    let gw = gateway(json!({}));
    let mut watcher = Observer::connect(ircd.port, "watcher", None).await;
    watcher.join("#room").await;
    watcher.send("MODE #room +t").await;

    let mut a = open(&gw, "sb1").await;
    let reply = a.connect(ircd.port, json!({})).await;
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(reply["type"], "connect");

    // join: the observer sees it; the reply came after the server's echo
    a.ok("join", Some(room("#room")), None).await;
    watcher
        .expect(|l| l.starts_with(":sb1!") && l.contains("JOIN"))
        .await;
    let names = a
        .push("attendance after join", |m| is(m, "query", "attendance"))
        .await;
    assert_eq!(names["actor"], room("#room"));
    assert!(
        names["object"]["members"]
            .as_array()
            .unwrap()
            .contains(&json!("watcher"))
    );

    // others joining and leaving, with the channel name kept
    let mut visitor = Observer::connect(ircd.port, "visitor", None).await;
    visitor.join("#room").await;
    let m = a.push("visitor joins", |m| m["type"] == "join").await;
    assert_eq!(
        (m["actor"].clone(), m["target"].clone()),
        (actor("visitor"), room("#room"))
    );
    visitor.send("PART #room :bye all").await;
    let m = a.push("visitor leaves", |m| m["type"] == "leave").await;
    assert_eq!(
        (m["actor"].clone(), m["target"].clone()),
        (actor("visitor"), room("#room"))
    );
    assert_eq!(m["object"]["content"], "bye all");

    // send both ways
    a.say("#room", "hello from switchboard").await;
    watcher
        .expect(|l| l.ends_with("PRIVMSG #room :hello from switchboard"))
        .await;
    watcher.send("PRIVMSG #room :hi sb1").await;
    let m = a
        .push("channel message", |m| is(m, "send", "message"))
        .await;
    assert_eq!(m["actor"], actor("watcher"));
    assert_eq!(m["target"], room("#room"));
    assert_eq!(m["object"]["content"], "hi sb1");
    assert!(m["published"].as_str().unwrap().ends_with('Z'), "{m}");
    assert_eq!(m["@context"], context::canonical("irc"));
    watcher.send("PRIVMSG sb1 :just for you").await;
    let m = a
        .push("private message", |m| is(m, "send", "message"))
        .await;
    assert_eq!(m["target"], actor("sb1"));
    assert_eq!(m["object"]["content"], "just for you");
    watcher.send("PRIVMSG #room :\u{1}ACTION waves\u{1}").await;
    let m = a.push("action", |m| is(m, "send", "me")).await;
    assert_eq!(m["object"]["content"], "waves");
    watcher.send("NOTICE #room :a notice").await;
    let m = a.push("notice", |m| is(m, "send", "notice")).await;
    assert_eq!(m["object"]["content"], "a notice");

    // /me and /notice
    a.say("#room", "/me dances").await;
    watcher
        .expect(|l| l.ends_with("PRIVMSG #room :\u{1}ACTION dances\u{1}"))
        .await;
    a.say("#room", "/notice heads up").await;
    watcher
        .expect(|l| l.ends_with("NOTICE #room :heads up"))
        .await;

    // topic: refused without ops (with the server's reason), accepted with them
    let e = a
        .fails(
            "update",
            Some(room("#room")),
            Some(json!({"type": "topic", "content": "mine"})),
        )
        .await;
    assert!(e.contains("operator"), "{e}");
    watcher.send("MODE #room +o sb1").await;
    let m = a.push("op given", |m| m["type"] == "add").await;
    assert_eq!(m["object"]["subject"]["role"], "admin");
    assert_eq!(m["target"], actor("sb1"));
    a.ok(
        "update",
        Some(room("#room")),
        Some(json!({"type": "topic", "content": "mine now"})),
    )
    .await;
    watcher
        .expect(|l| l.ends_with("TOPIC #room :mine now"))
        .await;
    watcher.send("TOPIC #room :watcher's topic").await;
    let m = a.push("topic change", |m| is(m, "update", "topic")).await;
    assert_eq!(
        (m["actor"].clone(), m["object"]["content"].clone()),
        (actor("watcher"), json!("watcher's topic"))
    );

    // names
    let r = a
        .ok(
            "query",
            Some(room("#room")),
            Some(json!({"type": "attendance"})),
        )
        .await;
    assert_eq!(r["type"], "query");
    assert_eq!(r["actor"], room("#room"));
    let mut members: Vec<String> = serde_json::from_value(r["object"]["members"].clone()).unwrap();
    members.sort();
    assert_eq!(members, ["sb1", "watcher"]);

    // long and multi-line messages: several lines, each within 512 bytes, nothing lost
    let long = "é".repeat(700);
    a.say("#room", &long).await;
    let mut got = String::new();
    while got.len() < long.len() {
        let l = watcher
            .expect(|l| l.starts_with(":sb1!") && l.contains("PRIVMSG #room :"))
            .await;
        assert!(l.len() + 2 <= 512, "{} bytes", l.len() + 2);
        got.push_str(l.split_once("PRIVMSG #room :").unwrap().1);
    }
    assert_eq!(got, long);
    a.say("#room", "line one\nline two").await;
    watcher
        .expect(|l| l.ends_with("PRIVMSG #room :line one"))
        .await;
    watcher
        .expect(|l| l.ends_with("PRIVMSG #room :line two"))
        .await;

    // injection: CR/LF in content are line breaks inside the message, never a command
    a.say("#room", "inject\r\nQUIT :pwned\r\nJOIN #evil").await;
    watcher
        .expect(|l| l.ends_with("PRIVMSG #room :inject"))
        .await;
    watcher
        .expect(|l| l.ends_with("PRIVMSG #room :QUIT :pwned"))
        .await;
    watcher
        .expect(|l| l.ends_with("PRIVMSG #room :JOIN #evil"))
        .await;
    let e = a
        .fails(
            "update",
            Some(room("#room")),
            Some(json!({"type": "topic", "content": "a\r\nQUIT"})),
        )
        .await;
    assert!(e.contains("line breaks"), "{e}");
    let e = a
        .fails(
            "update",
            Some(json!({"id": format!("x\r\nQUIT@{HOST}"), "type": "person"})),
            Some(json!({"type": "address"})),
        )
        .await;
    assert!(e.contains("invalid nick"), "{e}");
    let e = a
        .fails(
            "join",
            Some(json!({"id": format!("#a\r\nQUIT@{HOST}"), "type": "room"})),
            None,
        )
        .await;
    // (the schema's room id pattern already refuses whitespace)
    assert!(e.starts_with("[irc] /target/id: must match pattern"), "{e}");
    for bad in ["#", "#bell\u{7}"] {
        let target = json!({"id": format!("{bad}@{HOST}"), "type": "room"});
        let e = a.fails("join", Some(target), None).await;
        assert!(e.starts_with("invalid channel name"), "{e}");
    }
    let e = a
        .fails(
            "join",
            Some(json!({"id": "#room@elsewhere.example", "type": "room"})),
            None,
        )
        .await;
    assert!(e.contains("not on this connection's server"), "{e}");
    a.say("#room", "still here").await;
    watcher
        .expect(|l| l.ends_with("PRIVMSG #room :still here"))
        .await;
    let commands_from_sb1 = |cmd: &str| {
        watcher
            .seen
            .iter()
            .filter(|l| l.starts_with(":sb1!") && l.split(' ').nth(1) == Some(cmd))
            .count()
    };
    assert_eq!(commands_from_sb1("QUIT"), 0);
    assert_eq!(commands_from_sb1("JOIN"), 1, "no JOIN #evil");

    // nick changes, ours and theirs; collision is a clear failure
    a.ok(
        "update",
        Some(actor("sb1new")),
        Some(json!({"type": "address"})),
    )
    .await;
    watcher
        .expect(|l| l.starts_with(":sb1!") && l.contains("NICK") && l.ends_with("sb1new"))
        .await;
    a.nick = "sb1new".into(); // the instance was re-keyed: we are the new actor now
    watcher.send("NICK watcher2").await;
    let m = a.push("nick change", |m| is(m, "update", "address")).await;
    assert_eq!(
        (m["actor"].clone(), m["target"].clone()),
        (actor("watcher"), actor("watcher2"))
    );
    watcher.nick = "watcher2".into();
    let e = a
        .fails(
            "update",
            Some(actor("watcher2")),
            Some(json!({"type": "address"})),
        )
        .await;
    assert!(e.contains("already in use"), "{e}");

    // leave (and leaving again is the server's refusal)
    a.ok("leave", Some(room("#room")), None).await;
    watcher
        .expect(|l| l.starts_with(":sb1new!") && l.contains("PART #room"))
        .await;
    let e = a.fails("leave", Some(room("#room")), None).await;
    assert!(
        e.contains("not on that channel") || e.contains("442"),
        "{e}"
    );

    // kick
    a.ok("join", Some(room("#room")), None).await;
    watcher
        .expect(|l| l.starts_with(":sb1new!") && l.contains("JOIN"))
        .await;
    watcher.send("KICK #room sb1new :behave").await;
    let m = a
        .push("kick", |m| {
            m["type"] == "leave" && m["actor"] == actor("sb1new")
        })
        .await;
    assert_eq!(m["object"]["content"], "kicked by watcher2: behave");
    assert_eq!(m["target"], room("#room"));

    // others leaving (seen while sharing a channel: rejoin after the kick)
    a.ok("join", Some(room("#room")), None).await;
    watcher.send("QUIT :gone home").await;
    let m = a
        .push("quit", |m| {
            m["type"] == "leave" && m["actor"] == actor("watcher2")
        })
        .await;
    // (ngircd quotes quit reasons)
    assert!(
        m["object"]["content"]
            .as_str()
            .unwrap()
            .contains("gone home"),
        "{m}"
    );

    // disconnect: the connection is gone, later requests say so
    a.ok("disconnect", None, None).await;
    let e = a.fails("join", Some(room("#room")), None).await;
    assert_eq!(e, "join called on uninitialized platform");

    a.s.close().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn sessions_share_a_login_and_anonymous_ones_never_do() {
    let locked = Ircd::ngircd(Some("srvpw"));
    let open_server = Ircd::ngircd(None);
    let gw = gateway(json!({}));

    // Same nick and secret: one connection (a second one would collide on the nick).
    let mut a = open(&gw, "shared").await;
    let mut b = open(&gw, "shared").await;
    let pw = json!({"password": "srvpw"});
    let r = a.connect(locked.port, pw.clone()).await;
    assert!(r.get("error").is_none(), "{r}");
    let r = b.connect(locked.port, pw.clone()).await;
    assert!(r.get("error").is_none(), "shared, not a second login: {r}");
    // There is no `switchboard-worker-irc`: IRC workers run the shared `switchboard-worker`
    // (other tests in this binary run IRC workers at the same time: all of them must).
    let shared = std::fs::canonicalize(env!("CARGO_BIN_EXE_switchboard-worker")).unwrap();
    let irc: Vec<_> = common::worker_pids()
        .into_iter()
        .filter_map(common::worker_exe)
        .filter(|(_, args)| args == &["platform", "irc"])
        .collect();
    assert!(!irc.is_empty(), "no irc worker process");
    for (exe, _) in irc {
        assert_eq!(exe, shared);
    }
    a.ok("join", Some(room("#s")), None).await;
    let mut watcher = Observer::connect(locked.port, "watcher", Some("srvpw")).await;
    watcher.join("#s").await;
    watcher.send("PRIVMSG #s :to both").await;
    for c in [&mut a, &mut b] {
        let m = c.push("shared message", |m| is(m, "send", "message")).await;
        assert_eq!(m["object"]["content"], "to both");
    }
    // b sends on the shared connection; a is shown the result
    b.say("#s", "from b").await;
    watcher
        .expect(|l| l.starts_with(":shared!") && l.ends_with("PRIVMSG #s :from b"))
        .await;
    let m = a
        .push("b's send", |m| {
            m["type"] == "send" && m["actor"] == actor("shared")
        })
        .await;
    assert_eq!(m["object"]["content"], "from b");

    // Different credentials (another username, same secret): not shared, so a second
    // connection, whose nick collides: a clear failure.
    let c = open(&gw, "shared").await;
    let r = c
        .connect(
            locked.port,
            json!({"password": "srvpw", "username": "other"}),
        )
        .await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(e.contains("already in use"), "{e}");
    // A wrong server password is the server's refusal.
    let d = open(&gw, "wrongpw").await;
    let r = d.connect(locked.port, json!({"password": "nope"})).await;
    assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");

    // Anonymous (no secret): never shared, even with identical credentials.
    let e1 = open(&gw, "anon").await;
    let e2 = open(&gw, "anon").await;
    let r = e1.connect(open_server.port, json!({})).await;
    assert!(r.get("error").is_none(), "{r}");
    let r = e2.connect(open_server.port, json!({})).await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(e.contains("already in use"), "{e}");

    for s in [&a.s, &b.s, &c.s, &d.s, &e1.s, &e2.s] {
        s.close().await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn server_drop_reconnects_and_rejoins() {
    let mut ircd = Ircd::ngircd(None);
    let gw = gateway(json!({}));
    let mut a = open(&gw, "phoenix").await;
    let r = a.connect(ircd.port, json!({})).await;
    assert!(r.get("error").is_none(), "{r}");
    a.ok("join", Some(room("#r1")), None).await;
    a.ok("join", Some(room("#r2")), None).await;

    ircd.kill();
    let m = a.push("lost notice", |m| m["type"] == "disconnect").await;
    assert_eq!(m["actor"]["type"], "service");
    assert!(
        m["object"]["content"]
            .as_str()
            .unwrap()
            .contains("reconnecting"),
        "{m}"
    );
    let e = a
        .fails(
            "send",
            Some(room("#r1")),
            Some(json!({"type": "message", "content": "x"})),
        )
        .await;
    assert!(e.contains("reconnecting") || e.contains("lost"), "{e}");

    ircd.restart();
    let m = a.push("back notice", |m| m["type"] == "connect").await;
    assert_eq!(
        m["object"]["content"],
        "reconnected to the irc server; rejoining #r1, #r2"
    );
    let mut watcher = Observer::connect(ircd.port, "watcher", None).await;
    // The rejoin may race the observer: wait until the server lists phoenix in #r2.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        watcher.send("NAMES #r2").await;
        let l = watcher
            .expect(|l| l.contains(" 353 ") || l.contains(" 366 "))
            .await;
        if l.contains("phoenix") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "phoenix did not rejoin #r2"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watcher.join("#r1").await;
    a.say("#r1", "back again").await;
    watcher
        .expect(|l| l.starts_with(":phoenix!") && l.ends_with("PRIVMSG #r1 :back again"))
        .await;

    a.s.close().await;
    gw.shutdown().await;
}

#[tokio::test]
async fn tls_needs_the_operator_opt_in_for_a_self_signed_server() {
    let ircd = Ircd::ngircd(None);
    let strict = gateway(json!({}));
    let a = open(&strict, "tlsuser").await;
    let r = a.connect(ircd.tls_port, json!({"secure": true})).await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(
        e.contains("TLS handshake") && e.contains("certificate"),
        "{e}"
    );
    a.s.close().await;
    strict.shutdown().await;

    let lenient = gateway(json!({"accept_invalid_certs": true}));
    let b = open(&lenient, "tlsuser").await;
    let r = b.connect(ircd.tls_port, json!({"secure": true})).await;
    assert!(r.get("error").is_none(), "{r}");
    let mut watcher = Observer::connect(ircd.port, "watcher", None).await;
    watcher.join("#tls").await;
    b.ok("join", Some(room("#tls")), None).await;
    b.say("#tls", "over tls").await;
    watcher
        .expect(|l| l.starts_with(":tlsuser!") && l.ends_with("PRIVMSG #tls :over tls"))
        .await;
    b.s.close().await;
    lenient.shutdown().await;
}

#[tokio::test]
async fn a_nick_change_rekeys_the_shared_connection() {
    let ircd = Ircd::ngircd(Some("srvpw"));
    let gw = gateway(json!({}));
    let mut a = open(&gw, "renamer").await;
    let mut b = open(&gw, "renamer").await;
    let pw = json!({"password": "srvpw"});
    for c in [&a, &b] {
        let r = c.connect(ircd.port, pw.clone()).await;
        assert!(r.get("error").is_none(), "{r}");
    }
    a.ok("join", Some(room("#k")), None).await;
    let mut watcher = Observer::connect(ircd.port, "watcher", Some("srvpw")).await;
    watcher.join("#k").await;

    a.ok(
        "update",
        Some(actor("renamed")),
        Some(json!({"type": "address"})),
    )
    .await;
    watcher
        .expect(|l| l.starts_with(":renamer!") && l.ends_with("NICK :renamed"))
        .await;
    let m = b
        .push("the nick change, shown to the other session", |m| {
            is(m, "update", "address")
        })
        .await;
    assert_eq!(m["target"], actor("renamed"));

    // Both sessions now reach the same connection as the new actor.
    a.nick = "renamed".into();
    b.nick = "renamed".into();
    a.say("#k", "a as renamed").await;
    watcher
        .expect(|l| l.starts_with(":renamed!") && l.ends_with("PRIVMSG #k :a as renamed"))
        .await;
    b.say("#k", "b as renamed").await;
    watcher
        .expect(|l| l.starts_with(":renamed!") && l.ends_with("PRIVMSG #k :b as renamed"))
        .await;
    watcher.send("PRIVMSG #k :hello renamed").await;
    for c in [&mut a, &mut b] {
        let m = c
            .push("message after the rename", |m| {
                is(m, "send", "message") && m["object"]["content"] == "hello renamed"
            })
            .await;
        assert_eq!(m["target"], room("#k"));
    }

    // The old login no longer names that connection: connecting with it opens a new one
    // (the old nick is free now).
    let c = open(&gw, "renamer").await;
    let r = c.connect(ircd.port, pw.clone()).await;
    assert!(r.get("error").is_none(), "{r}");
    c.ok("join", Some(room("#k")), None).await;
    watcher
        .expect(|l| l.starts_with(":renamer!") && l.contains("JOIN"))
        .await;

    for s in [&a.s, &b.s, &c.s] {
        s.close().await;
    }
    gw.shutdown().await;
}

/// The value of IRCv3 tag `key` on a raw line.
fn line_tag(line: &str, key: &str) -> Option<String> {
    let tags = line.strip_prefix('@')?.split(' ').next()?;
    tags.split(';')
        .find_map(|t| t.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

#[tokio::test]
async fn ircv3_and_sasl_on_inspircd_with_atheme() {
    let ircd = Ircd::inspircd(true);
    {
        let mut reg = Observer::connect(ircd.port, "alice", None).await;
        reg.register_account("alicepw").await;
        reg.send("QUIT").await;
    }
    let gw = gateway(json!({}));

    // SASL PLAIN: a wrong password is the server's refusal, the right one logs in.
    let wrong = open(&gw, "alice").await;
    let r = wrong
        .connect(
            ircd.port,
            json!({"password": "nope", "saslMechanism": "PLAIN"}),
        )
        .await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(e.starts_with("SASL authentication failed"), "{e}");
    let mut a = open(&gw, "alice").await;
    let r = a
        .connect(
            ircd.port,
            json!({"password": "alicepw", "saslMechanism": "PLAIN"}),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    // OAUTHBEARER, which these services do not offer: a clear failure, not a hang.
    let oauth = open(&gw, "alice").await;
    let r = oauth
        .connect(
            ircd.port,
            json!({"token": "tok", "saslMechanism": "OAUTHBEARER"}),
        )
        .await;
    let e = r["error"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(
        e.contains("OAUTHBEARER") || e.starts_with("SASL authentication failed"),
        "{e}"
    );
    oauth.s.close().await;
    // SASL on a server without it is a clear failure too (checked against ngircd).
    let plain = Ircd::ngircd(None);
    let n = open(&gw, "nosasl").await;
    let r = n
        .connect(
            plain.port,
            json!({"password": "pw", "saslMechanism": "PLAIN"}),
        )
        .await;
    assert_eq!(r["error"], "127.0.0.1 does not offer SASL authentication");

    // labeled-response acks: join, names, a refused topic with the server's reason
    let mut watcher = Observer::connect(ircd.port, "watcher", None).await;
    watcher.caps("echo-message server-time message-tags").await;
    watcher.join("#v3").await;
    a.ok("join", Some(room("#v3")), None).await;
    watcher
        .expect(|l| l.contains(":alice!") && l.contains("JOIN"))
        .await;
    let r = a
        .ok(
            "query",
            Some(room("#v3")),
            Some(json!({"type": "attendance"})),
        )
        .await;
    let mut members: Vec<String> = serde_json::from_value(r["object"]["members"].clone()).unwrap();
    members.sort();
    assert_eq!(members, ["alice", "watcher"]);
    let e = a
        .fails(
            "update",
            Some(room("#v3")),
            Some(json!({"type": "topic", "content": "no ops"})),
        )
        .await;
    assert!(e.contains("channel op") && e.contains("482"), "{e}");
    watcher.send("MODE #v3 +o alice").await;
    a.push("op given", |m| m["type"] == "add").await;
    a.ok(
        "update",
        Some(room("#v3")),
        Some(json!({"type": "topic", "content": "ops now"})),
    )
    .await;
    watcher.expect(|l| l.ends_with("TOPIC #v3 :ops now")).await;

    // echo-message acks a send
    a.say("#v3", "labeled and echoed").await;
    watcher
        .expect(|l| l.contains(":alice!") && l.ends_with("PRIVMSG #v3 :labeled and echoed"))
        .await;
    let e = a
        .fails(
            "send",
            Some(json!({"id": format!("nobody@{HOST}"), "type": "person"})),
            Some(json!({"type": "message", "content": "hi"})),
        )
        .await;
    assert!(e.contains("No such nick"), "{e}");

    // server-time and msgid: the push carries the server's own stamp and id
    watcher.send("PRIVMSG #v3 :stamped").await;
    let echo = watcher
        .expect(|l| l.ends_with("PRIVMSG #v3 :stamped"))
        .await;
    let m = a
        .push("stamped message", |m| m["object"]["content"] == "stamped")
        .await;
    assert_eq!(
        m["published"].as_str(),
        line_tag(&echo, "time").as_deref(),
        "{echo}"
    );
    assert_eq!(
        m["id"].as_str(),
        line_tag(&echo, "msgid").as_deref(),
        "{echo}"
    );

    // nick collision through labeled-response
    let e = a
        .fails(
            "update",
            Some(actor("watcher")),
            Some(json!({"type": "address"})),
        )
        .await;
    assert!(e.contains("already in use"), "{e}");

    for s in [&wrong.s, &a.s, &n.s] {
        s.close().await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn server_pings_are_answered_so_an_idle_login_stays() {
    // ngircd raises these to its minimum: it PINGs an idle client after about 6 s and
    // drops it at about 12 s without a PONG (checked by hand with a silent raw client).
    let ircd = Ircd::ngircd_pinging(2);
    let gw = gateway(json!({}));
    let mut a = open(&gw, "idler").await;
    let r = a.connect(ircd.port, json!({})).await;
    assert!(r.get("error").is_none(), "{r}");
    a.ok("join", Some(room("#idle")), None).await;
    tokio::time::sleep(Duration::from_secs(14)).await;
    while let Ok(p) = a.rx.try_recv() {
        if let Push::Message(m) = p {
            assert_ne!(m["type"], "disconnect", "dropped while idle: {m}");
        }
    }
    let mut watcher = Observer::connect(ircd.port, "watcher", None).await;
    watcher.join("#idle").await;
    a.say("#idle", "still connected").await;
    watcher
        .expect(|l| l.starts_with(":idler!") && l.ends_with("PRIVMSG #idle :still connected"))
        .await;
    // A burst over the flood-control budget: paced, but every line arrives, in order.
    let many: Vec<String> = (1..=14).map(|n| format!("burst line {n}")).collect();
    a.say("#idle", &many.join("\n")).await;
    for line in &many {
        let end = format!("PRIVMSG #idle :{line}");
        watcher
            .expect(move |l| l.starts_with(":idler!") && l.ends_with(&end))
            .await;
    }
    a.s.close().await;
    gw.shutdown().await;
}
