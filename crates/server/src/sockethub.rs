//! The Sockethub 5 wire protocol over Socket.IO v4.
//!
//! Client events `schemas`, `credentials`, `message` and `activity-object` are handed to the
//! connection's gateway [`Session`]; each is answered through its ack when the client asked
//! for one. A `message` sent without an ack gets its reply as a `message` event instead, so
//! nothing is lost. Server pushes go out as `message` and `error` events.
//!
//! The session is opened and the event handlers registered in a connect *middleware*, which
//! socketioxide runs before it tells the client it is connected: an event the client sends
//! the moment it connects always finds its handler. Handlers run as separate tasks, so each
//! takes its [`Ticket`](switchboard_gateway::Ticket) synchronously, in arrival order, before
//! its task starts: the session then processes a client's events in the order they were
//! sent.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use serde_json::Value;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::Socket;
use socketioxide::{SocketIo, TransportType};
use switchboard_gateway::{Gateway, Push, Pusher, Session, server_error};

use crate::ServerConfig;

pub(crate) fn layer(gateway: Gateway, config: &ServerConfig) -> (SocketIoLayer, SocketIo) {
    // Room above the gateway's limit (see ServerConfig::max_payload), bounded.
    let transport_limit = config.max_payload.saturating_mul(4).max(64 * 1024);
    let (layer, io) = SocketIo::builder()
        .req_path(config.path.clone())
        .ping_interval(config.ping_interval)
        .ping_timeout(config.ping_timeout)
        .max_payload(transport_limit as u64)
        .ws_max_message_size(transport_limit)
        .ws_max_frame_size(transport_limit)
        .transports([TransportType::Polling, TransportType::Websocket])
        // Idle connections dominate memory; a small read buffer (grown on demand for big
        // messages) saves 3 KB per connection against the 4 KiB default.
        .ws_read_buffer_size(1024)
        .build_layer();
    io.ns(
        "/",
        announce_refusal.with(move |s: SocketRef| {
            let gateway = gateway.clone();
            async move {
                setup(s, gateway).await;
                Ok::<(), std::convert::Infallible>(())
            }
        }),
    );
    (layer, io)
}

/// An ack sender that also knows whether the client asked for an ack.
struct MaybeAck {
    sender: AckSender,
    wanted: bool,
}

impl<A: Adapter> FromMessageParts<A> for MaybeAck
where
    AckSender: FromMessageParts<A>,
{
    type Error = std::convert::Infallible;

    fn from_message_parts(
        s: &Arc<Socket<A>>,
        v: &mut socketioxide_core::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Self::Error> {
        match AckSender::from_message_parts(s, v, ack_id) {
            Ok(sender) => Ok(MaybeAck {
                sender,
                wanted: ack_id.is_some(),
            }),
            Err(_) => unreachable!("AckSender extraction is infallible"),
        }
    }
}

impl MaybeAck {
    fn send(self, value: &Value) {
        if let Err(e) = self.sender.send(value) {
            tracing::debug!(error = %e, "ack not delivered (client gone)");
        }
    }

    /// Answer through the ack when the client asked for one, else as an `event`.
    fn reply(self, s: &SocketRef, event: &'static str, value: &Value) {
        if self.wanted {
            self.send(value);
        } else {
            let _ = s.emit(event, value);
        }
    }
}

fn peer_ip(s: &SocketRef) -> IpAddr {
    s.req_parts()
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The payload, or `Null` when the client sent none or something unparsable; the gateway
/// answers `Null` with "message received is not an object."
fn payload(data: TryData<Value>) -> Value {
    data.0.unwrap_or(Value::Null)
}

/// Set on a socket whose session was refused (the connect handler tells the client).
#[derive(Clone)]
struct Refused(String);

/// After the client is told it is connected: a refused connection gets Sockethub's `error`
/// event, then is closed.
async fn announce_refusal(s: SocketRef) {
    if let Some(Refused(reason)) = s.extensions.get::<Refused>() {
        let _ = s.emit("error", &server_error(&reason));
        let _ = s.disconnect();
    }
}

/// Before the client is told it is connected: open the session and register the handlers.
async fn setup(s: SocketRef, gateway: Gateway) {
    let session = match gateway.open_session(peer_ip(&s), pusher(s.clone())).await {
        Ok(session) => session,
        Err(refusal) => {
            tracing::warn!(peer = %peer_ip(&s), "connection refused: {refusal}");
            s.extensions.insert(Refused(refusal.to_string()));
            return;
        }
    };

    let sess = session.clone();
    s.on(
        "schemas",
        move |data: TryData<Value>, ack: MaybeAck, s: SocketRef| {
            let ticket = sess.ticket();
            let sess = sess.clone();
            async move {
                let known = data.0.ok().and_then(|v| v.as_str().map(str::to_owned));
                let reply = sess.schemas(ticket, known.as_deref()).await;
                ack.reply(&s, "schemas", &reply);
            }
        },
    );

    let sess = session.clone();
    s.on("credentials", move |data: TryData<Value>, ack: MaybeAck| {
        let ticket = sess.ticket();
        let sess = sess.clone();
        async move {
            let reply = sess.credentials(ticket, payload(data)).await;
            ack.send(&reply);
        }
    });

    let sess = session.clone();
    s.on(
        "message",
        move |data: TryData<Value>, ack: MaybeAck, s: SocketRef| {
            let ticket = sess.ticket();
            let sess = sess.clone();
            async move {
                let reply = sess.message(ticket, payload(data)).await;
                ack.reply(&s, "message", &reply);
            }
        },
    );

    let sess = session.clone();
    s.on(
        "activity-object",
        move |data: TryData<Value>, ack: MaybeAck| {
            let ticket = sess.ticket();
            let sess = sess.clone();
            async move {
                let reply = sess.activity_object(ticket, payload(data)).await;
                ack.send(&reply.unwrap_or(Value::Null));
            }
        },
    );

    s.on_disconnect(move || {
        let session: Session = session.clone();
        async move { session.close().await }
    });
}

/// Delivers the session's pushes to the client (emit only queues, so this never blocks).
fn pusher(s: SocketRef) -> Pusher {
    Arc::new(move |push| match &push {
        Push::Message(v) => drop(s.emit("message", v)),
        Push::Error(v) => drop(s.emit("error", v)),
        Push::Close(v) => {
            let _ = s.emit("error", v);
            let _ = s.clone().disconnect();
        }
    })
}
