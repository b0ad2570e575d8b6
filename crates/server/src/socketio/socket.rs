//! The Socket.IO socket on namespace `/`: the Sockethub 5 events on a gateway [`Session`].
//!
//! Client events `schemas`, `credentials`, `message` and `activity-object` go to the
//! session; each is answered through its ack when the client asked for one. A `message` or
//! `schemas` sent without an ack gets its reply as an event of the same name instead, so
//! nothing is lost. Server pushes go out as `message` and `error` events.
//!
//! Each event takes its [`Ticket`](switchboard_gateway::Ticket) the moment it is decoded,
//! so the session handles a client's events in the order they were sent; the replies are
//! futures polled by the connection task itself (no task per event), and each is written
//! as soon as it is ready. Only `/` is served: another namespace gets CONNECT_ERROR.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use serde_json::Value;
use switchboard_gateway::{Gateway, Push, Session, server_error};

use super::engine_packet::{self, Kind as EioKind};
use super::outbox::Outbox;
use super::socket_packet::{self as packet, Kind};

/// What the connection does after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// Send what is queued, then close the connection.
    Close,
}

/// A reply ready to be written: `(ack id or None, event name for the no-ack case, value)`.
pub(crate) struct Reply {
    ack: Option<u64>,
    /// Where the reply goes when the client asked for no ack (`None`: nowhere).
    event: Option<&'static str>,
    value: Value,
}

type Pending = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Told to a client whose packet is a binary one (Sockethub is JSON only).
pub(crate) const BINARY_REFUSED: &str = "binary attachments are not supported";

pub(crate) struct Socket {
    gateway: Gateway,
    peer: IpAddr,
    session: Option<Session>,
    outbox: Arc<Outbox>,
    /// Requests waiting for their reply; created on the first one, so an idle connection
    /// holds none.
    pending: Option<FuturesUnordered<Pending>>,
}

fn message(data: &str) -> String {
    engine_packet::encode(EioKind::Message, data)
}

fn first(args: Vec<Value>) -> Value {
    args.into_iter().next().unwrap_or(Value::Null)
}

impl Socket {
    pub(crate) fn new(gateway: Gateway, peer: IpAddr) -> Self {
        Socket {
            gateway,
            peer,
            session: None,
            outbox: Arc::default(),
            pending: None,
        }
    }

    pub(crate) fn connected(&self) -> bool {
        self.session.is_some()
    }

    /// Where the session's pushes wait (the connection waits on it alongside the rest).
    pub(crate) fn outbox_handle(&self) -> Arc<Outbox> {
        self.outbox.clone()
    }

    /// Handle one Socket.IO packet (the data of an Engine.IO `message`); what to send goes
    /// to `out` as Engine.IO packets.
    pub(crate) async fn on_packet(&mut self, text: &str, out: &mut Vec<String>) -> Flow {
        let p = match packet::decode(text) {
            Ok(p) => p,
            Err(e) => {
                // socket.io closes on a packet it cannot parse; so do we, saying why.
                tracing::debug!(error = %e, "undecodable socket.io packet");
                return Flow::Close;
            }
        };
        if p.namespace != "/" {
            if p.kind == Kind::Connect {
                out.push(message(&packet::connect_error(
                    p.namespace,
                    "Invalid namespace",
                )));
            }
            return Flow::Continue;
        }
        match p.kind {
            Kind::Connect => self.connect(out).await,
            Kind::Disconnect => Flow::Close,
            Kind::Event => match (&self.session, packet::event(p.data)) {
                (Some(session), Ok(event)) => {
                    self.dispatch(session.clone(), p.ack, event.name, event.args);
                    Flow::Continue
                }
                // Events before CONNECT are ignored, as socket.io does.
                (None, _) => Flow::Continue,
                (Some(_), Err(_)) => Flow::Close,
            },
            Kind::BinaryEvent | Kind::BinaryAck => {
                let error = server_error(BINARY_REFUSED);
                if let Some(id) = p.ack {
                    out.push(message(&packet::ack(
                        id,
                        &serde_json::json!({"error": BINARY_REFUSED}),
                    )));
                }
                out.push(message(&packet::event_packet("error", &error)));
                out.push(message(&packet::disconnect()));
                Flow::Close
            }
            // The server never asks for acks; a client's CONNECT_ERROR means nothing here.
            Kind::Ack | Kind::ConnectError => Flow::Continue,
        }
    }

