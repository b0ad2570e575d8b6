//! The xmpp platform, wire-compatible with Sockethub's: one XMPP client connection per
//! (actor, credentials) worker, driven by ActivityStreams verbs, with incoming traffic
//! pushed back as activities.
//!
//! - [`manifest`]: verbs and schemas.
//! - [`credentials`]: the credentials object → JID, host, port, TLS mode.
//! - [`connector`] and [`login`]: STARTTLS / direct TLS on the project's rustls config,
//!   SASL, reconnection with backoff.
//! - [`connection`]: the stream-owning task and the waits that make acks honest.
//! - [`incoming`]: stanzas → activities.
//!
//! Verbs answer when the server has accepted what they did: IQs by their result, MUC
//! joins and leaves by the room's self-presence, groupchat messages by the room's
//! reflection, and stanzas that get no reply of their own (chat messages, presence,
//! subscriptions) by a ping that follows them — a stanza error bounced before the pong
//! fails the job with the server's text.

mod connection;
mod connector;
mod credentials;
mod incoming;
mod login;
mod manifest;
mod stanza;

use serde_json::{Value, json};
use switchboard_platform::{Job, Platform, PlatformError, WorkerContext, tls};
use switchboard_protocol::Manifest;
use tokio::sync::Mutex;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::disco::{
    DiscoInfoQuery, DiscoInfoResult, DiscoItemsQuery, DiscoItemsResult,
};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Id, Lang, Message, MessageType};
use tokio_xmpp::parsers::message_correct::Replace;
use tokio_xmpp::parsers::presence::{Presence, Show, Type as PresenceType};
use tokio_xmpp::parsers::roster::{Item as RosterItem, Roster, Subscription};

use connection::Connection;
use credentials::Credentials;
use stanza::new_id;

pub struct Xmpp {
    ctx: WorkerContext,
    /// The live connection; jobs run one at a time (concurrency 1), the lock only guards
    /// against `shutdown` racing a job.
    conn: Mutex<Option<Connection>>,
}

fn fail(msg: impl Into<String>) -> PlatformError {
    PlatformError::new(msg)
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn jid(v: &Value, pointer: &str) -> Result<Jid, PlatformError> {
    let s = text(v, pointer).ok_or_else(|| fail(format!("{pointer} is required")))?;
    Jid::new(s).map_err(|e| fail(format!("invalid address {s:?} at {pointer}: {e}")))
}

fn room(v: &Value) -> Result<BareJid, PlatformError> {
    Ok(jid(v, "/target/id")?.to_bare())
}

impl Platform for Xmpp {
    fn manifest() -> Manifest {
        manifest::manifest()
    }

    fn new(ctx: WorkerContext) -> Self {
        Xmpp {
            ctx,
            conn: Mutex::new(None),
        }
    }

    async fn handle(&self, job: Job) -> Result<Option<Value>, PlatformError> {
        let verb = job.verb().to_owned();
        tracing::debug!(job = %job.id, session = %job.session, %verb, "xmpp job");
        let mut slot = self.conn.lock().await;
        if verb == "connect" {
            return self.connect(&mut slot, &job).await;
        }
        if verb == "disconnect" {
            if let Some(conn) = slot.take() {
                conn.close().await;
            }
            return Ok(None);
        }
        let conn = slot.as_ref().ok_or_else(|| {
            fail(format!(
                "{verb} called on uninitialized platform: connect first"
            ))
        })?;
        if !conn.is_online() {
            return Err(fail("not connected: reconnecting to the server"));
        }
        let a = &job.activity;
        match verb.as_str() {
            "join" => {
                let room = room(a)?;
                let nick = text(a, "/actor/name")
                    .map(str::to_owned)
                    .unwrap_or_else(|| {
                        conn.bound.node().map(|n| n.to_string()).unwrap_or_default()
                    });
                let created = conn.join(room.clone(), nick).await.map_err(fail)?;
                if created {
                    // A room this join created stays locked until its owner configures it
                    // (XEP-0045 §10.1.2): accept the default configuration ("instant room").
                    let iq = connection::unlock_room(&room);
                    conn.iq(iq).await.map_err(|e| {
                        fail(format!(
                            "room {room} was created but could not be unlocked: {e}"
                        ))
                    })?;
                }
                Ok(None)
            }
            "leave" => {
                conn.leave(room(a)?).await.map_err(fail)?;
                Ok(None)
            }
            "send" => self.send(conn, a).await,
            "update" => {
                let presence = presence_of(a)?;
                let stanzas = conn.set_presence(&presence);
                conn.send_checked(stanzas, None).await.map_err(fail)?;
                Ok(None)
            }
            "request-friend" => {
                let to = jid(a, "/target/id")?.to_bare();
                conn.send_checked(vec![Presence::subscribe().with_to(to).into()], None)
                    .await
                    .map_err(fail)?;
                Ok(None)
            }
            "make-friend" => {
                // Approve their request and ask for theirs, so both see each other.
                let to = jid(a, "/target/id")?.to_bare();
                let stanzas = vec![
                    Presence::subscribed().with_to(to.clone()).into(),
                    Presence::subscribe().with_to(to).into(),
                ];
                conn.send_checked(stanzas, None).await.map_err(fail)?;
                Ok(None)
            }
            "remove-friend" => {
                // Removing the roster item cancels both subscriptions (RFC 6121 §2.5).
                let contact = jid(a, "/target/id")?.to_bare();
                let item = RosterItem {
                    jid: contact,
                    name: None,
                    subscription: Subscription::Remove,
                    ask: Default::default(),
                    groups: vec![],
                    approved: None,
                };
                let iq = Iq::from_set(
                    new_id(),
                    Roster {
                        ver: None,
                        items: vec![item],
                    },
                );
                conn.iq(iq).await.map_err(fail)?;
                Ok(None)
            }
            "query" => {
                let target = jid(a, "/target/id")?;
                let kind = text(a, "/object/type").unwrap_or("attendance");
                let result = if kind == "room-info" {
                    let iq = Iq::from_get(new_id(), DiscoInfoQuery { node: None })
                        .with_to(target.clone());
                    let payload = conn.iq(iq).await.map_err(fail)?;
                    let info = payload
                        .and_then(|p| DiscoInfoResult::try_from(p).ok())
                        .ok_or_else(|| fail("the server sent no disco#info"))?;
                    incoming::room_info(&target.to_string(), conn.actor(), &info)
                } else if let Some(members) = conn.occupants(&target.to_bare()) {
                    // In the room: the occupants its presences announced (rooms need not
                    // list them in disco#items).
                    incoming::attendance(&target.to_bare().to_string(), conn.actor(), members)
                } else {
                    let iq = Iq::from_get(
                        new_id(),
                        DiscoItemsQuery {
                            node: None,
                            rsm: None,
                        },
                    )
                    .with_to(target.to_bare().into());
                    let payload = conn.iq(iq).await.map_err(fail)?;
                    let items = payload
                        .and_then(|p| DiscoItemsResult::try_from(p).ok())
                        .ok_or_else(|| fail("the server sent no disco#items"))?;
                    let members = items
                        .items
                        .iter()
                        .map(|i| {
                            i.name
                                .clone()
                                .or_else(|| i.jid.resource().map(|r| r.to_string()))
                                .unwrap_or_else(|| i.jid.to_string())
                        })
                        .collect();
                    incoming::attendance(&target.to_bare().to_string(), conn.actor(), members)
                };
                // Sockethub clients expect the answer as a pushed message; the ack carries it
                // too.
                self.ctx.emit_to(&job.session, result.clone()).await;
                Ok(Some(result))
            }
            other => Err(fail(format!("platform method {other} not available"))),
        }
    }

    async fn shutdown(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            conn.close().await;
        }
    }
}

