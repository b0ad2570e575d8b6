//! The HTTP side of Engine.IO: every request to the Socket.IO path lands here.
//!
//! Without a `sid` it is a handshake: a polling GET answered with the open packet, or a
//! WebSocket upgrade whose first frame is the open packet. With a `sid` it belongs to a
//! polling session: a GET (long poll), a POST (packets from the client) or the WebSocket
//! the session upgrades to. Errors are the spec's: HTTP 400 with `{"code", "message"}`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::Hub;
use super::connection::{Connection, PollError, PollRequest};
use super::engine_packet::{self as eio, Handshake, Kind};
use super::socket::Socket;
use super::websocket;

/// The spec's error codes.
#[derive(Debug, Clone, Copy)]
enum EngineError {
    TransportUnknown = 0,
    SessionIdUnknown = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    UnsupportedProtocolVersion = 5,
}

impl EngineError {
    fn message(self) -> &'static str {
        match self {
            EngineError::TransportUnknown => "Transport unknown",
            EngineError::SessionIdUnknown => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest => "Bad request",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }
}

impl IntoResponse for EngineError {
    fn into_response(self) -> Response {
        let body = json!({"code": self as u8, "message": self.message()});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Polling,
    WebSocket,
}

struct Query<'a> {
    transport: Option<Transport>,
    sid: Option<&'a str>,
}

fn parse_query(query: &str) -> Result<Query<'_>, EngineError> {
    let mut eio = None;
    let mut transport = None;
    let mut sid = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "EIO" => eio = Some(value),
            "transport" => {
                transport = Some(match value {
                    "polling" => Transport::Polling,
                    "websocket" => Transport::WebSocket,
                    _ => return Err(EngineError::TransportUnknown),
                })
            }
            "sid" => sid = Some(value),
            _ => {}
        }
    }
    if eio != Some("4") {
        return Err(EngineError::UnsupportedProtocolVersion);
    }
    Ok(Query { transport, sid })
}

fn peer(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], body).into_response()
}

pub(crate) async fn handle(State(hub): State<Arc<Hub>>, req: Request) -> Response {
    let query = match parse_query(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let Some(transport) = query.transport else {
        return EngineError::TransportUnknown.into_response();
    };
    let sid = query.sid.map(str::to_owned);
    if hub.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "server shutting down").into_response();
    }
    match (sid, transport) {
        (None, Transport::Polling) if req.method() == Method::GET => open_polling(hub, &req),
        (None, Transport::Polling) => EngineError::BadHandshakeMethod.into_response(),
        (None, Transport::WebSocket) => open_websocket(hub, req),
        (Some(sid), transport) => {
            let Some(session) = hub.polling().get(&sid).cloned() else {
                return EngineError::SessionIdUnknown.into_response();
            };
            match (transport, req.method().clone()) {
                (Transport::WebSocket, _) => upgrade(hub, session, req),
                (Transport::Polling, Method::GET) => poll(session).await,
                (Transport::Polling, Method::POST) => post(hub, session, req).await,
                _ => EngineError::BadRequest.into_response(),
            }
        }
    }
}

fn new_sid() -> String {
    switchboard_engine::seal::random_id::<10>()
}

fn handshake(hub: &Hub, sid: &str, upgrades: bool) -> String {
    let data = Handshake {
        sid,
        upgrades,
        ping_interval_ms: hub.config.ping_interval.as_millis(),
        ping_timeout_ms: hub.config.ping_timeout.as_millis(),
        max_payload: hub.config.max_payload,
    };
    eio::encode(Kind::Open, &data.to_string())
}

fn open_polling(hub: Arc<Hub>, req: &Request) -> Response {
    let sid = new_sid();
    // A client has at most one poll and one post in flight, plus an upgrade.
    let (tx, rx) = mpsc::channel(4);
    hub.polling().insert(sid.clone(), tx);
    let socket = Socket::new(hub.gateway.clone(), peer(req));
    let conn = Connection::polling(hub.clone(), sid.clone(), socket, rx);
    tokio::spawn(Box::new(conn).run());
    text(handshake(&hub, &sid, true))
}

fn open_websocket(hub: Arc<Hub>, mut req: Request) -> Response {
    let Some((response, on_upgrade)) = websocket::accept(&mut req) else {
        return EngineError::BadRequest.into_response();
    };
    let peer = peer(&req);
    drop(req);
    tokio::spawn(websocket_session(hub, on_upgrade, peer));
    response
}

/// A session on WebSocket from the start: its whole life, once the upgrade is done.
pub(crate) async fn websocket_session(hub: Arc<Hub>, on_upgrade: OnUpgrade, peer: IpAddr) {
    let Some(ws) = websocket::established(on_upgrade, hub.config.max_payload).await else {
        return;
    };
    let sid = new_sid();
    let open = handshake(&hub, &sid, false);
    let socket = Socket::new(hub.gateway.clone(), peer);
    Box::new(Connection::websocket(hub.clone(), sid, socket, ws, open))
        .run()
        .await;
}

/// A WebSocket for an existing polling session: handed to it for the probe and upgrade.
fn upgrade(hub: Arc<Hub>, session: mpsc::Sender<PollRequest>, mut req: Request) -> Response {
    let Some((response, on_upgrade)) = websocket::accept(&mut req) else {
        return EngineError::BadRequest.into_response();
    };
    drop(req);
    let max = hub.config.max_payload;
    tokio::spawn(async move {
        if let Some(ws) = websocket::established(on_upgrade, max).await {
            let _ = session.send(PollRequest::Upgrade(Box::new(ws))).await;
        }
    });
    response
}

async fn poll(session: mpsc::Sender<PollRequest>) -> Response {
    let (tx, rx) = oneshot::channel();
    if session.send(PollRequest::Get(tx)).await.is_err() {
        return EngineError::SessionIdUnknown.into_response();
    }
    match rx.await {
        Ok(Ok(body)) => text(body),
        Ok(Err(PollError::Overlap)) => EngineError::BadRequest.into_response(),
        Ok(Err(PollError::Closed)) | Err(_) => EngineError::SessionIdUnknown.into_response(),
    }
}

async fn post(hub: Arc<Hub>, session: mpsc::Sender<PollRequest>, req: Request) -> Response {
    let body = match axum::body::to_bytes(req.into_body(), hub.config.max_payload).await {
        Ok(body) => body,
        Err(_) => {
            let _ = session.send(PollRequest::TooLarge).await;
            return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large").into_response();
        }
    };
    let Ok(body) = String::from_utf8(body.into()) else {
        return EngineError::BadRequest.into_response();
    };
    let (tx, rx) = oneshot::channel();
    if session.send(PollRequest::Post(body, tx)).await.is_err() {
        return EngineError::SessionIdUnknown.into_response();
    }
    match rx.await {
        Ok(Ok(())) => ([(header::CONTENT_TYPE, "text/html")], Body::from("ok")).into_response(),
        Ok(Err(_)) | Err(_) => EngineError::SessionIdUnknown.into_response(),
    }
}
