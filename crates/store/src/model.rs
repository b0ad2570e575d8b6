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
        self.with_rfc3339(|text| s.serialize_str(text))
    }
}

impl Timestamp {
    /// `f` of [`Timestamp::to_rfc3339`]'s text, written without chrono or an allocation for
    /// the years 0 to 9999 (chrono's outside them). Every chat frame carries one or two
    /// times, and chrono's general formatter cost more than the rest of a `message_sent`
    /// frame.
    pub fn with_rfc3339<R>(self, f: impl FnOnce(&str) -> R) -> R {
        let mut buf = [0; 24];
        match self.rfc3339_into(&mut buf) {
            Some(text) => f(text),
            None => f(&self.to_rfc3339()),
        }
    }

    /// The fast path of [`Timestamp::with_rfc3339`] (`None` outside the years 0 to 9999).
    fn rfc3339_into(self, buf: &mut [u8; 24]) -> Option<&str> {
        let days = self.0.div_euclid(86_400_000);
        let ms_of_day = self.0.rem_euclid(86_400_000);
        // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let (secs, ms) = (ms_of_day / 1000, ms_of_day % 1000);
        let fields = [
            (0, 4, year),
            (5, 2, month),
            (8, 2, day),
            (11, 2, secs / 3600),
            (14, 2, secs / 60 % 60),
            (17, 2, secs % 60),
            (20, 3, ms),
        ];
        for (at, width, mut value) in fields {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        for (at, sep) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
        ] {
            buf[at] = sep;
        }
        buf[23] = b'Z';
        std::str::from_utf8(buf).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn fast_rfc3339_matches_chrono() {
        let mut buf = [0; 24];
        let mut ms: i64 = -62_167_219_200_000; // 0000-01-01
        let samples = [
            0,
            1,
            999,
            86_399_999,
            951_782_400_000, // 2000-02-29
            1_763_866_800_123,
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            -1,
        ];
        for t in samples.into_iter().chain(std::iter::from_fn(|| {
            ms += 7_777_777_777;
            (ms < 253_402_300_799_999).then_some(ms)
        })) {
            let t = Timestamp(t);
            assert_eq!(
                t.rfc3339_into(&mut buf),
                Some(t.to_rfc3339().as_str()),
                "{t:?}"
            );
        }
        assert_eq!(Timestamp(253_402_300_800_000).rfc3339_into(&mut buf), None);
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
