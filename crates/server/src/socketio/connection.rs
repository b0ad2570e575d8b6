//! One Engine.IO session: a single task that owns its transport and its Socket.IO socket.
//!
//! The task waits on everything the connection can be woken by — the client's next
//! WebSocket frame or polling request, a finished request's reply, a push from the gateway
//! session, the heartbeat timer, server shutdown — handles it, and writes what resulted.
//! Nothing else runs per connection (no writer task, no heartbeat task, no task per
//! event), and nothing is buffered while it is idle.
//!
//! Transports: a session starts on HTTP long-polling (requests reach the task through a
//! channel) or directly on WebSocket. A polling session upgrades when the client opens a
//! WebSocket with its sid: the client probes it (`2probe` → `3probe`), the task answers
//! the pending poll with a noop so the client can pause polling, and the client's `5`
//! (upgrade) moves the session onto the WebSocket.
//!
//! Heartbeat: the server pings every `ping_interval`; a client that has not answered within
//! `ping_timeout` is gone, and its session is closed.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Hub;
use super::engine_packet::{self as eio, DecodeError, Kind, Packet};
use super::frames;
use super::outbox::Outbox;
use super::socket::{BINARY_REFUSED, Flow, Reply, Socket};
use super::socket_packet;
use super::websocket::Ws;

/// A polling request handed to its session's task.
pub(crate) enum PollRequest {
    /// A long poll: answered with the queued packets once there are any.
    Get(oneshot::Sender<Result<String, PollError>>),
    /// Packets from the client (the body, already checked for size and UTF-8).
    Post(String, oneshot::Sender<Result<(), PollError>>),
    /// A WebSocket opened with this session's sid, to be probed and upgraded to (boxed:
    /// this enum is part of every connection task's state).
    Upgrade(Box<Ws>),
    /// The client sent a body over the payload limit: the session ends.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PollError {
    #[error("overlapping polling requests")]
    Overlap,
    #[error("session closed")]
    Closed,
}

/// What the task does after handling something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Continue,
    /// Write what is queued, then close.
    Close,
    /// The transport is gone (or the client timed out): just clean up.
    End,
    /// The server is stopping.
    Shutdown,
}

impl From<Flow> for Step {
    fn from(flow: Flow) -> Step {
        match flow {
            Flow::Continue => Step::Continue,
            Flow::Close => Step::Close,
        }
    }
}

struct Polling {
    requests: mpsc::Receiver<PollRequest>,
    /// The long poll waiting for packets.
    get: Option<oneshot::Sender<Result<String, PollError>>>,
    /// A WebSocket being probed for the upgrade.
    probe: Option<Ws>,
    /// The probe succeeded while no poll was waiting: answer the next one with a noop.
    noop_due: bool,
}

// The WebSocket is what nearly every connection lives on; the polling state is boxed
// instead, as it is short-lived.
#[allow(clippy::large_enum_variant)]
enum Transport {
    Polling(Box<Polling>),
    WebSocket(Ws),
}

enum Wake {
    Shutdown,
    Timer,
    Frame(Option<Result<Message, WsError>>),
    Poll(Option<PollRequest>),
    Probe(Option<Result<Message, WsError>>),
    Reply(Reply),
    Pushes,
}

pub(crate) struct Connection {
    hub: Arc<Hub>,
    sid: String,
    transport: Transport,
    socket: Socket,
    outbox: Arc<Outbox>,
    /// Engine.IO packets waiting to be written; empty (unallocated) while idle.
    out: Vec<String>,
    timer: Pin<Box<Sleep>>,
    /// A ping went out and its pong has not come back.
    pong_due: bool,
    opened: Instant,
}

impl Connection {
    fn new(hub: Arc<Hub>, sid: String, transport: Transport, socket: Socket) -> Self {
        hub.opened();
        let first_ping = Instant::now() + hub.config.ping_interval;
        let outbox = socket.outbox_handle();
        Connection {
            hub,
            sid,
            transport,
            socket,
            outbox,
            out: Vec::new(),
            timer: Box::pin(tokio::time::sleep_until(first_ping)),
            pong_due: false,
            opened: Instant::now(),
        }
    }

