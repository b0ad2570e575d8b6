//! `GET /ws?token=<JWT>`: the chat WebSocket. One task per connection owns the socket,
//! reads client frames, drains the connection's [`Outbox`], pings, and closes the
//! connection when its token expires.
//!
//! Limits ([`limits`](crate::limits)): a client frame over the connection's rate limit is
//! answered with an `error` frame ("Rate limit exceeded: …", with its `clientMsgId`) and
//! otherwise ignored; a connection over the per-address cap is refused before the
//! handshake with HTTP 429 `{"error": "Too many connections from this address: …"}`.
//!
//! Close codes: 4001 no token, 4002 invalid or expired token, 4003 user not found, 4004
//! server error, 4005 replaced by a newer connection (`single_session`), 1001 server
//! shutting down or ping timeout, 1008 too slow to read its messages, 1009 frame too big,
//! 1012 this node lost its link to the other nodes and may have missed messages (reconnect).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use switchboard_store::{Target, Timestamp};
use switchboard_websocket::{OnUpgrade, Refusal, WebSocket};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tracing::instrument::Instrumented;
use tracing::{Instrument, Span};

use crate::Chat;
use crate::auth::{TokenError, unix_now};
use crate::frame_writer::FrameWriter;
use crate::hub::{Out, Outbox};
use crate::limits::{FrameLimit, IpSlot, Verdict, rate_limited};
use crate::protocol::{self, ReadScope, Request as ClientRequest, SendRequest, error_frame, frame};
use crate::service::Me;

/// Boxed: the connection task's nested futures then carry a pointer, not copies of the
/// socket's state.
type Socket = Box<WebSocket>;

/// One typing indicator per conversation per this long (typing_stop always passes).
const TYPING_THROTTLE: Duration = Duration::from_secs(3);

/// Most client frames read and handled as one burst (see `Session::run`).
const MAX_BURST: usize = 64;

/// Bytes of outgoing frames gathered before a write: the frames of one wake-up go out in
/// one `write` (a few hundred bytes each; a burst's replies are a few KiB).
///
/// The gathering happens in tungstenite's write buffer, which keeps its largest capacity
/// for the connection's life (up to this plus one frame after a burst; 163 bytes for a
/// connection that was only greeted): tungstenite has no way to release it, and gathering
/// and framing here instead, writing to the socket under tungstenite, would lose its
/// closing-state checks and, when a stalled write is given up mid-frame, the close frame
/// (see "Branch idle2" in BENCHMARKS.md).
const WRITE_GATHER: usize = 8 * 1024;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

fn refuse(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// Accept the WebSocket handshake; authentication happens after it so a refused client
/// gets a close code it can read.
pub async fn upgrade(
    State(chat): State<Chat>,
    Query(query): Query<WsQuery>,
    mut req: Request,
) -> Response {
    let (response, on_upgrade) = match switchboard_websocket::handshake::<_, Body>(&mut req) {
        Ok(accepted) => accepted,
        Err(Refusal::NotWebSocket) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "Expected a WebSocket upgrade (version 13)",
            );
        }
        Err(Refusal::NotUpgradable) => {
            return refuse(
                StatusCode::UPGRADE_REQUIRED,
                "This connection cannot be upgraded",
            );
        }
    };
    if chat.inner.shutdown.is_cancelled() {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "Server shutting down");
    }
    let peer = peer(&req);
    let Ok(slot) = chat.inner.per_ip.admit(peer) else {
        tracing::warn!(%peer, "too many chat connections from one address");
        let cap = chat.inner.per_ip.cap();
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many connections from this address: at most {cap}"),
        );
    };
    let token = query.token.or_else(|| bearer(req.headers()));
    let task = connection(chat, slot, on_upgrade, token);
    // The largest single allocation of an idle connection (see the idle benchmark in
    // BENCHMARKS.md).
    tracing::trace!(bytes = std::mem::size_of_val(&task), "connection task");
    tokio::spawn(task);
    response
}

