//! Accepting a WebSocket (RFC 6455) on hyper's HTTP/1.1 upgrade, with small buffers: the
//! one handshake both of Switchboard's WebSocket endpoints use (`/sockethub` in
//! `switchboard-server`, `/ws` in `switchboard-chat`).
//!
//! [`handshake`] checks the upgrade request and builds the `101 Switching Protocols`
//! response; each caller answers a [`Refusal`] in its own protocol's words. Once the
//! response has gone out, [`established`] yields the WebSocket, configured by [`config`]:
//! tungstenite's defaults (a 128 KiB read buffer) would dominate an idle connection's
//! memory, so the read buffer here is a few hundred bytes and grows only while a large
//! message is being read, and every write goes straight to the socket (callers batch
//! their own frames and flush once). A message above the limit fails the read with
//! [`tungstenite::Error::Capacity`](tokio_tungstenite::tungstenite::Error::Capacity);
//! callers close with 1009.

use http::{HeaderMap, HeaderName, Request, Response, StatusCode, header};
pub use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// A server-side WebSocket on an upgraded hyper connection.
pub type WebSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Read buffer per connection: a typical client frame (a few hundred bytes) fits in one
/// read; larger ones grow it while they are read.
pub const READ_BUFFER: usize = 512;

/// Why a request cannot become a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a version-13 WebSocket upgrade (`Connection: upgrade`, `Upgrade: websocket`,
    /// `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`).
    #[error("expected a WebSocket upgrade (version 13)")]
    NotWebSocket,
    /// The connection cannot be upgraded (HTTP/2, or the request did not come from
    /// hyper's server).
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

/// Whether a comma-separated header has `token` (case-insensitive), in any of its values.
fn header_has(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(token))
}

/// Check the upgrade request; on success, the 101 response to send (with an empty body
/// of the caller's type) and the future that yields the connection once it is sent.
pub fn handshake<B, R: Default>(req: &mut Request<B>) -> Result<(Response<R>, OnUpgrade), Refusal> {
    let headers = req.headers();
    let valid = header_has(headers, header::CONNECTION, "upgrade")
        && header_has(headers, header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if valid => key,
        _ => return Err(Refusal::NotWebSocket),
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(Refusal::NotUpgradable)?;
    let mut response = Response::new(R::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    headers.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    // The accept key is base64: always a valid header value.
    if let Ok(value) = http::HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    Ok((response, on_upgrade))
}

/// The WebSocket, once the 101 response has gone out (`Err`: the client went away first).
pub async fn established(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
) -> Result<WebSocket, hyper::Error> {
    let upgraded = on_upgrade.await?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await)
}

/// Largest frame the server writes. With no write buffer, tungstenite holds at most one
/// frame that the socket has not taken yet (the sink waits for it before taking another),
/// so this limit bounds one frame the server itself built, which is already in memory by
/// then: it is a guard, not a buffer. A frame over it makes the write fail and the
/// connection drop without a word, so it is set well above any frame the server means to
/// write (it once followed the client's limit, and a read receipt listing some 20,000
/// message ids, or a long list of online users, closed the connection).
const MAX_WRITE: usize = 16 << 20;

/// Small buffers and a limit of `max_message` bytes per message (and frame).
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Every write is flushed at once (connections batch their own frames).
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE.max(max_message.saturating_mul(2)))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/ws");
        for (name, value) in headers {
            b = b.header(*name, *value);
        }
        b.body(()).unwrap()
    }

    const GOOD: &[(&str, &str)] = &[
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        // RFC 6455 section 1.3's example.
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn refuses_what_is_not_a_version_13_upgrade() {
        for (missing, left_out) in GOOD.iter().enumerate() {
            let headers: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, h)| *h)
                .collect();
            let got = handshake::<_, ()>(&mut request(&headers)).map(|_| ());
            assert_eq!(got, Err(Refusal::NotWebSocket), "without {left_out:?}");
        }
        let mut old = request(GOOD);
        old.headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert_eq!(
            handshake::<_, ()>(&mut old).map(|_| ()),
            Err(Refusal::NotWebSocket)
        );
    }

    #[test]
    fn a_valid_request_outside_hyper_cannot_be_upgraded() {
        // Only hyper's server puts the upgrade future in the request.
        assert_eq!(
            handshake::<_, ()>(&mut request(GOOD)).map(|_| ()),
            Err(Refusal::NotUpgradable)
        );
    }

    #[test]
    fn answers_with_the_rfc_accept_key() {
        let mut req = request(GOOD);
        // A stand-in for the future hyper's server adds (it never resolves to a socket).
        let stand_in = hyper::upgrade::on(request(&[]));
        req.extensions_mut().insert(stand_in);
        let (response, _) = handshake::<_, ()>(&mut req).expect("accepted");
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = response.headers();
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
        // RFC 6455 section 1.3: the example key's accept value.
        assert_eq!(
            h[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(req.extensions().get::<OnUpgrade>().is_none(), "taken");
    }

    /// A frame the server built far over the client's message limit (a long list) is
    /// written, and the client gets it whole. With the write limit at twice the client's
    /// limit, the write failed and the connection dropped.
    #[tokio::test]
    async fn the_server_writes_frames_over_the_clients_limit() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;

        let big = "x".repeat(1 << 20);
        let (server, client) = tokio::io::duplex(64 * 1024);
        let mut server =
            WebSocketStream::from_raw_socket(server, Role::Server, Some(config(1000))).await;
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        // The server end closes once the write is done, so a failed write ends the read.
        let sent = big.clone();
        let write = async move { server.send(Message::text(sent)).await };
        let (written, read) = tokio::join!(write, client.next());
        written.expect("the server writes a 1 MiB frame");
        assert_eq!(read.unwrap().unwrap(), Message::text(big));
    }

    #[test]
    fn small_buffers_and_the_message_limit() {
        let c = config(1000);
        assert_eq!(c.read_buffer_size, READ_BUFFER);
        assert_eq!(c.write_buffer_size, 0);
        assert_eq!(c.max_message_size, Some(1000));
        assert_eq!(c.max_write_buffer_size, MAX_WRITE);
    }
}
