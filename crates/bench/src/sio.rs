//! A minimal Socket.IO v4 client over the Engine.IO v4 websocket transport.
//!
//! Just enough of the protocol for benchmarking: the engine open packet, the
//! `40` namespace connect for `/` (optionally with an auth payload), answering
//! engine pings, emitting events with an ack id (`42<id>[...]`) and reading acks
//! (`43<id>[...]`) and plain events (`42[...]`). No polling transport, no binary
//! packets, no TLS.

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// The bench's websocket clients (Socket.IO and native chat) read into a small buffer.
/// tungstenite 0.30 zeroes the free part of its read buffer before every read, frame or
/// not: with the default 128 KiB that memset was 43 % of the client's CPU in the fan-out
/// benchmark (500 sockets on one thread), so the client, not the server, set the tail.
/// A larger frame still arrives whole: the buffer grows to the frame's length.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Where to connect: a TCP authority and the websocket URL for Engine.IO v4.
#[derive(Clone, Debug)]
pub struct Target {
    authority: String,
    url: String,
}

impl Target {
    /// Builds a target from a base URL (`http://host:port` or `ws://host:port`)
    /// and the Socket.IO path (e.g. `/sockethub` or `/socket.io`).
    pub fn new(base: &str, path: &str) -> Result<Self> {
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("ws://"))
            .ok_or_else(|| anyhow!("unsupported URL {base:?}: use http:// or ws:// (no TLS)"))?;
        let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
        if authority.is_empty() {
            bail!("URL {base:?} has no host");
        }
        let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.starts_with('[') || host.ends_with(']'))
        });
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let path = path.trim_matches('/');
        let url = if path.is_empty() {
            format!("ws://{authority}/?EIO=4&transport=websocket")
        } else {
            format!("ws://{authority}/{path}/?EIO=4&transport=websocket")
        };
        Ok(Self { authority, url })
    }
}

/// Something the server sent on the default namespace.
#[derive(Debug)]
pub enum Incoming {
    /// `43<id>[args...]`: the answer to an emit with ack id `id`.
    Ack { id: u64, args: Vec<Value> },
    /// `42[name, args...]`: a server-initiated event (`args[0]` is its name).
    Event { args: Vec<Value> },
}

/// One connected Socket.IO client on the default namespace `/`.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    next_ack_id: u64,
}

impl Client {
    /// Opens the TCP connection (with `TCP_NODELAY`), upgrades to websocket,
    /// waits for the engine open packet and completes the `40` handshake,
    /// sending `auth` (e.g. `{"token": ...}`) with it when given.
    pub async fn connect(target: &Target, auth: Option<&Value>) -> Result<Self> {
        let tcp = TcpStream::connect(&target.authority)
            .await
            .with_context(|| format!("connecting to {}", target.authority))?;
        tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (ws, _response) = client_async_with_config(target.url.as_str(), tcp, Some(ws_config()))
            .await
            .with_context(|| format!("websocket upgrade at {}", target.url))?;
        let mut client = Self { ws, next_ack_id: 1 };

        let open = client
            .recv_text()
            .await?
            .ok_or_else(|| anyhow!("closed before the engine open packet"))?;
        if !open.as_str().starts_with('0') {
            bail!("expected engine open packet, got {:?}", truncate(&open));
        }
        let connect = match auth {
            Some(auth) => format!("40{auth}"),
            None => "40".to_owned(),
        };
        client.send_text(connect).await?;
        loop {
            let text = client
                .recv_text()
                .await?
                .ok_or_else(|| anyhow!("closed during the namespace connect"))?;
            match text.as_str() {
                "2" => client.send_text("3").await?,
                t if t.starts_with("40") => return Ok(client),
                t if t.starts_with("44") => bail!("namespace connect refused: {}", truncate(&text)),
                _ => {}
            }
        }
    }

    /// Emits `event` with one JSON argument and a fresh ack id, which is returned.
    pub async fn emit_with_ack(&mut self, event: &str, data: &Value) -> Result<u64> {
        let id = self.next_ack_id;
        self.next_ack_id += 1;
        let mut packet = format!("42{id}");
        packet.push_str(&serde_json::to_string(&(event, data))?);
        self.send_text(packet).await?;
        Ok(id)
    }