    /// A session that starts on long-polling; its requests arrive on `requests`.
    pub(crate) fn polling(
        hub: Arc<Hub>,
        sid: String,
        socket: Socket,
        requests: mpsc::Receiver<PollRequest>,
    ) -> Self {
        let polling = Polling {
            requests,
            get: None,
            probe: None,
            noop_due: false,
        };
        Connection::new(hub, sid, Transport::Polling(Box::new(polling)), socket)
    }

    /// A session on WebSocket from the start; `handshake` is its open packet.
    pub(crate) fn websocket(
        hub: Arc<Hub>,
        sid: String,
        socket: Socket,
        ws: Ws,
        handshake: String,
    ) -> Self {
        let mut conn = Connection::new(hub, sid, Transport::WebSocket(ws), socket);
        conn.out.push(handshake);
        conn
    }

    /// Serve the session until it ends, then release it. (Boxed: a by-value `self` would be
    /// stored twice in the task, once as the argument and once moved into the body.)
    pub(crate) async fn run(mut self: Box<Self>) {
        let mut step = Step::Continue;
        if self.flush().await.is_err() {
            step = Step::End;
        }
        while step == Step::Continue {
            let wake = self.wake().await;
            step = self.handle(wake).await;
            if step != Step::End && step != Step::Shutdown && self.flush().await.is_err() {
                step = Step::End;
            }
        }
        // Boxed: closing runs once, and its state would otherwise be part of every idle
        // connection's task.
        Box::pin(self.finish(step)).await;
    }

    async fn wake(&mut self) -> Wake {
        let Connection {
            hub,
            transport,
            socket,
            outbox,
            timer,
            ..
        } = self;
        // Replies and pushes before new requests: what is ready goes out first.
        tokio::select! {
            biased;
            _ = hub.shutdown.cancelled() => Wake::Shutdown,
            reply = socket.next_reply() => Wake::Reply(reply),
            _ = outbox.ready() => Wake::Pushes,
            wake = next_from_transport(transport) => wake,
            _ = timer.as_mut() => Wake::Timer,
        }
    }

    async fn handle(&mut self, wake: Wake) -> Step {
        match wake {
            Wake::Shutdown => Step::Shutdown,
            Wake::Timer => self.heartbeat(),
            Wake::Frame(Some(Ok(frame))) => self.on_frame(frame).await,
            // Boxed below: the rare or polling-only paths, whose futures would otherwise
            // enlarge every WebSocket connection's task for its whole life.
            Wake::Frame(Some(Err(e))) => {
                Box::pin(self.on_ws_error(e)).await;
                Step::End
            }
            Wake::Frame(None) => Step::End,
            Wake::Poll(Some(request)) => Box::pin(self.on_poll(request)).await,
            Wake::Poll(None) => Step::End,
            Wake::Probe(frame) => Box::pin(self.on_probe(frame)).await,
            Wake::Reply(reply) => {
                self.socket.on_reply(reply, &mut self.out);
                // Others finished too? One write for all of them.
                while let Some(reply) = self.socket.next_reply().now_or_never() {
                    self.socket.on_reply(reply, &mut self.out);
                }
                Step::Continue
            }
            Wake::Pushes => self.socket.on_pushes(&mut self.out).into(),
        }
    }

    /// The timer fired: a pong is overdue (the client is gone), or it is time to ping.
    fn heartbeat(&mut self) -> Step {
        let config = &self.hub.config;
        if self.pong_due {
            tracing::debug!(sid = %self.sid, "ping timeout");
            return Step::End;
        }
        if !self.socket.connected() && self.opened.elapsed() >= config.connect_timeout {
            tracing::debug!(sid = %self.sid, "no socket.io connect in time");
            return Step::End;
        }
        self.out.push(eio::encode(Kind::Ping, ""));
        self.pong_due = true;
        let deadline = Instant::now() + config.ping_timeout;
        self.timer.as_mut().reset(deadline);
        Step::Continue
    }

    async fn on_frame(&mut self, frame: Message) -> Step {
        match frame {
            Message::Text(text) => self.on_packet(text.as_str()).await,
            Message::Binary(_) => self.refuse_binary(),
            Message::Close(_) => Step::End,
            // tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Step::Continue,
        }
    }

