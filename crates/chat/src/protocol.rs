//! The `/ws` wire format: JSON frames `{"type": …, "data": {…}}` both ways, and the
//! validation of what clients send (shared with `POST /api/messages`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use switchboard_store::{Target, Timestamp};
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub(crate) const INVALID_JSON: &str = "Invalid message format. Please send valid JSON.";
pub(crate) const MISSING_FIELDS: &str = "Missing required fields: receiverId and content";
pub(crate) const TO_YOURSELF: &str = "Cannot send message to yourself";
pub(crate) const NOT_MEMBER: &str = "You are not a member of this room";
pub(crate) const FORGED_SENDER: &str = "senderId does not match the authenticated user";
const MAX_CLIENT_MSG_ID: usize = 128;
const MAX_MESSAGE_TYPE: usize = 32;

/// Initial buffer of a serialised frame (bytes).
const FRAME_CAPACITY: usize = 512;

#[derive(Serialize)]
struct Frame<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
}

/// One server frame, serialised once (shared by every connection it goes to).
pub(crate) fn frame(kind: &str, data: impl Serialize) -> Utf8Bytes {
    // Room for a typical chat frame up front: growing from serde_json's 128 bytes took
    // two or three reallocations per `new_message`.
    let mut out = Vec::with_capacity(FRAME_CAPACITY);
    match serde_json::to_writer(&mut out, &Frame { kind, data }).map(|()| String::from_utf8(out)) {
        Ok(Ok(s)) => s.into(),
        // Our own types always serialise; keep the connection usable regardless.
        _ => r#"{"type":"error","data":{"message":"Server error"}}"#.into(),
    }
}

/// `error {message, timestamp}`, with the request's `clientMsgId` when it had one so a
/// client can tell which send failed.
pub(crate) fn error_frame(message: &str, client_msg_id: Option<&str>) -> Utf8Bytes {
    let mut data = serde_json::json!({
        "message": message,
        "timestamp": Timestamp::now(),
    });
    if let Some(id) = client_msg_id {
        data["clientMsgId"] = Value::String(id.to_owned());
    }
    frame("error", data)
}

/// What a client asks for over `/ws`.
#[derive(Debug, PartialEq)]
pub(crate) enum Request {
    ChatMessage(SendRequest),
    Typing { target: Target, typing: bool },
    MarkRead(ReadScope),
    GetOnlineUsers,
}

#[derive(Debug, PartialEq)]
pub(crate) enum ReadScope {
    From(i64),
    Room(i64),
}

/// A message to send, validated except for what needs the store (membership, existence).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SendRequest {
    pub target: Target,
    pub content: String,
    pub message_type: String,
    pub client_msg_id: Option<String>,
    /// Set when the client named a sender; it must be the authenticated user.
    pub sender_id: Option<i64>,
}

/// A refused request: the error text and, for sends, the request's `clientMsgId`.
#[derive(Debug, PartialEq)]
pub(crate) struct Refusal {
    pub message: String,
    pub client_msg_id: Option<String>,
}

impl Refusal {
    fn new(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            client_msg_id: None,
        }
    }
}

/// Parse one text frame.
pub(crate) fn parse(text: &str, max_content: usize) -> Result<Request, Refusal> {
    // The frame nearly every client sends, read without building a `Value` tree; anything
    // else (or anything odd about it) goes the general way below, which has every error.
    if let Ok(frame) = serde_json::from_str::<FastFrame>(text)
        && frame.kind.as_deref() == Some("chat_message")
    {
        return send_fields(&frame.data, max_content).map(Request::ChatMessage);
    }
    parse_value(text, max_content)
}

