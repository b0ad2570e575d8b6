//! Accepting a WebSocket on the Socket.IO path: the handshake and small buffers shared
//! with the chat's `/ws` (`switchboard-websocket`). Messages above the transport limit end
//! the connection with close code 1009.

use axum::extract::Request;
use axum::response::Response;
use hyper::upgrade::OnUpgrade;

pub(crate) type Ws = switchboard_websocket::WebSocket;

/// Check the upgrade request; on success, the 101 response to send and the future that
/// yields the connection once it is sent. Every refusal is the same Engine.IO error.
pub(crate) fn accept(req: &mut Request) -> Option<(Response, OnUpgrade)> {
    switchboard_websocket::handshake(req).ok()
}

/// The WebSocket, once the 101 response has gone out.
pub(crate) async fn established(on_upgrade: OnUpgrade, max_message: usize) -> Option<Ws> {
    let config = switchboard_websocket::config(max_message);
    match switchboard_websocket::established(on_upgrade, config).await {
        Ok(ws) => Some(ws),
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade failed");
            None
        }
    }
}