    async fn on_ws_error(&mut self, e: WsError) {
        tracing::debug!(sid = %self.sid, error = %e, "websocket error");
        if let (WsError::Capacity(_), Transport::WebSocket(ws)) = (&e, &mut self.transport) {
            // Tell the client why (1009) before dropping it.
            let frame = CloseFrame {
                code: CloseCode::Size,
                reason: "message too big".into(),
            };
            let _ = ws.close(Some(frame)).await;
        }
    }

    fn refuse_binary(&mut self) -> Step {
        let error = switchboard_gateway::server_error(BINARY_REFUSED);
        let event = socket_packet::event_packet("error", &error);
        self.out.push(eio::encode(Kind::Message, &event));
        let bye = socket_packet::disconnect();
        self.out.push(eio::encode(Kind::Message, &bye));
        Step::Close
    }

    /// One Engine.IO packet from the client, on the session's current transport.
    async fn on_packet(&mut self, text: &str) -> Step {
        match eio::decode(text) {
            Ok(Packet::Message(data)) => self.socket.on_packet(data, &mut self.out).await.into(),
            Ok(Packet::Pong(_)) => {
                self.pong_due = false;
                let next = Instant::now() + self.hub.config.ping_interval;
                self.timer.as_mut().reset(next);
                Step::Continue
            }
            Ok(Packet::Ping(data)) => {
                self.out.push(eio::encode(Kind::Pong, data));
                Step::Continue
            }
            Ok(Packet::Close) => Step::End,
            Ok(Packet::Upgrade | Packet::Noop) => Step::Continue,
            Err(DecodeError::Binary) => self.refuse_binary(),
            Err(e) => {
                tracing::debug!(sid = %self.sid, error = %e, "undecodable engine.io packet");
                Step::Close
            }
        }
    }

    async fn on_poll(&mut self, request: PollRequest) -> Step {
        let Transport::Polling(polling) = &mut self.transport else {
            return Step::Continue; // cannot happen: the channel is dropped on upgrade
        };
        match request {
            PollRequest::Get(reply) => {
                if polling.get.is_some() {
                    // Two polls at once: the spec's answer is an error and a closed session.
                    let _ = reply.send(Err(PollError::Overlap));
                    return Step::Close;
                }
                if polling.noop_due {
                    polling.noop_due = false;
                    let _ = reply.send(Ok(eio::encode(Kind::Noop, "")));
                } else {
                    polling.get = Some(reply);
                }
                Step::Continue
            }
            PollRequest::Post(body, reply) => {
                let mut step = Step::Continue;
                for packet in eio::split_payload(&body) {
                    step = self.on_packet(packet).await;
                    if step != Step::Continue {
                        break;
                    }
                }
                let _ = reply.send(Ok(()));
                step
            }
            PollRequest::Upgrade(ws) => {
                if polling.probe.is_none() {
                    polling.probe = Some(*ws);
                }
                Step::Continue
            }
            PollRequest::TooLarge => {
                tracing::debug!(sid = %self.sid, "polling body over the payload limit");
                Step::End
            }
        }
    }

    /// A frame on the WebSocket being probed for the upgrade.
    async fn on_probe(&mut self, frame: Option<Result<Message, WsError>>) -> Step {
        let Transport::Polling(polling) = &mut self.transport else {
            return Step::Continue;
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Step::Continue,
            _ => {
                // Closed or not Engine.IO: the upgrade failed; polling goes on.
                polling.probe = None;
                return Step::Continue;
            }
        };
        match eio::decode(text.as_str()) {
            Ok(Packet::Ping("probe")) => {
                let pong = Message::text(eio::encode(Kind::Pong, "probe"));
                let sent = match polling.probe.as_mut() {
                    Some(probe) => probe.send(pong).await.is_ok(),
                    None => false,
                };
                if !sent {
                    polling.probe = None;
                    return Step::Continue;
                }
                // Release the client's pending poll so it can pause polling and upgrade.
                match polling.get.take() {
                    Some(get) => drop(get.send(Ok(eio::encode(Kind::Noop, "")))),
                    None => polling.noop_due = true,
                }
                Step::Continue
            }
            Ok(Packet::Upgrade) => {
                let Some(ws) = polling.probe.take() else {
                    return Step::Continue;
                };
                if let Some(get) = polling.get.take() {
                    let _ = get.send(Ok(eio::encode(Kind::Noop, "")));
                }
                self.transport = Transport::WebSocket(ws);
                self.hub.forget_polling(&self.sid);
                tracing::debug!(sid = %self.sid, "upgraded to websocket");
                Step::Continue
            }
            _ => {
                polling.probe = None;
                Step::Continue
            }
        }
    }

