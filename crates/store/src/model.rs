//! The rows the store hands out, serialised as the chat API shows them (camelCase, times
//! in RFC 3339).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

/// Milliseconds since the Unix epoch; RFC 3339 (UTC, milliseconds) in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_millis(self.0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

/// A user as other users see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: i64,
    pub username: String,
    pub created_at: Timestamp,
    pub last_seen: Option<Timestamp>,
}

/// A user with their private fields, for login and `/api/auth/me`.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: User,
    pub email: Option<String>,
    pub password_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    pub id: i64,
    pub name: String,
    pub created_by: i64,
    pub created_at: Timestamp,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    User(i64),
    Room(i64),
}

/// Whose history to read: the messages between two users, or a room's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversation {
    Direct(i64, i64),
    Room(i64),
}

/// A direct message's delivery state, persisted and reported to its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Sent,
    Delivered,
    Read,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Delivered => "delivered",
            Status::Read => "read",
        }
    }

    pub(crate) fn parse(s: &str) -> Status {
        match s {
            "delivered" => Status::Delivered,
            "read" => Status::Read,
            _ => Status::Sent,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: i64,
    pub sender_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_id: Option<i64>,
    pub content: String,
    pub message_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<String>,
    pub status: Status,
    pub created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_at: Option<Timestamp>,
}

impl Message {
    pub fn target(&self) -> Target {
        match (self.receiver_id, self.room_id) {
            (_, Some(room)) => Target::Room(room),
            (Some(user), None) => Target::User(user),
            (None, None) => Target::User(self.sender_id), // excluded by the schema
        }
    }
}

/// A message to persist.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub sender: i64,
    pub target: Target,
    pub content: &'a str,
    pub message_type: &'a str,
    pub client_msg_id: Option<&'a str>,
    pub at: Timestamp,
}

/// The result of [`MessageStore::insert_message`](crate::MessageStore::insert_message).
#[derive(Debug, Clone)]
pub struct Inserted {
    pub message: Message,
    /// The sender had already sent this `client_msg_id`: `message` is the stored original.
    pub duplicate: bool,
}
