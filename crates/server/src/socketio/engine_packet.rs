//! Engine.IO v4 packets, the layer under Socket.IO.
//!
//! A packet is one type digit followed by its data: `0` open (server → client, the
//! handshake JSON), `1` close, `2` ping, `3` pong, `4` message (a Socket.IO packet), `5`
//! upgrade, `6` noop. Over WebSocket each text frame is one packet; over HTTP long-polling a
//! body holds several, separated by the record separator `\x1e`. Binary packets (`b` +
//! base64 over polling, binary frames over WebSocket) are not supported: Sockethub speaks
//! JSON only, and the engine refuses them with a clear reason.

use std::fmt;

/// Separates packets in a polling body.
pub(crate) const SEPARATOR: char = '\x1e';

/// A packet sent by the client. (The server writes its packets with [`encode`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Packet<'a> {
    Close,
    Ping(&'a str),
    Pong(&'a str),
    Message(&'a str),
    Upgrade,
    Noop,
}

/// Packet types, as their digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Open = 0,
    Close = 1,
    Ping = 2,
    Pong = 3,
    Message = 4,
    Noop = 6,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("binary packets are not supported (Sockethub uses JSON only)")]
    Binary,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("a client may not send an open packet")]
    Open,
}

/// Decode one text packet.
pub(crate) fn decode(text: &str) -> Result<Packet<'_>, DecodeError> {
    let mut chars = text.chars();
    let kind = chars.next().ok_or(DecodeError::Empty)?;
    let data = chars.as_str();
    Ok(match kind {
        '0' => return Err(DecodeError::Open),
        '1' => Packet::Close,
        '2' => Packet::Ping(data),
        '3' => Packet::Pong(data),
        '4' => Packet::Message(data),
        '5' => Packet::Upgrade,
        '6' => Packet::Noop,
        'b' => return Err(DecodeError::Binary),
        other => return Err(DecodeError::UnknownType(other)),
    })
}

/// The packets of a polling request body.
pub(crate) fn split_payload(body: &str) -> impl Iterator<Item = &str> {
    body.split(SEPARATOR)
}

/// Encode a packet with `data` (which, for `Message`, is a whole Socket.IO packet).
pub(crate) fn encode(kind: Kind, data: &str) -> String {
    let mut s = String::with_capacity(1 + data.len());
    s.push(char::from(b'0' + kind as u8));
    s.push_str(data);
    s
}

/// The handshake's data (the `0` packet's JSON).
pub(crate) struct Handshake<'a> {
    pub sid: &'a str,
    pub upgrades: bool,
    pub ping_interval_ms: u128,
    pub ping_timeout_ms: u128,
    pub max_payload: usize,
}

impl fmt::Display for Handshake<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The sid is hex, so it needs no JSON escaping.
        write!(
            f,
            r#"{{"sid":"{}","upgrades":[{}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            self.sid,
            if self.upgrades { r#""websocket""# } else { "" },
            self.ping_interval_ms,
            self.ping_timeout_ms,
            self.max_payload
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_client_packet_type() {
        assert_eq!(decode("1"), Ok(Packet::Close));
        assert_eq!(decode("2probe"), Ok(Packet::Ping("probe")));
        assert_eq!(decode("3"), Ok(Packet::Pong("")));
        assert_eq!(decode("42[\"a\"]"), Ok(Packet::Message("2[\"a\"]")));
        assert_eq!(decode("5"), Ok(Packet::Upgrade));
        assert_eq!(decode("6"), Ok(Packet::Noop));
    }

    #[test]
    fn refuses_malformed_packets() {
        assert_eq!(decode(""), Err(DecodeError::Empty));
        assert_eq!(decode("7"), Err(DecodeError::UnknownType('7')));
        assert_eq!(decode("x42"), Err(DecodeError::UnknownType('x')));
        assert_eq!(decode("é"), Err(DecodeError::UnknownType('é')));
        assert_eq!(decode("0{}"), Err(DecodeError::Open));
        assert_eq!(decode("bAQID"), Err(DecodeError::Binary));
    }

    #[test]
    fn splits_a_polling_body() {
        let parts: Vec<_> = split_payload("40\x1e42[\"message\",{}]\x1e3").collect();
        assert_eq!(parts, ["40", "42[\"message\",{}]", "3"]);
        assert_eq!(split_payload("3").collect::<Vec<_>>(), ["3"]);
    }

    #[test]
    fn encodes_with_the_type_digit() {
        assert_eq!(encode(Kind::Ping, ""), "2");
        assert_eq!(encode(Kind::Pong, "probe"), "3probe");
        assert_eq!(encode(Kind::Message, "0{}"), "40{}");
        assert_eq!(encode(Kind::Noop, ""), "6");
        assert_eq!(encode(Kind::Close, ""), "1");
    }

    #[test]
    fn handshake_is_the_spec_json() {
        let h = Handshake {
            sid: "abc",
            upgrades: true,
            ping_interval_ms: 25000,
            ping_timeout_ms: 20000,
            max_payload: 1000000,
        };
        let v: serde_json::Value = serde_json::from_str(&h.to_string()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000})
        );
        let ws_only = Handshake {
            upgrades: false,
            ..h
        };
        let v: serde_json::Value = serde_json::from_str(&ws_only.to_string()).unwrap();
        assert_eq!(v["upgrades"], serde_json::json!([]));
        assert_eq!(encode(Kind::Open, "x"), "0x");
    }
}
