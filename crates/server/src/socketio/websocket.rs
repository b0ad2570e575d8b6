//! Accepting a WebSocket on the Socket.IO path, with small buffers.
//!
//! tungstenite's defaults (128 KiB read buffer) would dominate an idle connection's
//! memory; the read buffer here is a few hundred bytes and grows only while a large
//! message is being read. Messages above the transport limit end the connection with close
//! code 1009.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

pub(crate) type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Read buffer per connection; a Socket.IO request of a few hundred bytes fits in one read.
const READ_BUFFER: usize = 512;

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

/// Check the upgrade request; on success, the 101 response to send and the future that
/// yields the connection once it is sent.
pub(crate) fn accept(req: &mut Request) -> Option<(Response, OnUpgrade)> {
    let headers = req.headers();
    let valid = header_has(headers, header::CONNECTION, "upgrade")
        && header_has(headers, header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    if !valid {
        return None;
    }
    let accept_key = derive_accept_key(key.as_bytes());
    let on_upgrade = req.extensions_mut().remove::<OnUpgrade>()?;
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept_key)
        .body(Body::empty())
        .ok()?;
    Some((response, on_upgrade))
}

/// The WebSocket, once the 101 response has gone out.
pub(crate) async fn established(on_upgrade: OnUpgrade, max_message: usize) -> Option<Ws> {
    match on_upgrade.await {
        Ok(upgraded) => Some(
            WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config(max_message)),
            )
            .await,
        ),
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            None
        }
    }
}

fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Every write is flushed at once (the connection batches its own packets).
        .write_buffer_size(0)
        .max_write_buffer_size(max_message.saturating_mul(2).max(64 * 1024))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}