/// The connection's task: open it (the upgrade, authentication, registering and announcing
/// it), then run its session until either side closes.
///
/// Every idle connection carries this future for its whole life, and a future is as large
/// as its largest state plus whatever it captured. So everything that runs once is one boxed
/// future, created here (not inside the task, where its arguments would stay captured) and
/// freed once the connection is open; the task itself holds only the address slot, the
/// session and what waiting needs.
fn connection(
    chat: Chat,
    slot: Option<IpSlot>,
    on_upgrade: OnUpgrade,
    token: Option<String>,
) -> impl Future<Output = ()> {
    let opening = Box::pin(open(chat, on_upgrade, token));
    async move {
        // `let … else`, not `match` or `if let`: a matched value would keep its room in the
        // task for the connection's life.
        let Some((session, socket, span)) = opening.await else {
            return;
        };
        in_span(span, session.live(socket)).await;
        // Counted until the connection ends. (Named here, not bound to a local at the top:
        // a captured value moved into a local takes room twice.)
        drop(slot);
    }
}

/// `future` in `span`, which is attached (and boxed with the future) only when enabled: an
/// instrumented future carries its `Span` (40 bytes) even when the span is disabled, and
/// this one is the connection's whole life.
fn in_span<F: Future>(span: Span, future: F) -> Either<F, Pin<Box<Instrumented<F>>>> {
    if span.is_disabled() {
        Either::Left(future)
    } else {
        Either::Right(Box::pin(future.instrument(span)))
    }
}

/// Upgrade, authenticate, register and announce the connection: the open session, its
/// socket and its debug span, or `None` once the connection is closed (and forgotten).
async fn open(
    chat: Chat,
    on_upgrade: OnUpgrade,
    token: Option<String>,
) -> Option<(Session, Socket, Span)> {
    let config = switchboard_websocket::config(max_frame(chat.inner.config.max_message_bytes))
        .write_buffer_size(WRITE_GATHER);
    let mut socket: Socket = match switchboard_websocket::established(on_upgrade, config).await {
        Ok(socket) => Box::new(socket),
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            return None;
        }
    };
    // The token and its claims are gone before the session starts.
    let (me, expires) = authenticate(&chat, &mut socket, token).await?;
    // A debug span: an enabled span lives in the subscriber as long as the connection
    // (a few hundred bytes each); the log lines that matter name the user themselves.
    let span = tracing::debug_span!("ws", user = me.id);
    let session = Session::start(chat, me, &mut socket, expires)
        .instrument(span.clone())
        .await?;
    Some((session, socket, span))
}

/// The client's address (the server is served with connect info; loopback otherwise).
fn peer(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Largest frame accepted: above the content cap (JSON escaping, other fields), so an
/// oversize message still reaches the validator and gets a clear error.
fn max_frame(max_content: usize) -> usize {
    max_content.saturating_mul(8).max(64 * 1024)
}

/// The `clientMsgId` of a frame that is not otherwise read, so a client can tell which
/// send was refused.
fn client_msg_id(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Frame {
        data: Option<Data>,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(rename = "clientMsgId")]
        client_msg_id: Option<String>,
    }
    serde_json::from_str::<Frame>(text)
        .ok()?
        .data?
        .client_msg_id
}

async fn close(socket: &mut Socket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    // Boxed: a closing handshake with its timer is large next to the rest of the task.
    let _ = Box::pin(tokio::time::timeout(
        Duration::from_secs(2),
        WebSocket::close(socket, Some(frame)),
    ))
    .await;
}

/// The user a token names and when the token expires; `None` once the socket is closed
/// with the reason.
async fn authenticate(
    chat: &Chat,
    socket: &mut Socket,
    token: Option<String>,
) -> Option<(Me, Instant)> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        close(socket, 4001, "No token provided").await;
        return None;
    };
    let claims = match chat.inner.auth.verify(&token) {
        Ok(claims) => claims,
        Err(e) => {
            let reason = match e {
                TokenError::Expired => "Token expired",
                TokenError::Invalid => "Invalid token",
            };
            close(socket, 4002, reason).await;
            return None;
        }
    };
    let user_id = claims.user_id().unwrap_or_default();
    let user = match chat.inner.store.user(user_id).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            close(socket, 4003, "User not found").await;
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, user = user_id, "cannot load the connecting user");
            close(socket, 4004, "Server error").await;
            return None;
        }
    };
    let expires_in = Duration::from_secs(claims.exp.saturating_sub(unix_now()));
    let me = Me {
        id: user.id,
        username: user.username,
    };
    Some((me, Instant::now() + expires_in))
}

struct Session {
    chat: Chat,
    me: Me,
    conn: u64,
    outbox: Arc<Outbox>,
    /// Typing throttle and backlog ids: most connections never need them, so an idle one
    /// carries a null pointer instead of two empty maps.
    seen: Option<Box<Seen>>,
    limit: FrameLimit,
    /// When the token expires (the connection is closed then).
    expires: Instant,
}

