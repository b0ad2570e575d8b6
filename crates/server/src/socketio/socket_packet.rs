//! Socket.IO v5 packets, carried in Engine.IO `message` packets.
//!
//! Text form: `<type>[<attachments>-][<namespace>,][<ack id>][<JSON data>]`, where the
//! namespace is left out for `/`. Types: `0` CONNECT, `1` DISCONNECT, `2` EVENT, `3` ACK,
//! `4` CONNECT_ERROR, `5` BINARY_EVENT, `6` BINARY_ACK. An EVENT's data is an array whose
//! first element is the event name; an ACK's data is the array of reply arguments.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

/// A decoded client packet; `data` is still JSON text, parsed only where it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Packet<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    pub ack: Option<u64>,
    pub data: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("empty packet")]
    Empty,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("bad attachment count")]
    Attachments,
    #[error("ack id out of range")]
    AckId,
    #[error("invalid JSON data")]
    Json,
    #[error("invalid data for this packet type")]
    Payload,
}

/// An event: its name and arguments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub name: String,
    pub args: Vec<Value>,
}

/// Decode one packet, checking its data is the shape its type requires.
pub(crate) fn decode(text: &str) -> Result<Packet<'_>, DecodeError> {
    let kind = match text.as_bytes().first().ok_or(DecodeError::Empty)? {
        b'0' => Kind::Connect,
        b'1' => Kind::Disconnect,
        b'2' => Kind::Event,
        b'3' => Kind::Ack,
        b'4' => Kind::ConnectError,
        b'5' => Kind::BinaryEvent,
        b'6' => Kind::BinaryAck,
        _ => {
            let c = text.chars().next().unwrap_or('\0');
            return Err(DecodeError::UnknownType(c));
        }
    };
    let mut rest = &text[1..];
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        let (count, after) = rest.split_once('-').ok_or(DecodeError::Attachments)?;
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeError::Attachments);
        }
        rest = after;
    }
    let mut namespace = "/";
    if rest.starts_with('/') {
        match rest.split_once(',') {
            Some((ns, after)) => {
                namespace = ns;
                rest = after;
            }
            None => {
                namespace = rest;
                rest = "";
            }
        }
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        let id = rest[..digits].parse().map_err(|_| DecodeError::AckId)?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };
    let packet = Packet {
        kind,
        namespace,
        ack,
        data: rest,
    };
    check_payload(&packet)?;
    Ok(packet)
}

/// The spec's rule for each type's data (socket.io-parser applies the same).
fn check_payload(p: &Packet<'_>) -> Result<(), DecodeError> {
    let parsed = || -> Result<Value, DecodeError> {
        serde_json::from_str(p.data).map_err(|_| DecodeError::Json)
    };
    let ok = match p.kind {
        Kind::Connect => p.data.is_empty() || parsed()?.is_object(),
        Kind::Disconnect => p.data.is_empty(),
        // Events are parsed again by `event`; decoding only checks the outline here.
        Kind::Event | Kind::BinaryEvent => {
            matches!(parsed()?, Value::Array(a) if a.first().is_some_and(Value::is_string))
        }
        Kind::Ack | Kind::BinaryAck => parsed()?.is_array(),
        Kind::ConnectError => {
            let v = parsed()?;
            v.is_object() || v.is_string()
        }
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::Payload)
    }
}

/// An EVENT packet's name and arguments.
pub(crate) fn event(data: &str) -> Result<Event, DecodeError> {
    let mut items: Vec<Value> = serde_json::from_str(data).map_err(|_| DecodeError::Json)?;
    if items.is_empty() {
        return Err(DecodeError::Payload);
    }
    match items.remove(0) {
        Value::String(name) => Ok(Event { name, args: items }),
        _ => Err(DecodeError::Payload),
    }
}

