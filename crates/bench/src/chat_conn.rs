//! One native-chat client connection, in either framing the load generator
//! drives: JSON frames `{type, data}` over `ws://host/ws?token=…` (Switchboard
//! and the node `ws` peer) or the same events as Socket.IO events (the
//! socket.io peer).
//!
//! Reading is split in two so the caller can multiplex reads with timed
//! writes: [`ChatConn::next_frame`] only waits on the socket (cancel-safe, so it
//! can sit in a `select!`), and [`ChatConn::decode`] does everything else,
//! including answering Engine.IO pings.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

use crate::sio::{self, Engine};

/// How long the handshake up to `connection_established` may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The wire framing of a chat server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// JSON frames `{type, data}` at `/ws?token=` (Switchboard, node `ws` peer).
    Ws,
    /// Socket.IO v4 events, auth `{token}` (socket.io peer).
    Sio,
}

/// Where a chat server listens.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub proto: Proto,
    /// `http://host:port`, also the base of the REST calls.
    pub base: String,
    authority: String,
    sio: sio::Target,
}

impl Endpoint {
    /// `base` is `http://host:port`; `sio_path` is the Socket.IO path used
    /// with [`Proto::Sio`].
    pub fn new(proto: Proto, base: &str, sio_path: &str) -> Result<Self> {
        let sio = sio::Target::new(base, sio_path)?;
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("chat URL {base:?} must start with http://"))?;
        let authority = rest.split_once('/').map_or(rest, |(a, _)| a).to_owned();
        if authority.is_empty() || authority.ends_with(':') {
            bail!("chat URL {base:?} needs a host and a port");
        }
        Ok(Self {
            proto,
            base: format!("http://{authority}"),
            authority,
            sio,
        })
    }
}

/// A chat event the generator acts on (`data` fields it reads).
#[derive(Debug, Default, Deserialize)]
pub struct EventData {
    pub content: Option<String>,
    #[serde(rename = "clientMsgId")]
    pub client_msg_id: Option<String>,
    pub message: Option<String>,
    /// `mark_read_success`: how many messages the mark took.
    pub count: Option<u64>,
}

/// One decoded server frame.
#[derive(Debug)]
pub enum Event {
    NewMessage(EventData),
    MessageSent(EventData),
    ReadMarked(EventData),
    Error(String),
    /// Anything else (presence, receipts, typing …), ignored by the bench.
    Other,
    /// The server closed the connection.
    Closed,
}

/// An open, authenticated chat connection.
pub struct ChatConn {
    ws: WebSocketStream<TcpStream>,
    proto: Proto,
}

impl ChatConn {
    /// Connects with `TCP_NODELAY`, authenticates with `token` and waits for
    /// `connection_established`.
    pub async fn connect(endpoint: &Endpoint, token: &str) -> Result<Self> {
        timeout(HANDSHAKE_TIMEOUT, Self::handshake(endpoint, token))
            .await
            .map_err(|_| anyhow!("no connection_established within {HANDSHAKE_TIMEOUT:?}"))?
    }

    async fn handshake(endpoint: &Endpoint, token: &str) -> Result<Self> {
        let ws = match endpoint.proto {
            Proto::Ws => {
                let tcp = TcpStream::connect(&endpoint.authority)
                    .await
                    .with_context(|| format!("connecting to {}", endpoint.authority))?;
                tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
                let url = format!("ws://{}/ws?token={}", endpoint.authority, url_encode(token));
                let (ws, _) = client_async_with_config(url.as_str(), tcp, Some(sio::ws_config()))
                    .await
                    .with_context(|| {
                        format!("websocket upgrade at ws://{}/ws", endpoint.authority)
                    })?;
                ws
            }
            Proto::Sio => sio::Client::connect(&endpoint.sio, Some(&json!({ "token": token })))
                .await?
                .into_ws(),
        };
        let mut conn = Self {
            ws,
            proto: endpoint.proto,
        };
        loop {
            let Some(frame) = conn.next_frame().await else {
                bail!("closed before connection_established");
            };
            let frame = frame?;
            if let Message::Close(Some(close)) = &frame {
                bail!(
                    "closed before connection_established: code {} {:?}",
                    u16::from(close.code),
                    close.reason.as_str()
                );
            }
            if let Some(text) = frame.to_text().ok().filter(|t| !t.is_empty())
                && conn.is_established(text)?
            {
                return Ok(conn);
            }
            match conn.decode(frame).await? {
                Event::Closed => bail!("closed before connection_established"),
                Event::Error(message) => bail!("server error during handshake: {message}"),
                _ => {}
            }
        }
    }

    fn is_established(&self, text: &str) -> Result<bool> {
        let name = match self.proto {
            Proto::Ws => serde_json::from_str::<Frame<'_>>(text)
                .map(|f| f.kind == "connection_established")
                .unwrap_or(false),
            Proto::Sio => match sio::engine_packet(text)? {
                Engine::Socket(packet) => packet.starts_with("2[\"connection_established\""),
                _ => false,
            },
        };
        Ok(name)
    }

    /// Queues a `chat_message` with `data` without flushing.
    pub async fn feed_chat(&mut self, data: &Value) -> Result<()> {
        self.feed("chat_message", data).await
    }