#[derive(Default)]
struct Seen {
    /// Conversations with a recent typing_start.
    typing: HashMap<Target, Instant>,
    /// `new_message` ids already sent from the offline backlog.
    backlog: HashSet<i64>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.chat.inner.live.leave();
    }
}

/// Why a session ended.
enum End {
    Closed,
    Close(u16, &'static str),
}

/// This node's name for a connection (in the registry and `connection_established`).
fn conn_name(chat: &Chat, conn: u64) -> String {
    format!("{}/{conn}", chat.inner.config.node)
}

impl Session {
    /// Register and announce the connection, then write `connection_established` and the
    /// offline backlog; `None` if the socket failed (the connection is then forgotten).
    async fn start(chat: Chat, me: Me, socket: &mut Socket, expires: Instant) -> Option<Self> {
        let inner = &chat.inner;
        // Left when the session is dropped, once it has ended (below, and `Drop`): no
        // return comes between the two.
        inner.live.enter();
        let outbox = Arc::new(Outbox::new(inner.config.max_queued_frames));
        let conn = inner.hub.register(me.id, &me.username, outbox.clone());
        // Shutdown closes every registered connection (`Chat::shutdown`); one registered
        // just after that is closed here.
        if inner.shutdown.is_cancelled() {
            outbox.push(Out::Close(1001, "Server shutting down"));
        }
        if inner.config.single_session {
            let replaced = "Replaced by a newer connection";
            inner
                .cluster
                .close_others(me.id, conn, 4005, replaced)
                .await;
        }
        match inner.cluster.connect(me.id, &conn_name(&chat, conn)).await {
            Ok(true) => {
                let online = json!({ "userId": me.id, "username": me.username });
                inner
                    .cluster
                    .presence_event(frame("user_online", online))
                    .await
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, user = me.id, "registry unavailable"),
        }
        tracing::debug!("connected");

        let hello = frame(
            "connection_established",
            json!({
                "userId": me.id,
                "username": me.username,
                "connectionId": conn_name(&chat, conn),
                "serverTime": Timestamp::now(),
            }),
        );
        let mut session = Session {
            chat: chat.clone(),
            me,
            conn,
            outbox,
            seen: None,
            limit: FrameLimit::default(),
            expires,
        };
        if session.send_backlog(socket, hello).await {
            return Some(session);
        }
        session.end().await;
        None
    }