impl Xmpp {
    async fn connect(
        &self,
        slot: &mut Option<Connection>,
        job: &Job,
    ) -> Result<Option<Value>, PlatformError> {
        // Sessions presenting the same credentials share this worker and its connection.
        if slot.is_some() {
            return Ok(None);
        }
        let object = job
            .credentials
            .as_ref()
            .ok_or_else(|| fail("credentials are required to connect"))?;
        let creds = Credentials::from_object(object)?;
        let config = tls::client_config(tls::accept_invalid_certs(&self.ctx))?;
        let actor = json!({
            "type": "person",
            "id": text(&job.activity, "/actor/id").unwrap_or_default(),
        });
        tracing::info!(jid = %creds.jid, host = %creds.host, port = creds.port, "connecting");
        let conn = Connection::open(creds, config, self.ctx.clone(), actor)
            .await
            .map_err(|e| fail(format!("connection failed: {e}")))?;
        tracing::info!(jid = %conn.bound, "online");
        *slot = Some(conn);
        Ok(None)
    }

    async fn send(&self, conn: &Connection, a: &Value) -> Result<Option<Value>, PlatformError> {
        let to = jid(a, "/target/id")?;
        let content = text(a, "/object/content").unwrap_or_default().to_owned();
        let id = text(a, "/object/id")
            .map(str::to_owned)
            .unwrap_or_else(new_id);
        let groupchat = text(a, "/target/type") == Some("room");
        let (type_, to) = if groupchat {
            (MessageType::Groupchat, Jid::from(to.to_bare()))
        } else {
            (MessageType::Chat, to)
        };
        let mut message = Message::new_with_type(type_, Some(to)).with_body(Lang::new(), content);
        message.id = Some(Id(id.clone()));
        if let Some(replaced) = text(a, "/object/xmpp:replace/id") {
            message = message.with_payload(Replace {
                id: Id(replaced.to_owned()),
            });
        }
        if groupchat {
            conn.send_groupchat(message, id.clone())
                .await
                .map_err(fail)?;
        } else {
            conn.send_checked(vec![Stanza::from(message)], Some(id.clone()))
                .await
                .map_err(fail)?;
        }
        // The answer is the request with the message id filled in, for later corrections.
        let mut reply = a.clone();
        reply["object"]["id"] = id.into();
        Ok(Some(reply))
    }
}

/// The presence an `update` asks for: `presence` online/away/chat/dnd/xa/offline and an
/// optional status text in `content`.
fn presence_of(a: &Value) -> Result<Presence, PlatformError> {
    let show = text(a, "/object/presence").unwrap_or("online");
    let mut p = match show {
        "offline" => Presence::new(PresenceType::Unavailable),
        "online" => Presence::available(),
        "away" => Presence::available().with_show(Show::Away),
        "chat" => Presence::available().with_show(Show::Chat),
        "dnd" => Presence::available().with_show(Show::Dnd),
        "xa" => Presence::available().with_show(Show::Xa),
        other => return Err(fail(format!("unknown presence {other:?}"))),
    };
    if let Some(status) = text(a, "/object/content") {
        p.set_status("", status);
    }
    Ok(p)
}
