//! `GET /ws?token=<JWT>`: the chat WebSocket. One task per connection owns the socket,
//! reads client frames, drains the connection's [`Outbox`], pings, and closes the
//! connection when its token expires.
//!
//! Close codes: 4001 no token, 4002 invalid or expired token, 4003 user not found, 4004
//! server error, 4005 replaced by a newer connection (`single_session`), 1001 server
//! shutting down or ping timeout, 1008 too slow to read its messages, 1009 frame too big,
//! 1012 this node lost its link to the other nodes and may have missed messages (reconnect).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use switchboard_store::{Target, Timestamp};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};
use tracing::Instrument;

use crate::Chat;
use crate::auth::{TokenError, unix_now};
use crate::hub::{Out, Outbox};
use crate::protocol::{self, ReadScope, Request as ClientRequest, error_frame, frame};
use crate::service::Me;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One typing indicator per conversation per this long (typing_stop always passes).
const TYPING_THROTTLE: Duration = Duration::from_secs(3);

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

/// Accept the WebSocket handshake; authentication happens after it so a refused client
/// gets a close code it can read.
pub async fn upgrade(
    State(chat): State<Chat>,
    Query(query): Query<WsQuery>,
    mut req: Request,
) -> Response {
    let headers = req.headers();
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let valid = header_has(headers, header::CONNECTION, "upgrade")
        && header_has(headers, header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let (Some(key), true) = (key, valid) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "Expected a WebSocket upgrade (version 13)" })),
        )
            .into_response();
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            axum::Json(json!({ "error": "This connection cannot be upgraded" })),
        )
            .into_response();
    };
    let token = query.token.or_else(|| bearer(req.headers()));
    if chat.inner.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "Server shutting down" })),
        )
            .into_response();
    }
    let task = async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(ws_config(chat.inner.config.max_message_bytes)),
                )
                .await;
                connection(chat, socket, token).await;
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    };
    // The largest single allocation of an idle connection (about 2.6 KiB in a release
    // build; see the idle benchmark in BENCHMARKS.md).
    tracing::trace!(bytes = std::mem::size_of_val(&task), "connection task");
    tokio::spawn(task);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Small buffers: idle connections dominate memory (tungstenite's defaults are 128 KiB
/// per connection). Frames may exceed the content cap (JSON escaping, other fields) so an
/// oversize message still reaches the validator and gets a clear error.
fn ws_config(max_content: usize) -> WebSocketConfig {
    let max_frame = max_content.saturating_mul(8).max(64 * 1024);
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

async fn close(socket: &mut Socket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(reason),
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(Some(frame))).await;
}

/// Authenticate, then run the session until either side closes.
async fn connection(chat: Chat, mut socket: Socket, token: Option<String>) {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return close(&mut socket, 4001, "No token provided").await;
    };
    let claims = match chat.inner.auth.verify(&token) {
        Ok(claims) => claims,
        Err(TokenError::Expired) => return close(&mut socket, 4002, "Token expired").await,
        Err(TokenError::Invalid) => return close(&mut socket, 4002, "Invalid token").await,
    };
    let user_id = claims.user_id().unwrap_or_default();
    let user = match chat.inner.store.user(user_id).await {
        Ok(Some(user)) => user,
        Ok(None) => return close(&mut socket, 4003, "User not found").await,
        Err(e) => {
            tracing::error!(error = %e, "cannot load the connecting user");
            return close(&mut socket, 4004, "Server error").await;
        }
    };
    let me = Me {
        id: user.id,
        username: user.username,
    };
    let expires_in = Duration::from_secs(claims.exp.saturating_sub(unix_now()));
    let span = tracing::info_span!("ws", user = me.id);
    Session::start(chat, me, socket, Instant::now() + expires_in)
        .instrument(span)
        .await;
}

struct Session {
    chat: Chat,
    me: Me,
    conn: u64,
    outbox: Arc<Outbox>,
    /// Conversations with a recent typing_start (lazily allocated).
    typing: HashMap<Target, Instant>,
    /// `new_message` ids already sent from the offline backlog.
    backlog: HashSet<i64>,
}