    /// Queues an event of type `kind` with `data` without flushing.
    pub async fn feed(&mut self, kind: &str, data: &Value) -> Result<()> {
        let text = match self.proto {
            Proto::Ws => serde_json::to_string(&json!({ "type": kind, "data": data }))?,
            Proto::Sio => format!("42{}", serde_json::to_string(&(kind, data))?),
        };
        self.ws
            .feed(Message::Text(text.into()))
            .await
            .context("websocket send")
    }

    /// Flushes queued frames.
    pub async fn flush(&mut self) -> Result<()> {
        self.ws.flush().await.context("websocket flush")
    }

    /// Waits for the next websocket frame. Cancel-safe.
    pub async fn next_frame(&mut self) -> Option<Result<Message>> {
        self.ws.next().await.map(|r| r.context("websocket receive"))
    }

    /// Decodes a frame from [`next_frame`](Self::next_frame), answering
    /// Engine.IO pings on the way.
    pub async fn decode(&mut self, frame: Message) -> Result<Event> {
        let text = match frame {
            Message::Text(text) => text,
            Message::Close(_) => return Ok(Event::Closed),
            Message::Binary(_) => bail!("unexpected binary frame"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(Event::Other),
        };
        match self.proto {
            Proto::Ws => decode_json(&text),
            Proto::Sio => match sio::engine_packet(&text)? {
                Engine::Ping => {
                    self.ws
                        .send(Message::Text(Utf8Bytes::from_static("3")))
                        .await
                        .context("answering an engine ping")?;
                    Ok(Event::Other)
                }
                Engine::Closed => Ok(Event::Closed),
                Engine::Ignored => Ok(Event::Other),
                Engine::Socket(packet) => decode_sio(packet),
            },
        }
    }

    /// Closes the connection (best effort).
    pub async fn close(mut self) {
        let _ = timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    data: Option<EventData>,
}

fn event(kind: &str, data: Option<EventData>) -> Event {
    let data = data.unwrap_or_default();
    match kind {
        "new_message" => Event::NewMessage(data),
        "message_sent" => Event::MessageSent(data),
        "mark_read_success" => Event::ReadMarked(data),
        "error" => Event::Error(data.message.unwrap_or_else(|| "(no message)".into())),
        _ => Event::Other,
    }
}

fn decode_json(text: &str) -> Result<Event> {
    let frame: Frame<'_> = serde_json::from_str(text)
        .with_context(|| format!("not a chat frame: {:?}", sio::truncate(text)))?;
    Ok(event(frame.kind, frame.data))
}

/// Decodes a Socket.IO packet; only `2["name", data]` events matter here.
fn decode_sio(packet: &str) -> Result<Event> {
    match packet.as_bytes().first() {
        Some(b'2') => {}
        Some(b'1') => return Ok(Event::Closed),
        Some(b'4') => bail!("socket.io connect error: {}", sio::truncate(packet)),
        _ => return Ok(Event::Other),
    }
    let json = packet[1..].trim_start_matches(|c: char| c.is_ascii_digit());
    let (kind, data): (&str, Option<EventData>) = serde_json::from_str(json)
        .with_context(|| format!("unexpected socket.io event {:?}", sio::truncate(packet)))?;
    Ok(event(kind, data))
}

/// Percent-encodes a query value (tokens are JWTs or ids: mostly unreserved).
fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_json_frames() {
        let e = decode_json(
            r#"{"type":"new_message","data":{"id":7,"senderId":"a","content":"1 2 x","clientMsgId":"c"}}"#,
        )
        .unwrap();
        assert!(matches!(e, Event::NewMessage(d) if d.content.as_deref() == Some("1 2 x")));
        let e = decode_json(r#"{"type":"message_sent","data":{"id":"u1","clientMsgId":"5-1"}}"#)
            .unwrap();
        assert!(matches!(e, Event::MessageSent(d) if d.client_msg_id.as_deref() == Some("5-1")));
        let e = decode_json(r#"{"type":"error","data":{"message":"no","timestamp":"t"}}"#).unwrap();
        assert!(matches!(e, Event::Error(m) if m == "no"));
        assert!(matches!(
            decode_json(r#"{"type":"user_online","data":{"userId":3}}"#).unwrap(),
            Event::Other
        ));
        assert!(decode_json("nope").is_err());
    }

    #[test]
    fn decodes_sio_events() {
        let e = decode_sio(r#"2["new_message",{"content":"9 1 p"}]"#).unwrap();
        assert!(matches!(e, Event::NewMessage(d) if d.content.as_deref() == Some("9 1 p")));
        assert!(matches!(decode_sio("0{}").unwrap(), Event::Other));
        assert!(matches!(decode_sio("1").unwrap(), Event::Closed));
        assert!(decode_sio(r#"4{"message":"Missing token"}"#).is_err());
        assert!(decode_sio(r#"2[1,2,3]"#).is_err());
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::new(Proto::Ws, "http://127.0.0.1:8080/", "/socket.io").unwrap();
        assert_eq!(e.base, "http://127.0.0.1:8080");
        assert_eq!(e.authority, "127.0.0.1:8080");
        assert!(Endpoint::new(Proto::Ws, "http://127.0.0.1:", "/").is_err());
        assert!(Endpoint::new(Proto::Ws, "ws://127.0.0.1:1", "/").is_err());
    }

    #[test]
    fn encodes_tokens() {
        assert_eq!(url_encode("ab.C-_~9"), "ab.C-_~9");
        assert_eq!(url_encode("a b&c"), "a%20b%26c");
    }
}