    async fn connect(&mut self, out: &mut Vec<String>) -> Flow {
        if self.session.is_some() {
            return Flow::Continue; // already connected: nothing to do
        }
        let sid = switchboard_engine::seal::random_id::<10>();
        // Boxed: this future is large and runs once; inline it would enlarge every idle
        // connection's task for its whole life.
        let opening = Box::pin(self.gateway.open_session(self.peer, self.outbox.pusher()));
        match opening.await {
            Ok(session) => {
                tracing::debug!(session = %session.id(), "socket.io connected");
                self.session = Some(session);
                out.push(message(&packet::connect(&sid)));
                Flow::Continue
            }
            Err(refusal) => {
                // Sockethub's way: connected for a moment, told why on `error`, then
                // disconnected by the server.
                tracing::warn!(peer = %self.peer, "connection refused: {refusal}");
                out.push(message(&packet::connect(&sid)));
                out.push(message(&packet::event_packet(
                    "error",
                    &server_error(&refusal.to_string()),
                )));
                out.push(message(&packet::disconnect()));
                Flow::Close
            }
        }
    }

    /// Start one event's handling; its reply comes out of [`Socket::next_reply`].
    fn dispatch(&mut self, session: Session, ack: Option<u64>, name: String, args: Vec<Value>) {
        // The ticket is taken now, before anything awaits: arrival order is session order.
        let ticket = session.ticket();
        let fut: Pending = match name.as_str() {
            "schemas" => Box::pin(async move {
                let known = args.first().and_then(Value::as_str);
                let value = session.schemas(ticket, known).await;
                Reply {
                    ack,
                    event: Some("schemas"),
                    value,
                }
            }),
            "credentials" => Box::pin(async move {
                let value = session.credentials(ticket, first(args)).await;
                Reply {
                    ack,
                    event: None,
                    value,
                }
            }),
            "message" => Box::pin(async move {
                let value = session.message(ticket, first(args)).await;
                Reply {
                    ack,
                    event: Some("message"),
                    value,
                }
            }),
            "activity-object" => Box::pin(async move {
                let value = session.activity_object(ticket, first(args)).await;
                Reply {
                    ack,
                    event: None,
                    value: value.unwrap_or(Value::Null),
                }
            }),
            _ => {
                tracing::debug!(session = %session.id(), event = %name, "unknown event ignored");
                return;
            }
        };
        self.pending
            .get_or_insert_with(FuturesUnordered::new)
            .push(fut);
    }

    /// The next finished request (pending forever when none is waiting).
    pub(crate) async fn next_reply(&mut self) -> Reply {
        use futures_util::StreamExt;
        match self.pending.as_mut() {
            Some(pending) if !pending.is_empty() => match pending.next().await {
                Some(reply) => reply,
                None => std::future::pending().await,
            },
            _ => std::future::pending().await,
        }
    }

    /// Write a finished request's reply.
    pub(crate) fn on_reply(&mut self, reply: Reply, out: &mut Vec<String>) {
        match (reply.ack, reply.event) {
            (Some(id), _) => out.push(message(&packet::ack(id, &reply.value))),
            (None, Some(event)) => out.push(message(&packet::event_packet(event, &reply.value))),
            (None, None) => {}
        }
        if self
            .pending
            .as_ref()
            .is_some_and(FuturesUnordered::is_empty)
        {
            // Give the queue's storage back while the connection is quiet.
            self.pending = None;
        }
    }

    /// Write what the session pushed.
    pub(crate) fn on_pushes(&mut self, out: &mut Vec<String>) -> Flow {
        let mut flow = Flow::Continue;
        for push in self.outbox.take() {
            match push {
                Push::Message(v) => out.push(message(&packet::event_packet("message", &v))),
                Push::Error(v) => out.push(message(&packet::event_packet("error", &v))),
                Push::Close(v) => {
                    out.push(message(&packet::event_packet("error", &v)));
                    out.push(message(&packet::disconnect()));
                    flow = Flow::Close;
                }
            }
        }
        flow
    }

    /// The connection ended: the session goes (its credentials with it).
    pub(crate) async fn close(&mut self) {
        self.outbox.close();
        self.pending = None;
        if let Some(session) = self.session.take() {
            Box::pin(session.close()).await; // boxed for the same reason as opening
        }
    }
}
