//! The shared [`MessageStore`]: one PostgreSQL database that several Switchboard nodes can
//! use at once, schema migrations compiled into the binary.
//!
//! Concurrency is PostgreSQL's: unique indexes decide who wins a username or a
//! `clientMsgId` (a racing insert waits for the other transaction, then yields), and the
//! migrator holds an advisory lock so nodes starting together migrate once.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Row};

use crate::migrations::{self, migrator};
use crate::rows::{
    account_from, is_foreign_key_violation, is_unique_violation, like_pattern, message_columns,
    message_from, room_from, sorted_ids, user_from,
};
use crate::{
    Account, Conversation, Inserted, Message, MessageStore, NewMessage, Room, StoreError, Target,
    Timestamp, User,
};

/// Connections per node. Every method is one statement or one short transaction, so a
/// few connections serve many chat connections; PostgreSQL's default limit is 100 for all
/// nodes together.
const MAX_CONNECTIONS: u32 = 16;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connect to the database at `url` (`postgres://user:password@host:port/db`; the
    /// database must exist) and bring its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        // One plain connection first: a pool retries until its timeout and then reports
        // only that, where this says why ("connection refused", "password authentication
        // failed"). It runs the migrations, then the pool opens connections as needed.
        let mut first = PgConnection::connect_with(&options).await?;
        migrator(migrations::POSTGRES).run(&mut first).await?;
        first.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // A database that stops answering is an error the chat reports, not a hang.
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        Ok(PgStore { pool })
    }
}