    /// Reads the next ack or event, answering engine pings on the way.
    /// Returns `None` once the server closed the connection or disconnected us.
    pub async fn next(&mut self) -> Result<Option<Incoming>> {
        loop {
            let Some(text) = self.recv_text().await? else {
                return Ok(None);
            };
            match engine_packet(&text)? {
                Engine::Ping => self.send_text("3").await?,
                Engine::Closed => return Ok(None),
                Engine::Ignored => {}
                Engine::Socket(packet) => {
                    if let Some(incoming) = parse_socket_packet(packet)? {
                        return Ok(Some(incoming));
                    }
                    if packet.starts_with('1') {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The underlying websocket, for callers that frame packets themselves
    /// (with [`engine_packet`]) while multiplexing reads and timed writes.
    pub fn into_ws(self) -> WebSocketStream<TcpStream> {
        self.ws
    }

    /// Disconnects from the namespace and closes the websocket (best effort).
    pub async fn close(mut self) {
        let _ = self.send_text("41").await;
        let _ = self.ws.close(None).await;
    }

    async fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<()> {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .context("websocket send")
    }

    async fn recv_text(&mut self) -> Result<Option<Utf8Bytes>> {
        while let Some(message) = self.ws.next().await {
            match message.context("websocket receive")? {
                Message::Text(text) => return Ok(Some(text)),
                Message::Close(_) => return Ok(None),
                Message::Binary(_) => bail!("binary frames are not supported"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        Ok(None)
    }
}

/// What one Engine.IO text frame is.
#[derive(Debug, PartialEq)]
pub enum Engine<'a> {
    /// `2`: a ping, to be answered with `3`.
    Ping,
    /// `1`: the server closed the session.
    Closed,
    /// `3`, `6`: pong and noop.
    Ignored,
    /// `4...`: a Socket.IO packet (the text after the `4`).
    Socket(&'a str),
}

/// Classifies an Engine.IO text frame.
pub fn engine_packet(text: &str) -> Result<Engine<'_>> {
    if let Some(packet) = text.strip_prefix('4') {
        return Ok(Engine::Socket(packet));
    }
    match text.as_bytes().first() {
        Some(b'2') => Ok(Engine::Ping),
        Some(b'1') => Ok(Engine::Closed),
        Some(b'3' | b'6') => Ok(Engine::Ignored),
        _ => bail!("unexpected engine.io packet {:?}", truncate(text)),
    }
}

/// Parses a Socket.IO packet (the text after the engine `4`). Returns `None`
/// for packets the benchmark ignores (connect, disconnect).
fn parse_socket_packet(packet: &str) -> Result<Option<Incoming>> {
    let Some(kind) = packet.as_bytes().first().copied() else {
        bail!("empty socket.io packet");
    };
    let mut rest = &packet[1..];
    match kind {
        b'0' | b'1' => return Ok(None),
        b'2' | b'3' => {}
        b'4' => bail!("socket.io connect error: {}", truncate(packet)),
        _ => bail!("unsupported socket.io packet {:?}", truncate(packet)),
    }
    if rest.starts_with('/') {
        rest = rest.split_once(',').map_or("", |(_, r)| r);
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (id, json) = rest.split_at(digits);
    let args: Vec<Value> = serde_json::from_str(json).with_context(|| {
        format!(
            "socket.io payload is not a JSON array: {:?}",
            truncate(json)
        )
    })?;
    if kind == b'2' {
        return Ok(Some(Incoming::Event { args }));
    }
    let id = id
        .parse()
        .with_context(|| format!("ack without a valid id: {:?}", truncate(packet)))?;
    Ok(Some(Incoming::Ack { id, args }))
}

pub fn truncate(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(120)
        .map_or(text.len(), |(index, _)| index);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls() {
        let t = Target::new("http://127.0.0.1:10550", "/sockethub").unwrap();
        assert_eq!(t.authority, "127.0.0.1:10550");
        assert_eq!(
            t.url,
            "ws://127.0.0.1:10550/sockethub/?EIO=4&transport=websocket"
        );
        let t = Target::new("ws://localhost/", "socket.io/").unwrap();
        assert_eq!(t.authority, "localhost:80");
        assert_eq!(
            t.url,
            "ws://localhost:80/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(
            Target::new("http://[::1]", "/").unwrap().authority,
            "[::1]:80"
        );
        assert!(Target::new("https://x", "/").is_err());
    }

    #[test]
    fn parses_acks_and_events() {
        match parse_socket_packet(r#"312[{"a":1}]"#).unwrap() {
            Some(Incoming::Ack { id, args }) => {
                assert_eq!(id, 12);
                assert_eq!(args, vec![serde_json::json!({"a":1})]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_socket_packet(r#"2["message",{}]"#).unwrap(),
            Some(Incoming::Event { .. })
        ));
        assert!(matches!(
            parse_socket_packet(r#"3/ns,7[null]"#).unwrap(),
            Some(Incoming::Ack { id: 7, .. })
        ));
        assert!(parse_socket_packet(r#"0{"sid":"x"}"#).unwrap().is_none());
        assert!(parse_socket_packet(r#"3[1]"#).is_err());
        assert!(parse_socket_packet(r#"4{"message":"no"}"#).is_err());
        assert!(parse_socket_packet("3").is_err());
    }

    #[test]
    fn classifies_engine_frames() {
        assert_eq!(engine_packet("2").unwrap(), Engine::Ping);
        assert_eq!(engine_packet("1").unwrap(), Engine::Closed);
        assert_eq!(engine_packet("6").unwrap(), Engine::Ignored);
        assert_eq!(engine_packet("42[1]").unwrap(), Engine::Socket("2[1]"));
        assert!(engine_packet("").is_err());
        assert!(engine_packet("x").is_err());
    }
}