    /// The session loop, then the closing handshake if this side ends it, then forget the
    /// connection.
    ///
    /// Not an `async fn`: those keep each argument twice for the future's life (as passed,
    /// and as the body's binding), a block only as captured.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn holds its arguments twice"
    )]
    fn live(mut self, mut socket: Socket) -> impl Future<Output = ()> {
        async move {
            if let End::Close(code, reason) = self.run(&mut socket).await {
                close(&mut socket, code, reason).await;
            }
            drop(socket);
            Box::pin(self.end()).await;
        }
    }

    /// Forget the connection; the user goes offline if it was their last.
    async fn end(self) {
        let inner = &self.chat.inner;
        let me = &self.me;
        inner.hub.unregister(me.id, self.conn);
        match inner
            .cluster
            .disconnect(me.id, &conn_name(&self.chat, self.conn))
            .await
        {
            Ok(true) => {
                let at = Timestamp::now();
                if let Err(e) = inner.store.set_last_seen(me.id, at).await {
                    tracing::error!(error = %e, user = me.id, "cannot record last seen");
                }
                let offline = json!({ "userId": me.id, "username": me.username, "lastSeen": at });
                inner
                    .cluster
                    .presence_event(frame("user_offline", offline))
                    .await;
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, user = me.id, "registry unavailable"),
        }
        tracing::debug!("disconnected");
    }

    /// Write `hello` and the offline backlog straight to the socket, before anything
    /// queued live; `false` if the socket failed.
    ///
    /// The backlog's first page is read before `hello` is written: a message sent once the
    /// client has seen `connection_established` is then never in the backlog, so it comes
    /// live, in send order with everything else sent since (live and backlog copies of an
    /// earlier message are told apart by id).
    ///
    /// The whole backlog is written, page by page, however long. It ends at the newest
    /// message committed once the connection was registered: anything newer was routed
    /// after that, so it is in the outbox, and pages that went on past it would chase a
    /// sender's live flood (each page is marked delivered before the next is read).
    async fn send_backlog(&mut self, socket: &mut Socket, hello: Utf8Bytes) -> bool {
        const PAGE: u32 = 500;
        let upto = match self.chat.inner.store.newest_message_id().await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, user = self.me.id, "cannot read the offline backlog");
                return self.write_all(socket, vec![hello]).await.is_ok();
            }
        };
        let mut hello = Some(hello);
        loop {
            let page = match self.chat.backlog_page(&self.me, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e.message, user = self.me.id, "cannot read the offline backlog");
                    return match hello {
                        Some(hello) => self.write_all(socket, vec![hello]).await.is_ok(),
                        None => true,
                    };
                }
            };
            let texts = hello
                .take()
                .into_iter()
                .chain(page.iter().map(|(_, text)| text.clone()))
                .collect();
            if self.write_all(socket, texts).await.is_err() {
                return false;
            }
            if let Err(e) = self.chat.backlog_delivered(&self.me, &page).await {
                tracing::error!(error = %e.message, user = self.me.id, "cannot mark the backlog delivered");
                return true;
            }
            if !page.is_empty() {
                let seen = self.seen.get_or_insert_default();
                seen.backlog.extend(page.iter().map(|(m, _)| m.id));
            }
            if page.len() < PAGE as usize || page.last().is_some_and(|(m, _)| m.id >= upto) {
                return true;
            }
        }
    }

    /// Read client frames and write queued ones until either side closes. One timer
    /// serves both the pings and the token's expiry.
    async fn run(&mut self, socket: &mut Socket) -> End {
        let timer = tokio::time::sleep_until(self.next_deadline(Instant::now()));
        tokio::pin!(timer);
        let mut awaiting_pong = false;
        loop {
            tokio::select! {
                // The client's frames before queued ones: a client that has closed is not
                // written messages it will never read (they stay `sent`, for its next
                // connection). Queued frames cannot starve: they are written every turn.
                biased;
                incoming = socket.next() => {
                    // Every frame already read or readable without waiting, handled as one
                    // burst: a client's pipelined messages then cost one store commit
                    // hand-off and one write of the replies, not one each.
                    let mut burst = Vec::new();
                    let mut item = incoming;
                    let end = loop {
                        match item {
                            Some(Ok(WsMessage::Text(text))) => {
                                if self.admit(&text) {
                                    burst.push(text);
                                }
                            }
                            Some(Ok(WsMessage::Binary(_))) => {
                                if self.admit("") {
                                    self.refuse(protocol::INVALID_JSON, None);
                                }
                            }
                            Some(Ok(WsMessage::Pong(_))) => awaiting_pong = false,
                            // tungstenite queued the pong; the flush below sends it.
                            Some(Ok(WsMessage::Ping(_) | WsMessage::Frame(_))) => {}
                            Some(Ok(WsMessage::Close(_))) | None => break Some(End::Closed),
                            Some(Err(WsError::Capacity(_))) => {
                                break Some(End::Close(1009, "Frame too big"));
                            }
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "websocket read failed");
                                break Some(End::Closed);
                            }
                        }
                        if burst.len() >= MAX_BURST {
                            break None;
                        }
                        match socket.next().now_or_never() {
                            Some(next) => item = next,
                            None => break None,
                        }
                    };
                    if !burst.is_empty() {
                        // Boxed: an idle connection's future stays small (handling frames
                        // needs far more state than waiting does).
                        Box::pin(self.handle_burst(burst)).await;
                    }
                    if let Some(end) = end {
                        return end;
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= self.expires {
                        let expired = vec![error_frame("Token expired", None)];
                        let _ = Box::pin(self.write_all(socket, expired)).await;
                        return End::Close(4002, "Token expired");
                    }
                    if awaiting_pong {
                        return End::Close(1001, "Ping timeout");
                    }
                    awaiting_pong = true;
                    if socket.feed(WsMessage::Ping(Default::default())).await.is_err() {
                        return End::Closed;
                    }
                    timer.as_mut().reset(self.next_deadline(now));
                }
                _ = self.outbox.ready() => {}
            }
            // Boxed: writing needs a timeout, the batch and the receipts (about 450 bytes
            // of future), waiting only the socket, the timer and the outbox; unboxed, the
            // task of every idle connection would carry the writer's room. One allocation
            // per wake-up, next to a `write` system call.
            if let Some(end) = Box::pin(self.write_queued(socket)).await {
                return end;
            }
        }
    }

    /// The next ping or, if sooner, the token's expiry. Computed each time rather than kept in
    /// `run`'s locals: those would be in every idle connection's future.
    fn next_deadline(&self, now: Instant) -> Instant {
        (now + self.chat.inner.config.ping_interval).min(self.expires)
    }

    /// Everything queued for this connection, in one flush, then the receipts of the
    /// direct messages written; `Some` when the connection must end.
    async fn write_queued(&mut self, socket: &mut Socket) -> Option<End> {
        // A fresh batch each time: a burst's capacity is not kept while the connection idles.
        let mut batch = Vec::new();
        self.outbox.drain(&mut batch);
        if self.outbox.overflowed() {
            // Nothing more is written: the direct messages it missed stay `sent` and come
            // as backlog when it reconnects.
            tracing::warn!(user = self.me.id, "connection too slow: closing");
            return Some(End::Close(1008, "Too many unread messages"));
        }
        let mut receipts = Vec::new();
        let mut end = None;
        let mut texts = Vec::with_capacity(batch.len());
        for out in batch {
            match out {
                Out::Frame(text) => texts.push(text),
                Out::Message(id, text, receipt) if !self.sent_from_backlog(id) => {
                    receipts.extend(receipt);
                    texts.push(text);
                }
                Out::Message(..) => {}
                Out::Close(code, reason) => {
                    end = Some(End::Close(code, reason));
                    break;
                }
            }
        }
        if let Err(stop) = self.write_all(socket, texts).await {
            return Some(stop);
        }
        for receipt in receipts {
            self.chat.inner.receipts.delivered(receipt).await;
        }
        end
    }

    /// Write frames and flush, within one ping interval. Why the limit: a client that
    /// stops reading fills the socket's buffers and the write waits forever, and while it
    /// waits nothing else runs for this connection (no ping, no token expiry), so the user
    /// would stay online holding the connection. A client that cannot take a batch in a
    /// ping interval is treated like one that missed a pong; whatever was not written
    /// stays `sent` and comes as backlog on its next connection.
    ///
    /// The timer is armed only if the socket does not take the batch at once: a room
    /// fan-out is hundreds of these writes in a row, almost all of which complete on the
    /// first poll, so a timer each (registered, then cancelled) was work for nothing.
    async fn write_all(&self, socket: &mut Socket, texts: Vec<Utf8Bytes>) -> Result<(), End> {
        let write = async {
            for text in texts {
                socket.feed(WsMessage::Text(text)).await?;
            }
            socket.flush().await
        };
        tokio::pin!(write);
        let written = match write.as_mut().now_or_never() {
            Some(written) => written,
            // Polled again at once, with this task's waker, under the limit.
            None => match tokio::time::timeout(self.chat.inner.config.ping_interval, write).await {
                Ok(written) => written,
                Err(_) => {
                    tracing::warn!(user = self.me.id, "connection stopped reading: closing");
                    return Err(End::Close(1008, "Too slow to read its messages"));
                }
            },
        };
        written.map_err(|_| End::Closed)
    }

    fn sent_from_backlog(&self, id: i64) -> bool {
        self.seen.as_ref().is_some_and(|s| s.backlog.contains(&id))
    }

    /// Count a client frame against the rate limit; a refused one is answered here.
    fn admit(&mut self, text: &str) -> bool {
        let config = &self.chat.inner.config;
        let verdict = self.limit.admit(config.rate_limit, config.rate_window);
        if verdict == Verdict::Allow {
            return true;
        }
        if verdict == Verdict::RefuseFirst {
            tracing::warn!(
                user = self.me.id,
                limit = config.rate_limit,
                "rate limit exceeded"
            );
        }
        let message = rate_limited(config.rate_limit, config.rate_window);
        self.refuse(&message, client_msg_id(text).as_deref());
        false
    }

    fn reply(&self, kind: &str, data: serde_json::Value) {
        self.outbox.push(Out::Frame(frame(kind, data)));
    }

    fn refuse(&self, message: &str, client_msg_id: Option<&str>) {
        self.outbox
            .push(Out::Frame(error_frame(message, client_msg_id)));
    }

    /// Handle client frames in order; consecutive `chat_message`s are stored together.
    async fn handle_burst(&mut self, burst: Vec<Utf8Bytes>) {
        let max = self.chat.inner.config.max_message_bytes;
        let mut sends = Vec::new();
        for text in &burst {
            match protocol::parse(text, max) {
                Ok(ClientRequest::ChatMessage(req)) => sends.push(req),
                Ok(other) => {
                    self.send_messages(std::mem::take(&mut sends)).await;
                    self.handle(other).await;
                }
                Err(refusal) => self.refuse(&refusal.message, refusal.client_msg_id.as_deref()),
            }
        }
        self.send_messages(sends).await;
    }

    /// Store `reqs` (one commit hand-off), then answer each and route the stored ones.
    async fn send_messages(&mut self, reqs: Vec<SendRequest>) {
        if reqs.is_empty() {
            return;
        }
        let received = Instant::now();
        let chat = self.chat.clone();
        let outcomes = chat.send_many(&self.me, &reqs).await;
        let stored = received.elapsed();
        for (req, outcome) in reqs.iter().zip(outcomes) {
            match outcome {
                Ok(sent) => {
                    let inserted = &sent.inserted;
                    let m = &inserted.message;
                    let text = m.client_msg_id.as_ref().map_or(0, String::len);
                    let ack = FrameWriter::new("message_sent", text)
                        .int("id", m.id)
                        .opt_text("clientMsgId", m.client_msg_id.as_deref())
                        .opt_int("receiverId", m.receiver_id)
                        .opt_int("roomId", m.room_id)
                        .status("status", m.status)
                        .time("createdAt", m.created_at)
                        .bool("duplicate", inserted.duplicate)
                        .finish();
                    self.outbox.push(Out::Frame(ack));
                    if !inserted.duplicate {
                        chat.deliver(&self.me, &sent, Some(self.conn)).await;
                    }
                    // Where a message's time goes before its recipients' tasks write it.
                    tracing::debug!(
                        message = m.id,
                        stored_us = stored.as_micros() as u64,
                        routed_us = received.elapsed().as_micros() as u64,
                        "message routed"
                    );
                }
                Err(e) => self.refuse(&e.message, req.client_msg_id.as_deref()),
            }
        }
    }

    async fn handle(&mut self, request: ClientRequest) {
        let chat = self.chat.clone();
        match request {
            ClientRequest::ChatMessage(req) => self.send_messages(vec![req]).await,
            ClientRequest::Typing { target, typing } => {
                let now = Instant::now();
                if typing {
                    let seen = self.seen.get_or_insert_default();
                    if seen
                        .typing
                        .get(&target)
                        .is_some_and(|t| now.duration_since(*t) < TYPING_THROTTLE)
                    {
                        return;
                    }
                    seen.typing.insert(target, now);
                } else if let Some(seen) = &mut self.seen {
                    seen.typing.remove(&target);
                }
                if let Err(e) = chat.typing(&self.me, target, typing).await {
                    self.refuse(&e.message, None);
                }
            }
            ClientRequest::MarkRead(scope) => {
                let done = match scope {
                    ReadScope::From(sender) => chat.mark_read_from(&self.me, sender).await,
                    ReadScope::Room(room) => chat
                        .mark_room_read(&self.me, room, Some(self.conn))
                        .await
                        .map(|data| (data, None)),
                };
                match done {
                    Ok((data, cut_short)) => {
                        self.reply("mark_read_success", data);
                        if let Some(e) = cut_short {
                            self.refuse(&e.message, None);
                        }
                    }
                    Err(e) => self.refuse(&e.message, None),
                }
            }
            ClientRequest::GetOnlineUsers => {
                chat.inner
                    .hub
                    .watch_presence(self.conn, self.outbox.clone());
                let data = chat.online_users().await;
                self.reply("online_users", data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns (without calling it).
    fn future_size<A, B, C, D, F: Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }

    /// Every idle connection holds its task's future for its whole life, and a future is as
    /// large as its largest state plus what it captured: everything that runs once is boxed
    /// so that the future is the size of waiting (see the idle benchmarks in BENCHMARKS.md).
    /// What the allocator sees is tokio's task cell: the future plus 104 bytes (header 32;
    /// scheduler, task id and the `repr(C)` stage's tag 24; trailer 48), 128-byte aligned on
    /// x86_64, so the cell grows in steps of 128 bytes. At 536 bytes or less the cell is 640
    /// bytes; session 6's 944-byte future made a 1152-byte cell (1280 in mimalloc's classes).
    /// Layouts do not depend on the optimisation level, so this holds for release builds.
    #[test]
    fn an_idle_connection_holds_a_small_future() {
        let task = future_size(connection);
        assert!(task <= 536, "connection task future: {task} bytes");
    }
}