#[async_trait]
impl MessageStore for PgStore {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<User, StoreError> {
        let row = sqlx::query(
            "INSERT INTO users (username, email, password_hash, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id, username, created_at, last_seen",
        )
        .bind(username)
        .bind(email)
        .bind(password_hash)
        .bind(at.0)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict("username")
            } else {
                e.into()
            }
        })?;
        Ok(user_from(&row)?)
    }

    async fn account_by_name(&self, username: &str) -> Result<Option<Account>, StoreError> {
        // The expression of the users_username_nocase index, so the lookup uses it.
        let row = sqlx::query(
            "SELECT * FROM users WHERE lower(username COLLATE \"C\") = lower($1 COLLATE \"C\")",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(account_from).transpose()?)
    }

    async fn account(&self, id: i64) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(account_from).transpose()?)
    }

    async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        let row =
            sqlx::query("SELECT id, username, created_at, last_seen FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(user_from).transpose()?)
    }

    async fn users(&self, search: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError> {
        // Ordered and matched with ASCII case folding, as SQLite's NOCASE column does.
        let rows = match search {
            Some(s) => {
                sqlx::query(
                    "SELECT id, username, created_at, last_seen FROM users \
                     WHERE lower(username COLLATE \"C\") LIKE lower($1 COLLATE \"C\") ESCAPE '\\' \
                     ORDER BY lower(username COLLATE \"C\") LIMIT $2",
                )
                .bind(like_pattern(s))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, username, created_at, last_seen FROM users \
                     ORDER BY lower(username COLLATE \"C\") LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.iter().map(user_from).collect::<Result<_, _>>()?)
    }

    async fn set_last_seen(&self, user: i64, at: Timestamp) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET last_seen = $1 WHERE id = $2")
            .bind(at.0)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_room(&self, name: &str, owner: i64, at: Timestamp) -> Result<Room, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO rooms (name, created_by, created_at) VALUES ($1, $2, $3) RETURNING *",
        )
        .bind(name)
        .bind(owner)
        .bind(at.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound("user")
            } else {
                e.into()
            }
        })?;
        let room = room_from(&row)?;
        sqlx::query("INSERT INTO room_members (room_id, user_id, joined_at) VALUES ($1, $2, $3)")
            .bind(room.id)
            .bind(owner)
            .bind(at.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(room)
    }

    async fn room(&self, id: i64) -> Result<Option<Room>, StoreError> {
        let row = sqlx::query("SELECT * FROM rooms WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(room_from).transpose()?)
    }

    async fn rooms(&self, member: Option<i64>, limit: u32) -> Result<Vec<Room>, StoreError> {
        let rows = match member {
            Some(user) => {
                sqlx::query(
                    "SELECT r.* FROM rooms r JOIN room_members m ON m.room_id = r.id \
                     WHERE m.user_id = $1 ORDER BY r.id LIMIT $2",
                )
                .bind(user)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query("SELECT * FROM rooms ORDER BY id LIMIT $1")
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows.iter().map(room_from).collect::<Result<_, _>>()?)
    }

    async fn join_room(&self, room: i64, user: i64, at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO room_members (room_id, user_id, joined_at) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )
        .bind(room)
        .bind(user)
        .bind(at.0)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound("room")
            } else {
                e.into()
            }
        })?;
        Ok(done.rows_affected() == 1)
    }

    async fn leave_room(&self, room: i64, user: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn is_member(&self, room: i64, user: i64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM room_members WHERE room_id = $1 AND user_id = $2")
            .bind(room)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn room_members(&self, room: i64) -> Result<Vec<i64>, StoreError> {
        // One array instead of a row per member: every room message reads its members, and
        // decoding 500 rows cost more than the query (NULL when the room has none).
        let members: Option<Vec<i64>> = sqlx::query_scalar(
            "SELECT array_agg(user_id ORDER BY user_id) FROM room_members WHERE room_id = $1",
        )
        .bind(room)
        .fetch_one(&self.pool)
        .await?;
        Ok(members.unwrap_or_default())
    }

    async fn insert_message(&self, new: NewMessage<'_>) -> Result<Inserted, StoreError> {
        let (receiver, room) = match new.target {
            Target::User(u) => (Some(u), None),
            Target::Room(r) => (None, Some(r)),
        };
        // ON CONFLICT instead of catching the unique violation: a racing duplicate waits
        // for the first insert to commit, then inserts nothing, and the server log stays
        // free of constraint errors that are part of normal operation.
        let sql = concat!(
            "INSERT INTO messages (sender_id, receiver_id, room_id, content, message_type, \
             client_msg_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL DO NOTHING \
             RETURNING ",
            message_columns!()
        );
        let inserted = sqlx::query(sql)
            .bind(new.sender)
            .bind(receiver)
            .bind(room)
            .bind(new.content)
            .bind(new.message_type)
            .bind(new.client_msg_id)
            .bind(new.at.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound(match new.target {
                        Target::User(_) => "user",
                        Target::Room(_) => "room",
                    })
                } else {
                    e.into()
                }
            })?;
        if let Some(row) = inserted {
            return Ok(Inserted {
                message: message_from(&row)?,
                duplicate: false,
            });
        }
        // Nothing inserted: only a conflict on (sender, clientMsgId) does that, and the
        // row it conflicted with is committed (messages are never deleted one by one).
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE sender_id = $1 AND client_msg_id = $2"
        );
        let row = sqlx::query(sql)
            .bind(new.sender)
            .bind(new.client_msg_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(Inserted {
            message: message_from(&row)?,
            duplicate: true,
        })
    }

    async fn message(&self, id: i64) -> Result<Option<Message>, StoreError> {
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE id = $1"
        );
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(message_from).transpose()?)
    }

    async fn mark_delivered(&self, ids: &[i64], at: Timestamp) -> Result<Vec<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "UPDATE messages SET status = 'delivered', delivered_at = $1 \
             WHERE status = 'sent' AND receiver_id IS NOT NULL AND id = ANY($2) RETURNING id",
        )
        .bind(at.0)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(sorted_ids(&rows)?)
    }

    async fn undelivered(&self, receiver: i64, limit: u32) -> Result<Vec<Message>, StoreError> {
        let sql = concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE receiver_id = $1 AND status = 'sent' \
             ORDER BY id LIMIT $2"
        );
        let rows = sqlx::query(sql)
            .bind(receiver)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(message_from).collect::<Result<_, _>>()?)
    }

    async fn newest_message_id(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS id FROM messages")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    async fn mark_read(
        &self,
        reader: i64,
        sender: i64,
        at: Timestamp,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "UPDATE messages SET status = 'read', read_at = $1, \
             delivered_at = COALESCE(delivered_at, $1) \
             WHERE receiver_id = $2 AND sender_id = $3 AND status <> 'read' RETURNING id",
        )
        .bind(at.0)
        .bind(reader)
        .bind(sender)
        .fetch_all(&self.pool)
        .await?;
        Ok(sorted_ids(&rows)?)
    }

    async fn mark_room_read(&self, room: i64, user: i64) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "UPDATE room_members SET last_read_id = \
             (SELECT COALESCE(MAX(id), 0) FROM messages WHERE room_id = $1) \
             WHERE room_id = $1 AND user_id = $2 RETURNING last_read_id",
        )
        .bind(room)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("last_read_id")).transpose()?)
    }

    async fn history(
        &self,
        conversation: Conversation,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let before = before.unwrap_or(i64::MAX);
        let rows = match conversation {
            Conversation::Direct(a, b) => {
                let sql = concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages \
                     WHERE ((receiver_id = $1 AND sender_id = $2) OR (receiver_id = $2 AND sender_id = $1)) \
                     AND id < $3 ORDER BY id DESC LIMIT $4"
                );
                sqlx::query(sql)
                    .bind(a)
                    .bind(b)
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            Conversation::Room(room) => {
                let sql = concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE room_id = $1 AND id < $2 \
                     ORDER BY id DESC LIMIT $3"
                );
                sqlx::query(sql)
                    .bind(room)
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows.iter().map(message_from).collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_postgres::TempPostgres;

    #[tokio::test]
    async fn behaviour_suite() {
        let pg = TempPostgres::start();
        let store = PgStore::open(&pg.url()).await.unwrap();
        crate::suite::message_store(&store).await;
        crate::suite::concurrency(&store).await;
        crate::suite::batched_inserts(&store).await;
        store.close().await;
        // Opening again runs the migrations again: they must be recognised as applied.
        let reopened = PgStore::open(&pg.url()).await.unwrap();
        assert!(reopened.users(None, 10).await.unwrap().len() >= 3);
        reopened.close().await;
    }

    #[tokio::test]
    async fn nodes_starting_together_migrate_once() {
        let pg = TempPostgres::start();
        let url = pg.url();
        let (a, b, c) = tokio::join!(
            PgStore::open(&url),
            PgStore::open(&url),
            PgStore::open(&url)
        );
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        let user = a
            .create_user("shared", None, "h", Timestamp::now())
            .await
            .unwrap();
        assert_eq!(b.user(user.id).await.unwrap(), Some(user.clone()));
        assert_eq!(c.user(user.id).await.unwrap(), Some(user));
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_clear_error() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = PgStore::open(&format!("postgres://postgres@127.0.0.1:{port}/x"))
            .await
            .err()
            .expect("no server, no store");
        assert!(
            matches!(&err, StoreError::Database(text) if text.contains("refused")),
            "says why: {err}"
        );
    }
}
