//! The frames every message produces (`message_sent`, `new_message`, `message_delivered`),
//! written straight into one buffer: the same JSON, field for field and in the same order,
//! as serde makes of their structs ([`frame`](crate::protocol::frame)).
//!
//! Why: serialising through serde escaped every key and every fixed value byte by byte,
//! formatted numbers through `fmt`, and grew the buffer several times; with three frames
//! per message that was the largest cost of the runtime thread under chat load. Here keys
//! are literal bytes and only text that comes from users is escaped.

use switchboard_store::{Message, Status, Timestamp};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Bytes of a frame without its user text (keys, numbers, times).
const FIXED: usize = 256;

/// One frame being written: `{"type":"<kind>","data":{` … `}}`.
pub(crate) struct FrameWriter {
    out: Vec<u8>,
    first: bool,
}

impl FrameWriter {
    /// `kind` and the keys are written as they are: ASCII without quotes or backslashes.
    pub(crate) fn new(kind: &str, text_bytes: usize) -> Self {
        let mut out = Vec::with_capacity(FIXED + text_bytes);
        out.extend_from_slice(br#"{"type":""#);
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(br#"","data":{"#);
        FrameWriter { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub(crate) fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    /// User text, escaped as serde_json escapes it.
    pub(crate) fn text(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, value);
        self
    }

    /// A value that needs no escaping (a status name, a time).
    fn plain(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        self.out.push(b'"');
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'"');
        self
    }

    pub(crate) fn status(&mut self, key: &str, status: Status) -> &mut Self {
        self.plain(key, status.as_str())
    }

    /// RFC 3339 needs no escaping (digits, `-`, `:`, `T`, `.`, `Z`, a sign).
    pub(crate) fn time(&mut self, key: &str, at: Timestamp) -> &mut Self {
        at.with_rfc3339(|text| self.plain(key, text))
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// `null` when absent (serde's `Option` without `skip_serializing_if`).
    pub(crate) fn opt_int(&mut self, key: &str, value: Option<i64>) -> &mut Self {
        match value {
            Some(v) => self.int(key, v),
            None => self.null(key),
        }
    }

    /// `null` when absent.
    pub(crate) fn opt_text(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.text(key, v),
            None => self.null(key),
        }
    }

    fn null(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.out.extend_from_slice(b"null");
        self
    }

    /// A stored message's fields as `Message`'s `Serialize` writes them (absent options
    /// left out).
    pub(crate) fn message(&mut self, m: &Message) -> &mut Self {
        self.int("id", m.id).int("senderId", m.sender_id);
        if let Some(r) = m.receiver_id {
            self.int("receiverId", r);
        }
        if let Some(r) = m.room_id {
            self.int("roomId", r);
        }
        self.text("content", &m.content)
            .text("messageType", &m.message_type);
        if let Some(c) = &m.client_msg_id {
            self.text("clientMsgId", c);
        }
        self.status("status", m.status)
            .time("createdAt", m.created_at);
        if let Some(t) = m.delivered_at {
            self.time("deliveredAt", t);
        }
        if let Some(t) = m.read_at {
            self.time("readAt", t);
        }
        self
    }

    pub(crate) fn finish(&mut self) -> Utf8Bytes {
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(b"}}");
        // Only whole UTF-8 strings and ASCII were written.
        match String::from_utf8(out) {
            Ok(s) => s.into(),
            Err(_) => r#"{"type":"error","data":{"message":"Server error"}}"#.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use super::*;
    use crate::protocol::frame;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Incoming<'a> {
        #[serde(flatten)]
        message: &'a Message,
        sender_username: &'a str,
    }

    /// Byte for byte what serde writes, for every optional field present and absent and
    /// for text that needs escaping.
    #[test]
    fn writes_what_serde_writes() {
        let full = Message {
            id: 9,
            sender_id: -3,
            receiver_id: Some(4),
            room_id: None,
            content: "h\u{e9} \"q\" \\ \n \u{1} </script>".into(),
            message_type: "text".into(),
            client_msg_id: Some("c-1".into()),
            status: Status::Delivered,
            created_at: Timestamp(1_763_866_800_123),
            delivered_at: Some(Timestamp(1_763_866_800_456)),
            read_at: Some(Timestamp(0)),
        };
        let bare = Message {
            receiver_id: None,
            room_id: Some(i64::MAX),
            client_msg_id: None,
            delivered_at: None,
            read_at: None,
            status: Status::Sent,
            created_at: Timestamp(i64::MAX),
            ..full.clone()
        };
        for m in [&full, &bare] {
            let serde = frame(
                "new_message",
                Incoming {
                    message: m,
                    sender_username: "al\"ice",
                },
            );
            let ours = FrameWriter::new("new_message", 0)
                .message(m)
                .text("senderUsername", "al\"ice")
                .finish();
            assert_eq!(ours, serde);
        }
        let serde = frame(
            "x",
            serde_json::json!({"a": null, "b": 5, "c": true, "d": "é"}),
        );
        let ours = FrameWriter::new("x", 0)
            .opt_int("a", None)
            .opt_int("b", Some(5))
            .bool("c", true)
            .opt_text("d", Some("é"))
            .finish();
        assert_eq!(ours, serde);
    }
}