fn json(v: &Value) -> String {
    // Serialising a `Value` cannot fail (its map keys are strings).
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// CONNECT reply on `/` with the socket's id (hex, so no escaping needed).
pub(crate) fn connect(sid: &str) -> String {
    format!(r#"0{{"sid":"{sid}"}}"#)
}

/// CONNECT_ERROR for a namespace the server does not serve.
pub(crate) fn connect_error(namespace: &str, message: &str) -> String {
    let body = serde_json::json!({ "message": message });
    // The namespace goes in raw, as socket.io writes it; one that would break the framing
    // is left out.
    if namespace.contains(',') || !namespace.starts_with('/') {
        return format!("4{}", json(&body));
    }
    format!("4{namespace},{}", json(&body))
}

/// DISCONNECT on `/`.
pub(crate) fn disconnect() -> String {
    "1".to_owned()
}

/// EVENT on `/` with one argument. `name` is one of the server's fixed ASCII event names.
pub(crate) fn event_packet(name: &str, arg: &Value) -> String {
    format!(r#"2["{name}",{}]"#, json(arg))
}

/// ACK for the client's request `id`, with one argument.
pub(crate) fn ack(id: u64, arg: &Value) -> String {
    format!("3{id}[{}]", json(arg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p<'a>(kind: Kind, namespace: &'a str, ack: Option<u64>, data: &'a str) -> Packet<'a> {
        Packet {
            kind,
            namespace,
            ack,
            data,
        }
    }

    #[test]
    fn decodes_the_spec_examples() {
        assert_eq!(decode("0"), Ok(p(Kind::Connect, "/", None, "")));
        assert_eq!(
            decode(r#"0{"token":"123"}"#),
            Ok(p(Kind::Connect, "/", None, r#"{"token":"123"}"#))
        );
        assert_eq!(decode("0/admin,"), Ok(p(Kind::Connect, "/admin", None, "")));
        assert_eq!(decode("0/admin"), Ok(p(Kind::Connect, "/admin", None, "")));
        assert_eq!(decode("1"), Ok(p(Kind::Disconnect, "/", None, "")));
        assert_eq!(
            decode(r#"2["foo"]"#),
            Ok(p(Kind::Event, "/", None, r#"["foo"]"#))
        );
        assert_eq!(
            decode(r#"2/admin,["bar"]"#),
            Ok(p(Kind::Event, "/admin", None, r#"["bar"]"#))
        );
        assert_eq!(
            decode(r#"212["foo",{"a":1}]"#),
            Ok(p(Kind::Event, "/", Some(12), r#"["foo",{"a":1}]"#))
        );
        assert_eq!(decode(r#"3/admin,13["bar"]"#).unwrap().ack, Some(13));
        assert_eq!(
            decode(r#"51-["baz",{"_placeholder":true,"num":0}]"#)
                .unwrap()
                .kind,
            Kind::BinaryEvent
        );
    }

    #[test]
    fn refuses_malformed_packets() {
        assert_eq!(decode(""), Err(DecodeError::Empty));
        assert_eq!(decode("9"), Err(DecodeError::UnknownType('9')));
        assert_eq!(decode("ü"), Err(DecodeError::UnknownType('ü')));
        assert_eq!(decode("2"), Err(DecodeError::Json), "event without data");
        assert_eq!(decode("2[\"a\""), Err(DecodeError::Json), "truncated JSON");
        assert_eq!(
            decode("2[]"),
            Err(DecodeError::Payload),
            "event without a name"
        );
        assert_eq!(
            decode("2[1]"),
            Err(DecodeError::Payload),
            "numeric event name"
        );
        assert_eq!(
            decode("2{}"),
            Err(DecodeError::Payload),
            "object, not array"
        );
        assert_eq!(
            decode("0[1]"),
            Err(DecodeError::Payload),
            "connect with an array"
        );
        assert_eq!(
            decode("1{}"),
            Err(DecodeError::Payload),
            "disconnect with data"
        );
        assert_eq!(
            decode("3{}"),
            Err(DecodeError::Payload),
            "ack without array"
        );
        assert_eq!(decode("5-[\"a\"]"), Err(DecodeError::Attachments));
        assert_eq!(decode("5x-[\"a\"]"), Err(DecodeError::Attachments));
        assert_eq!(decode("5[\"a\"]"), Err(DecodeError::Attachments));
        assert_eq!(
            decode("299999999999999999999999[\"a\"]"),
            Err(DecodeError::AckId)
        );
        assert_eq!(decode("2[\"a\"]trailing"), Err(DecodeError::Json));
    }

    #[test]
    fn splits_an_event_into_name_and_arguments() {
        assert_eq!(
            event(r#"["message",{"type":"echo"},2]"#),
            Ok(Event {
                name: "message".into(),
                args: vec![json!({"type":"echo"}), json!(2)]
            })
        );
        assert_eq!(
            event(r#"["schemas"]"#).map(|e| e.args.len()),
            Ok(0),
            "no arguments"
        );
        assert_eq!(event("[]"), Err(DecodeError::Payload));
        assert_eq!(event("[null]"), Err(DecodeError::Payload));
        assert_eq!(event("nope"), Err(DecodeError::Json));
    }

    #[test]
    fn encodes_server_packets() {
        assert_eq!(connect("ab12"), r#"0{"sid":"ab12"}"#);
        assert_eq!(
            connect_error("/admin", "Invalid namespace"),
            r#"4/admin,{"message":"Invalid namespace"}"#
        );
        assert_eq!(
            connect_error("/a,b", "Invalid namespace"),
            r#"4{"message":"Invalid namespace"}"#
        );
        assert_eq!(disconnect(), "1");
        assert_eq!(
            event_packet("message", &json!({"a": "\"q\""})),
            r#"2["message",{"a":"\"q\""}]"#
        );
        assert_eq!(ack(7, &json!({"ok": true})), r#"37[{"ok":true}]"#);
        // What the server writes, the decoder reads back.
        let e = event_packet("error", &json!("x"));
        assert_eq!(decode(&e).unwrap().kind, Kind::Event);
        assert_eq!(decode(&ack(3, &json!(1))).unwrap().ack, Some(3));
    }
}
