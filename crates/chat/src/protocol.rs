//! The `/ws` wire format: JSON frames `{"type": …, "data": {…}}` both ways, and the
//! validation of what clients send (shared with `POST /api/messages`).

use serde::Serialize;
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

#[derive(Serialize)]
struct Frame<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
}

/// One server frame, serialised once (shared by every connection it goes to).
pub(crate) fn frame(kind: &str, data: impl Serialize) -> Utf8Bytes {
    match serde_json::to_string(&Frame { kind, data }) {
        Ok(s) => s.into(),
        // Our own types always serialise; keep the connection usable regardless.
        Err(_) => r#"{"type":"error","data":{"message":"Server error"}}"#.into(),
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
            target: target(&data)
                .map_err(Refusal::new)?
                .ok_or_else(|| Refusal::new("Missing required fields: receiverId or roomId"))?,
            typing: kind == "typing_start",
        }),
        "mark_read" => {
            let sender = id_field(&data, "senderId").map_err(Refusal::new)?;
            let room = id_field(&data, "roomId").map_err(Refusal::new)?;
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
    let client_msg_id = match data.get("clientMsgId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_CLIENT_MSG_ID => Some(s.clone()),
        Some(_) => {
            return Err(Refusal::new(format!(
                "clientMsgId must be a non-empty string of at most {MAX_CLIENT_MSG_ID} bytes"
            )));
        }
    };
    let refuse = |message: String| Refusal {
        message,
        client_msg_id: client_msg_id.clone(),
    };
    let target = target(data).map_err(|m| refuse(m.into()))?;
    let content = match data.get("content") {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
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
    let message_type = match data.get("messageType") {
        None | Some(Value::Null) => "text".to_owned(),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_MESSAGE_TYPE => s.clone(),
        Some(_) => {
            return Err(refuse(format!(
                "messageType must be a non-empty string of at most {MAX_MESSAGE_TYPE} bytes"
            )));
        }
    };
    let sender_id = id_field(data, "senderId").map_err(|m| refuse(m.into()))?;
    Ok(SendRequest {
        target,
        content: content.clone(),
        message_type,
        client_msg_id,
        sender_id,
    })
}

/// `receiverId` or `roomId` (exactly one), if either is present.
fn target(data: &Map<String, Value>) -> Result<Option<Target>, &'static str> {
    match (id_field(data, "receiverId")?, id_field(data, "roomId")?) {
        (Some(u), None) => Ok(Some(Target::User(u))),
        (None, Some(r)) => Ok(Some(Target::Room(r))),
        (Some(_), Some(_)) => Err("Give either receiverId or roomId, not both"),
        (None, None) => Ok(None),
    }
}

/// An id field: a JSON integer or a string of one (`null` counts as absent).
fn id_field(data: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, &'static str> {
    let bad = match name {
        "receiverId" => "receiverId must be a user id (an integer)",
        "roomId" => "roomId must be a room id (an integer)",
        _ => "senderId must be a user id (an integer)",
    };
    match data.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(bad),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad),
        Some(_) => Err(bad),
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