    /// Write the queued packets: over WebSocket at once, over polling into the waiting
    /// poll (or kept for the next one).
    async fn flush(&mut self) -> Result<(), WsError> {
        if self.out.is_empty() {
            return Ok(());
        }
        match &mut self.transport {
            Transport::WebSocket(ws) => {
                // Whatever tungstenite queued itself (a pong to a client's ping) goes first,
                // so that our frames never land inside one of its own.
                ws.flush().await?;
                // Every queued packet in one write (see `frames`); the buffer lives only
                // for this write, so a quiet connection holds none.
                let buf = frames::text_frames(&self.out);
                self.out = Vec::new();
                let stream = ws.get_mut();
                stream.write_all(&buf).await?;
                stream.flush().await?;
                Ok(())
            }
            Transport::Polling(polling) => {
                if let Some(get) = polling.get.take() {
                    let body = join(std::mem::take(&mut self.out));
                    let _ = get.send(Ok(body));
                }
                Ok(())
            }
        }
    }

    /// Close the transport as `step` says, then the session.
    async fn finish(mut self: Box<Self>, step: Step) {
        match (&mut self.transport, step) {
            (Transport::WebSocket(ws), Step::Close) => {
                let _ = ws.close(None).await;
            }
            (Transport::WebSocket(ws), Step::Shutdown) => {
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: "server shutting down".into(),
                };
                let _ = ws.close(Some(frame)).await;
            }
            (Transport::Polling(polling), Step::Close | Step::Shutdown) => {
                // Deliver what is queued and the close packet on the waiting poll, or on the
                // next one if it comes soon (at shutdown new requests are refused).
                self.out.push(eio::encode(Kind::Close, ""));
                let body = join(std::mem::take(&mut self.out));
                let get = match polling.get.take() {
                    Some(get) => Some(get),
                    None if step == Step::Close => next_poll(polling, Duration::from_secs(5)).await,
                    None => None,
                };
                if let Some(get) = get {
                    let _ = get.send(Ok(body));
                }
            }
            _ => {}
        }
        if matches!(self.transport, Transport::Polling(_)) {
            self.hub.forget_polling(&self.sid);
        }
        self.socket.close().await;
        tracing::debug!(sid = %self.sid, ?step, "engine.io session closed");
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Counted here rather than by wrapping the task: a wrapper future would hold the
        // connection future twice over (as its capture and as its awaitee).
        self.hub.closed();
    }
}

/// The next long poll of a closing session, within `limit`.
async fn next_poll(
    polling: &mut Polling,
    limit: Duration,
) -> Option<oneshot::Sender<Result<String, PollError>>> {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, polling.requests.recv()).await {
            Ok(Some(PollRequest::Get(get))) => return Some(get),
            Ok(Some(PollRequest::Post(_, reply))) => drop(reply.send(Err(PollError::Closed))),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
}

async fn next_from_transport(transport: &mut Transport) -> Wake {
    match transport {
        Transport::WebSocket(ws) => Wake::Frame(ws.next().await),
        Transport::Polling(polling) => {
            let Polling {
                requests, probe, ..
            } = &mut **polling;
            match probe {
                Some(probe) => tokio::select! {
                    request = requests.recv() => Wake::Poll(request),
                    frame = probe.next() => Wake::Probe(frame),
                },
                None => Wake::Poll(requests.recv().await),
            }
        }
    }
}

/// A polling body: packets separated by the record separator.
fn join(packets: Vec<String>) -> String {
    let mut body = String::with_capacity(packets.iter().map(|p| p.len() + 1).sum());
    for (i, packet) in packets.iter().enumerate() {
        if i > 0 {
            body.push(eio::SEPARATOR);
        }
        body.push_str(packet);
    }
    body
}