/// [`parse`] through a `serde_json::Value`: every frame type and every error.
fn parse_value(text: &str, max_content: usize) -> Result<Request, Refusal> {
    let value: Value = serde_json::from_str(text).map_err(|_| Refusal::new(INVALID_JSON))?;
    let Value::Object(mut frame) = value else {
        return Err(Refusal::new(INVALID_JSON));
    };
    let kind = match frame.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(Refusal::new(format!("Unknown message type: {other}"))),
        None => return Err(Refusal::new(INVALID_JSON)),
    };
    let data = match frame.remove("data") {
        Some(Value::Object(map)) => map,
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(Refusal::new("data must be an object")),
    };
    match kind.as_str() {
        "chat_message" => send_request(&data, max_content).map(Request::ChatMessage),
        "typing_start" | "typing_stop" => Ok(Request::Typing {
            target: target(
                &Field::of(data.get("receiverId")),
                &Field::of(data.get("roomId")),
            )
            .map_err(Refusal::new)?
            .ok_or_else(|| Refusal::new("Missing required fields: receiverId or roomId"))?,
            typing: kind == "typing_start",
        }),
        "mark_read" => {
            let sender = id_of(&data, "senderId").map_err(Refusal::new)?;
            let room = id_of(&data, "roomId").map_err(Refusal::new)?;
            match (sender, room) {
                (Some(s), None) => Ok(Request::MarkRead(ReadScope::From(s))),
                (None, Some(r)) => Ok(Request::MarkRead(ReadScope::Room(r))),
                (Some(_), Some(_)) => Err(Refusal::new("Give either senderId or roomId, not both")),
                (None, None) => Err(Refusal::new("Missing required fields: senderId or roomId")),
            }
        }
        "get_online_users" => Ok(Request::GetOnlineUsers),
        other => Err(Refusal::new(format!("Unknown message type: {other}"))),
    }
}

/// Validate a `chat_message` payload (also the body of `POST /api/messages`).
pub(crate) fn send_request(
    data: &Map<String, Value>,
    max_content: usize,
) -> Result<SendRequest, Refusal> {
    let field = |name| Field::of(data.get(name));
    let fields = SendFields {
        receiver_id: field("receiverId"),
        room_id: field("roomId"),
        sender_id: field("senderId"),
        content: field("content"),
        message_type: field("messageType"),
        client_msg_id: field("clientMsgId"),
    };
    send_fields(&fields, max_content)
}

/// Validate a `chat_message` payload's fields, however they were read.
fn send_fields(data: &SendFields<'_>, max_content: usize) -> Result<SendRequest, Refusal> {
    let client_msg_id = match &data.client_msg_id {
        Field::Absent => None,
        Field::Str(s) if !s.is_empty() && s.len() <= MAX_CLIENT_MSG_ID => Some(s.to_string()),
        _ => {
            return Err(Refusal::new(format!(
                "clientMsgId must be a non-empty string of at most {MAX_CLIENT_MSG_ID} bytes"
            )));
        }
    };
    let refuse = |message: String| Refusal {
        message,
        client_msg_id: client_msg_id.clone(),
    };
    let target = target(&data.receiver_id, &data.room_id).map_err(|m| refuse(m.into()))?;
    let content = match &data.content {
        Field::Str(s) if !s.trim().is_empty() => s,
        _ => None.ok_or_else(|| refuse(MISSING_FIELDS.into()))?,
    };
    let Some(target) = target else {
        return Err(refuse(MISSING_FIELDS.into()));
    };
    if content.len() > max_content {
        return Err(refuse(format!(
            "Message content is too long: at most {max_content} bytes"
        )));
    }
    let message_type = match &data.message_type {
        Field::Absent => "text".to_owned(),
        Field::Str(s) if !s.is_empty() && s.len() <= MAX_MESSAGE_TYPE => s.to_string(),
        _ => {
            return Err(refuse(format!(
                "messageType must be a non-empty string of at most {MAX_MESSAGE_TYPE} bytes"
            )));
        }
    };
    let sender_id = id_field(&data.sender_id, "senderId").map_err(|m| refuse(m.into()))?;
    Ok(SendRequest {
        target,
        content: content.to_string(),
        message_type,
        client_msg_id,
        sender_id,
    })
}

/// `receiverId` or `roomId` (exactly one), if either is present.
fn target(receiver: &Field<'_>, room: &Field<'_>) -> Result<Option<Target>, &'static str> {
    match (id_field(receiver, "receiverId")?, id_field(room, "roomId")?) {
        (Some(u), None) => Ok(Some(Target::User(u))),
        (None, Some(r)) => Ok(Some(Target::Room(r))),
        (Some(_), Some(_)) => Err("Give either receiverId or roomId, not both"),
        (None, None) => Ok(None),
    }
}

/// An id field of the general path's `data` map.
fn id_of(data: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, &'static str> {
    id_field(&Field::of(data.get(name)), name)
}

