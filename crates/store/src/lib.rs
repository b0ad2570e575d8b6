//! Switchboard's chat storage: users, rooms, memberships, messages, receipts and history
//! behind one narrow trait, [`MessageStore`], so the embedded SQLite backend
//! ([`SqliteStore`], the default) and the PostgreSQL one ([`PgStore`], shared by several
//! nodes) are interchangeable by configuration: [`open`] picks one from the URL.
//!
//! Ids are 64-bit integers handed out by the store; times are [`Timestamp`]s (milliseconds
//! since the Unix epoch, RFC 3339 on the wire). The [`suite`] module (feature `suite`) is the
//! behaviour every backend must show; each backend's tests run it.

mod backlog;
mod client_ids;
mod error;
mod history;
mod migrations;
mod model;
mod postgres;
mod redo;
mod rows;
mod sqlite;
mod sqlite_writer;
#[cfg(feature = "suite")]
pub mod suite;
mod sweep;
#[cfg(feature = "suite")]
pub mod test_postgres;
mod unwritten;
mod wal_batch;

use std::sync::Arc;

use async_trait::async_trait;

pub use error::StoreError;
pub use model::{
    Account, Conversation, Inserted, Message, NewMessage, Room, Status, Target, Timestamp, User,
};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Open the store `url` names: PostgreSQL for `postgres://` and `postgresql://`, SQLite
/// (`sqlite://PATH?mode=rwc`, created if missing) otherwise.
pub async fn open(url: &str) -> Result<Arc<dyn MessageStore>, StoreError> {
    if is_postgres(url) {
        Ok(Arc::new(PgStore::open(url).await?))
    } else {
        Ok(Arc::new(SqliteStore::open(url).await?))
    }
}

/// `url` fit for logs and error messages: a password in it is replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    match authority
        .rfind('@')
        .map(|at| (at, authority[..at].split_once(':')))
    {
        Some((at, Some((user, _password)))) => format!("{scheme}://{user}:***{}", &rest[at..]),
        _ => url.to_owned(),
    }
}

fn is_postgres(url: &str) -> bool {
    ["postgres://", "postgresql://"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
    })
}

/// Everything the chat service persists. Every method is one atomic change or read.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Short backend name for banners and logs ("sqlite", "postgres").
    fn name(&self) -> &'static str;
    /// A clean stop: finish the writes under way and close every connection, so that the
    /// database needs no recovery at the next start (for SQLite, the database file alone
    /// then holds everything). Later calls fail.
    async fn close(&self);

    // Accounts.

    /// Create an account. Usernames are unique regardless of case: a taken one is
    /// [`StoreError::Conflict`].
    async fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<User, StoreError>;
    /// The account (with its password hash) of `username`, matched regardless of case.
    async fn account_by_name(&self, username: &str) -> Result<Option<Account>, StoreError>;
    async fn account(&self, id: i64) -> Result<Option<Account>, StoreError>;
    async fn user(&self, id: i64) -> Result<Option<User>, StoreError>;
    /// Users by username, those whose name contains `search` (any case) when given.
    async fn users(&self, search: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError>;
    /// Record when the user was last connected.
    async fn set_last_seen(&self, user: i64, at: Timestamp) -> Result<(), StoreError>;

    // Rooms.

    /// Create a room; its creator is its first member.
    async fn create_room(&self, name: &str, owner: i64, at: Timestamp) -> Result<Room, StoreError>;
    async fn room(&self, id: i64) -> Result<Option<Room>, StoreError>;
    /// Rooms by id; only those `member` belongs to when given.
    async fn rooms(&self, member: Option<i64>, limit: u32) -> Result<Vec<Room>, StoreError>;
    /// Add a member; `false` if already one. An unknown room is [`StoreError::NotFound`].
    async fn join_room(&self, room: i64, user: i64, at: Timestamp) -> Result<bool, StoreError>;
    /// Remove a member; `false` if not one.
    async fn leave_room(&self, room: i64, user: i64) -> Result<bool, StoreError>;
    async fn is_member(&self, room: i64, user: i64) -> Result<bool, StoreError>;
    /// Member user ids, ascending.
    async fn room_members(&self, room: i64) -> Result<Vec<i64>, StoreError>;

    // Messages.

    /// Persist a message. A second one from the same sender with the same `client_msg_id`
    /// is not stored again: the first is returned with `duplicate: true`.
    async fn insert_message(&self, new: NewMessage<'_>) -> Result<Inserted, StoreError>;
    /// Persist several messages, in order, each as [`MessageStore::insert_message`] would;
    /// one outcome per message. A backend may commit them together (the SQLite writer
    /// does: one hand-off for a connection's burst instead of one per message).
    async fn insert_messages(&self, new: Vec<NewMessage<'_>>) -> Vec<Result<Inserted, StoreError>> {
        let mut done = Vec::with_capacity(new.len());
        for m in new {
            done.push(self.insert_message(m).await);
        }
        done
    }
    async fn message(&self, id: i64) -> Result<Option<Message>, StoreError>;
    /// Mark direct messages delivered (only those still `sent`); returns the ids changed.
    async fn mark_delivered(&self, ids: &[i64], at: Timestamp) -> Result<Vec<i64>, StoreError>;
    /// Direct messages to `receiver` not yet delivered, oldest first.
    async fn undelivered(&self, receiver: i64, limit: u32) -> Result<Vec<Message>, StoreError>;
    /// The id of the newest message committed (0 if there is none).
    async fn newest_message_id(&self) -> Result<i64, StoreError>;
    /// Mark every unread direct message from `sender` to `reader` read; returns their ids,
    /// ascending. A store that marks in steps and fails after the first returns
    /// [`StoreError::ReadCutShort`] with the ids it did mark.
    async fn mark_read(
        &self,
        reader: i64,
        sender: i64,
        at: Timestamp,
    ) -> Result<Vec<i64>, StoreError>;
    /// Move `user`'s read marker in `room` to the newest message; returns it (0: the room
    /// has none), or `None` if `user` is not a member.
    async fn mark_room_read(&self, room: i64, user: i64) -> Result<Option<i64>, StoreError>;
    /// One page of a conversation, newest first, strictly older than `before` when given.
    async fn history(
        &self,
        conversation: Conversation,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_scheme_picks_the_backend() {
        assert!(is_postgres("postgres://u@127.0.0.1/db"));
        assert!(is_postgres("postgresql://u@127.0.0.1:5433/db"));
        assert!(is_postgres("PostgreSQL://u@host/db"));
        assert!(!is_postgres("sqlite://switchboard.db?mode=rwc"));
        assert!(!is_postgres("sqlite:postgres://.db"));
        assert!(!is_postgres("postgres"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted_url("postgres://sb:s3cr:et@db.lan:5432/chat?sslmode=disable"),
            "postgres://sb:***@db.lan:5432/chat?sslmode=disable"
        );
        assert_eq!(
            redacted_url("postgres://sb@db.lan/chat"),
            "postgres://sb@db.lan/chat"
        );
        assert_eq!(
            redacted_url("sqlite://switchboard.db?mode=rwc"),
            "sqlite://switchboard.db?mode=rwc"
        );
    }

    #[tokio::test]
    async fn open_picks_sqlite_by_default() {
        let dir = std::env::temp_dir().join(format!("sb-store-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("open.db").display());
        let store = open(&url).await.unwrap();
        assert_eq!(store.name(), "sqlite");
        drop(store);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