/// Why a session ended.
enum End {
    Closed,
    Close(u16, &'static str),
}

impl Session {
    async fn start(chat: Chat, me: Me, mut socket: Socket, expires: Instant) {
        let inner = &chat.inner;
        let outbox = Arc::new(Outbox::new(inner.config.max_queued_frames));
        let conn = inner.hub.register(me.id, &me.username, outbox.clone());
        let conn_name = format!("{}/{conn}", inner.config.node);
        if inner.config.single_session {
            inner
                .cluster
                .close_others(me.id, conn, 4005, "Replaced by a newer connection")
                .await;
        }
        match inner.cluster.connect(me.id, &conn_name).await {
            Ok(true) => {
                let online = json!({ "userId": me.id, "username": me.username });
                inner
                    .cluster
                    .presence_event(frame("user_online", online))
                    .await
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "registry unavailable"),
        }
        tracing::debug!("connected");

        let hello = frame(
            "connection_established",
            json!({
                "userId": me.id,
                "username": me.username,
                "connectionId": conn_name,
                "serverTime": Timestamp::now(),
            }),
        );
        let mut session = Session {
            chat: chat.clone(),
            me,
            conn,
            outbox,
            typing: HashMap::new(),
            backlog: HashSet::new(),
        };
        let end = if socket.send(WsMessage::Text(hello)).await.is_ok() {
            // Boxed so the idle connection's future does not carry its state.
            if Box::pin(session.send_backlog(&mut socket)).await {
                session.run(&mut socket, expires).await
            } else {
                End::Closed
            }
        } else {
            End::Closed
        };
        if let End::Close(code, reason) = end {
            close(&mut socket, code, reason).await;
        }
        drop(socket);

        let inner = &chat.inner;
        inner.hub.unregister(session.me.id, conn);
        match inner.cluster.disconnect(session.me.id, &conn_name).await {
            Ok(true) => {
                let at = Timestamp::now();
                if let Err(e) = inner.store.set_last_seen(session.me.id, at).await {
                    tracing::error!(error = %e, "cannot record last seen");
                }
                let offline = json!({ "userId": session.me.id, "username": session.me.username, "lastSeen": at });
                inner
                    .cluster
                    .presence_event(frame("user_offline", offline))
                    .await;
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "registry unavailable"),
        }
        tracing::debug!("disconnected");
    }