/// An id field: a JSON integer or a string of one (`null` counts as absent).
fn id_field(field: &Field<'_>, name: &'static str) -> Result<Option<i64>, &'static str> {
    let bad = match name {
        "receiverId" => "receiverId must be a user id (an integer)",
        "roomId" => "roomId must be a room id (an integer)",
        _ => "senderId must be a user id (an integer)",
    };
    match field {
        Field::Absent => Ok(None),
        Field::Int(n) => Ok(Some(*n)),
        Field::Str(s) => s.trim().parse().map(Some).map_err(|_| bad),
        Field::Other => Err(bad),
    }
}

/// A payload field as validation sees it: what the general path reads from a `Value`, or
/// the fast path straight from the text.
#[derive(Debug, Default)]
enum Field<'a> {
    /// Missing or `null`.
    #[default]
    Absent,
    Str(Cow<'a, str>),
    /// A JSON integer that fits an `i64`.
    Int(i64),
    /// Anything else (a fraction, a boolean, an array, an object, a huge integer).
    Other,
}

impl<'a> Field<'a> {
    fn of(value: Option<&'a Value>) -> Self {
        match value {
            None | Some(Value::Null) => Field::Absent,
            Some(Value::String(s)) => Field::Str(Cow::Borrowed(s)),
            Some(Value::Number(n)) => n.as_i64().map_or(Field::Other, Field::Int),
            Some(_) => Field::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Absent)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Ok(Field::Int(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(n).map_or(Field::Other, Field::Int))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(s.to_owned())))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A `chat_message` payload's fields, read by the fast path.
#[derive(Debug, Default)]
struct SendFields<'a> {
    receiver_id: Field<'a>,
    room_id: Field<'a>,
    sender_id: Field<'a>,
    content: Field<'a>,
    message_type: Field<'a>,
    client_msg_id: Field<'a>,
}

/// A frame on the fast path: `{"type": …, "data": {…}}` with `data` an object. Read like
/// the general path reads a map: other keys ignored, a repeated key's last value wins.
#[derive(Default)]
struct FastFrame<'a> {
    kind: Option<Cow<'a, str>>,
    data: SendFields<'a>,
}

/// A key of interest, matched without allocating (escaped keys are rare and still match).
enum Key {
    Type,
    Data,
    ReceiverId,
    RoomId,
    SenderId,
    Content,
    MessageType,
    ClientMsgId,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl Visitor<'_> for Visit {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "type" => Key::Type,
                    "data" => Key::Data,
                    "receiverId" => Key::ReceiverId,
                    "roomId" => Key::RoomId,
                    "senderId" => Key::SenderId,
                    "content" => Key::Content,
                    "messageType" => Key::MessageType,
                    "clientMsgId" => Key::ClientMsgId,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(Visit)
    }
}

impl<'de> Deserialize<'de> for SendFields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = SendFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = SendFields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::ReceiverId => &mut fields.receiver_id,
                        Key::RoomId => &mut fields.room_id,
                        Key::SenderId => &mut fields.sender_id,
                        Key::Content => &mut fields.content,
                        Key::MessageType => &mut fields.message_type,
                        Key::ClientMsgId => &mut fields.client_msg_id,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value()?;
                }
                Ok(fields)
            }
        }
        // A map only: the general path refuses `data` that is not an object.
        d.deserialize_map(Visit)
    }
}