    /// Write the offline backlog straight to the socket, before anything queued live;
    /// `false` if the socket failed.
    async fn send_backlog(&mut self, socket: &mut Socket) -> bool {
        const PAGE: u32 = 500;
        const MAX_PAGES: usize = 40;
        for _ in 0..MAX_PAGES {
            let page = match self.chat.backlog_page(&self.me, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e.message, "cannot read the offline backlog");
                    return true;
                }
            };
            for (_, text) in &page {
                if socket.feed(WsMessage::Text(text.clone())).await.is_err() {
                    return false;
                }
            }
            if socket.flush().await.is_err() {
                return false;
            }
            if let Err(e) = self.chat.backlog_delivered(&self.me, &page).await {
                tracing::error!(error = %e.message, "cannot mark the backlog delivered");
                return true;
            }
            self.backlog.extend(page.iter().map(|(m, _)| m.id));
            if page.len() < PAGE as usize {
                break;
            }
        }
        true
    }

    async fn run(&mut self, socket: &mut Socket, expires: Instant) -> End {
        let interval = self.chat.inner.config.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut awaiting_pong = false;
        let expiry = tokio::time::sleep_until(expires);
        tokio::pin!(expiry);
        let shutdown = self.chat.inner.shutdown.clone();
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return End::Close(1001, "Server shutting down"),
                _ = self.outbox.ready() => {}
                incoming = socket.next() => match incoming {
                    // Boxed: an idle connection's future stays small (handling a frame
                    // needs far more state than waiting does).
                    Some(Ok(WsMessage::Text(text))) => Box::pin(self.handle(&text)).await,
                    Some(Ok(WsMessage::Binary(_))) => {
                        self.outbox.push(Out::Frame(error_frame(protocol::INVALID_JSON, None)));
                    }
                    Some(Ok(WsMessage::Pong(_))) => awaiting_pong = false,
                    // tungstenite queued the pong; the flush below sends it.
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Frame(_))) => {}
                    Some(Ok(WsMessage::Close(_))) | None => return End::Closed,
                    Some(Err(WsError::Capacity(_))) => return End::Close(1009, "Frame too big"),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        return End::Closed;
                    }
                },
                _ = ping.tick() => {
                    if awaiting_pong {
                        return End::Close(1001, "Ping timeout");
                    }
                    awaiting_pong = true;
                    if socket.feed(WsMessage::Ping(Default::default())).await.is_err() {
                        return End::Closed;
                    }
                }
                _ = &mut expiry => {
                    let _ = socket.send(WsMessage::Text(error_frame("Token expired", None))).await;
                    return End::Close(4002, "Token expired");
                }
            }
            // Everything queued for this connection goes out in one flush.
            self.outbox.drain(&mut batch);
            for out in batch.drain(..) {
                let text = match out {
                    Out::Frame(text) => text,
                    Out::Message(id, text) if !self.backlog.contains(&id) => text,
                    Out::Message(..) => continue,
                    Out::Close(code, reason) => return End::Close(code, reason),
                };
                if socket.feed(WsMessage::Text(text)).await.is_err() {
                    return End::Closed;
                }
            }
            if self.outbox.overflowed() {
                tracing::warn!("connection too slow: closing");
                return End::Close(1008, "Too many unread messages");
            }
            if socket.flush().await.is_err() {
                return End::Closed;
            }
        }
    }

    fn reply(&self, kind: &str, data: serde_json::Value) {
        self.outbox.push(Out::Frame(frame(kind, data)));
    }

    fn refuse(&self, message: &str, client_msg_id: Option<&str>) {
        self.outbox
            .push(Out::Frame(error_frame(message, client_msg_id)));
    }

    async fn handle(&mut self, text: &str) {
        let chat = self.chat.clone();
        let request = match protocol::parse(text, chat.inner.config.max_message_bytes) {
            Ok(r) => r,
            Err(refusal) => return self.refuse(&refusal.message, refusal.client_msg_id.as_deref()),
        };
        match request {
            ClientRequest::ChatMessage(req) => match chat.send(&self.me, &req).await {
                Ok(inserted) => {
                    let m = &inserted.message;
                    self.reply(
                        "message_sent",
                        json!({
                            "id": m.id,
                            "clientMsgId": m.client_msg_id,
                            "receiverId": m.receiver_id,
                            "roomId": m.room_id,
                            "status": m.status,
                            "createdAt": m.created_at,
                            "duplicate": inserted.duplicate,
                        }),
                    );
                    if !inserted.duplicate {
                        chat.deliver(&self.me, m, Some(self.conn)).await;
                    }
                }
                Err(e) => self.refuse(&e.message, req.client_msg_id.as_deref()),
            },
            ClientRequest::Typing { target, typing } => {
                let now = Instant::now();
                if typing {
                    if self
                        .typing
                        .get(&target)
                        .is_some_and(|t| now.duration_since(*t) < TYPING_THROTTLE)
                    {
                        return;
                    }
                    self.typing.insert(target, now);
                } else {
                    self.typing.remove(&target);
                }
                if let Err(e) = chat.typing(&self.me, target, typing).await {
                    self.refuse(&e.message, None);
                }
            }
            ClientRequest::MarkRead(scope) => {
                let done = match scope {
                    ReadScope::From(sender) => chat.mark_read_from(&self.me, sender).await,
                    ReadScope::Room(room) => {
                        chat.mark_room_read(&self.me, room, Some(self.conn)).await
                    }
                };
                match done {
                    Ok(data) => self.reply("mark_read_success", data),
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