impl<'de> Deserialize<'de> for FastFrame<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = FastFrame<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a frame object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut frame = FastFrame::default();
                let mut has_data = false;
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Type => {
                            frame.kind = match map.next_value::<Field<'de>>()? {
                                Field::Str(s) => Some(s),
                                _ => None,
                            }
                        }
                        Key::Data => {
                            frame.data = map.next_value()?;
                            has_data = true;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                if !has_data {
                    // No payload: the general path answers it.
                    frame.kind = None;
                }
                Ok(frame)
            }
        }
        d.deserialize_map(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, 10).unwrap_err().message
    }

    #[test]
    fn parses_each_request() {
        let r = parse(
            r#"{"type":"chat_message","data":{"receiverId":"7","content":"hi","clientMsgId":"c"}}"#,
            10,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::ChatMessage(SendRequest {
                target: Target::User(7),
                content: "hi".into(),
                message_type: "text".into(),
                client_msg_id: Some("c".into()),
                sender_id: None,
            })
        );
        assert_eq!(
            parse(r#"{"type":"typing_stop","data":{"roomId":3}}"#, 10).unwrap(),
            Request::Typing {
                target: Target::Room(3),
                typing: false
            }
        );
        assert_eq!(
            parse(r#"{"type":"mark_read","data":{"senderId":3}}"#, 10).unwrap(),
            Request::MarkRead(ReadScope::From(3))
        );
        assert_eq!(
            parse(r#"{"type":"get_online_users"}"#, 10).unwrap(),
            Request::GetOnlineUsers
        );
    }

    /// The fast path answers exactly what the general one does, including the errors.
    #[test]
    fn the_fast_path_agrees_with_the_general_one() {
        let frames = [
            r#"{"type":"chat_message","data":{"receiverId":7,"content":"hi","clientMsgId":"c"}}"#,
            r#"{"data":{"roomId":"3","content":"h\u00e9 \"q\"","messageType":"note"},"type":"chat_message"}"#,
            r#"{"type":"chat_message","data":{"receiverId":7,"content":"x","senderId":7,"extra":[1,{"a":2}]}}"#,
            r#"{"type":"chat_message","data":{"receiverId":7,"receiverId":null,"content":"x"}}"#,
            r#"{"type":"chat_message","data":{"receiverId":7.5,"content":"x","clientMsgId":"k"}}"#,
            r#"{"type":"chat_message","data":{"receiverId":9223372036854775808,"content":"x"}}"#,
            r#"{"type":"chat_message","data":{"receiverId":true,"content":"x"}}"#,
            r#"{"type":"chat_message","data":{"receiverId":1,"content":5}}"#,
            r#"{"type":"chat_message","data":{"receiverId":1,"content":"x","clientMsgId":""}}"#,
            r#"{"type":"chat_message","data":{"receiverId":1,"content":"x","clientMsgId":3}}"#,
            r#"{"type":"chat_message","data":{"receiverId":1,"content":"x","messageType":[]}}"#,
            r#"{"type":"chat_message","data":{"receiverId":1,"content":"x","senderId":"z"}}"#,
            r#"{"type":"chat_message","data":{"receiverId":1,"roomId":2,"content":"x"}}"#,
            r#"{"type":"chat_message","data":{"receiverId":1,"content":"12345678901"}}"#,
            r#"{"type":"chat_message","data":[1,"x"]}"#,
            r#"{"type":"chat_message","data":null}"#,
            r#"{"type":"chat_message"}"#,
            r#"{"type":"chat_message","data":{}}"#,
            r#"{"type":"chat_message","type":5,"data":{"receiverId":1,"content":"x"}}"#,
            r#"{"type":5,"type":"chat_message","data":{"receiverId":1,"content":"x"}}"#,
            r#"{"type":"chat_message","data":{"receiverId":1,"content":"x"}} trailing"#,
            r#"{"type":"typing_start","data":{"receiverId":1}}"#,
        ];
        for text in frames {
            assert_eq!(parse(text, 10), parse_value(text, 10), "{text}");
        }
        let fast = serde_json::from_str::<FastFrame>(frames[1]).expect("fast path");
        assert_eq!(fast.kind.as_deref(), Some("chat_message"));
    }

    #[test]
    fn refuses_bad_frames_with_the_seed_strings() {
        assert_eq!(err("{nope"), INVALID_JSON);
        assert_eq!(err("[1]"), INVALID_JSON);
        assert_eq!(err(r#"{"type":"dance"}"#), "Unknown message type: dance");
        assert_eq!(
            err(r#"{"type":"chat_message","data":{"content":"x"}}"#),
            MISSING_FIELDS
        );
        assert_eq!(
            err(r#"{"type":"chat_message","data":{"receiverId":1}}"#),
            MISSING_FIELDS
        );
        assert_eq!(
            err(r#"{"type":"chat_message","data":{"receiverId":1,"content":"  "}}"#),
            MISSING_FIELDS
        );
        assert_eq!(
            err(r#"{"type":"chat_message","data":{"receiverId":1,"content":"12345678901"}}"#),
            "Message content is too long: at most 10 bytes"
        );
        assert_eq!(
            err(r#"{"type":"chat_message","data":{"receiverId":"x","content":"a"}}"#),
            "receiverId must be a user id (an integer)"
        );
        let refusal = parse(
            r#"{"type":"chat_message","data":{"receiverId":1,"roomId":2,"content":"a","clientMsgId":"k"}}"#,
            10,
        )
        .unwrap_err();
        assert_eq!(
            refusal.client_msg_id.as_deref(),
            Some("k"),
            "errors name the send"
        );
    }
}
