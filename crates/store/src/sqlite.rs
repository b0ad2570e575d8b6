//! The embedded [`MessageStore`]: one SQLite file (WAL, `synchronous = NORMAL`), schema
//! migrations compiled into the binary.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::migrations::{self, migrator};
use crate::rows::{
    account_from, is_foreign_key_violation, is_unique_violation, like_pattern, message_columns,
    message_from, room_from, user_from,
};
use crate::sqlite_writer::{Limits, Writer};
use crate::{
    Account, Conversation, Inserted, Message, MessageStore, NewMessage, Room, StoreError,
    Timestamp, User,
};

#[derive(Clone)]
pub struct SqliteStore {
    /// Everything but the writer's jobs. Its reads of messages first have the writer
    /// commit what it answered ([`Writer::flush`]); its writes first have the writer let go
    /// of the write lock between batches ([`Writer::lend`]).
    pool: SqlitePool,
    /// Message inserts, delivered and read marks, the backlog: group-committed by one
    /// thread (see [`sqlite_writer`](crate::sqlite_writer)).
    writer: Writer,
}

impl SqliteStore {
    /// Open (creating it if needed) the database at `url` (`sqlite://path?mode=rwc`,
    /// `sqlite:path`) and bring its schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, Limits::default()).await
    }

    /// [`SqliteStore::open`] with other limits for the message writer.
    pub(crate) async fn open_with(url: &str, limits: Limits) -> Result<Self, StoreError> {
        let log_limit = limits.log_limit;
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a commit survives a process crash; only a power loss can lose
            // the last transactions, and never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            // For a new file only (an existing one keeps its page size). Every commit
            // appends whole dirty pages to the WAL: 1 KiB pages about halved the bytes
            // written per message against the 4 KiB default (100 conversations, batches
            // of 20 to 100, measured when three indexes were written an entry per message;
            // they are written in slices now).
            .page_size(1024)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // Checkpoints belong to the message writer and its checkpointer, which let the
            // log grow a few MiB between them; a pooled connection (accounts, rooms, room read
            // markers) checkpoints only where the writer would, at the log's size limit, so
            // a REST call never waits for a checkpoint's `fsync`s.
            .pragma("wal_autocheckpoint", (log_limit / 1024).max(16).to_string());
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        migrator(migrations::SQLITE).run(&pool).await?;
        let writer = Writer::start(options.get_filename(), &limits)?;
        Ok(SqliteStore { pool, writer })
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    /// The writer commits what it answered and closes, its checkpointer with it; then the
    /// pool, whose last connection copies the log into the database file and removes it.
    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }

    async fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password_hash: &str,
        at: Timestamp,
    ) -> Result<User, StoreError> {
        let _lent = self.writer.lend().await?;
        let row = sqlx::query(
            "INSERT INTO users (username, email, password_hash, created_at) VALUES (?, ?, ?, ?) \
             RETURNING id, username, created_at, last_seen",
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
        let row = sqlx::query("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(account_from).transpose()?)
    }

    async fn account(&self, id: i64) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(account_from).transpose()?)
    }

    async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT id, username, created_at, last_seen FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_from).transpose()?)
    }

    async fn users(&self, search: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError> {
        let rows = match search {
            Some(s) => {
                sqlx::query(
                    "SELECT id, username, created_at, last_seen FROM users \
                     WHERE username LIKE ? ESCAPE '\\' ORDER BY username LIMIT ?",
                )
                .bind(like_pattern(s))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT id, username, created_at, last_seen FROM users \
                     ORDER BY username LIMIT ?",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.iter().map(user_from).collect::<Result<_, _>>()?)
    }

    async fn set_last_seen(&self, user: i64, at: Timestamp) -> Result<(), StoreError> {
        let _lent = self.writer.lend().await?;
        sqlx::query("UPDATE users SET last_seen = ? WHERE id = ?")
            .bind(at.0)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn create_room(&self, name: &str, owner: i64, at: Timestamp) -> Result<Room, StoreError> {
        let _lent = self.writer.lend().await?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO rooms (name, created_by, created_at) VALUES (?, ?, ?) RETURNING *",
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
        sqlx::query("INSERT INTO room_members (room_id, user_id, joined_at) VALUES (?, ?, ?)")
            .bind(room.id)
            .bind(owner)
            .bind(at.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(room)
    }

    async fn room(&self, id: i64) -> Result<Option<Room>, StoreError> {
        let row = sqlx::query("SELECT * FROM rooms WHERE id = ?")
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
                     WHERE m.user_id = ? ORDER BY r.id LIMIT ?",
                )
                .bind(user)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query("SELECT * FROM rooms ORDER BY id LIMIT ?")
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows.iter().map(room_from).collect::<Result<_, _>>()?)
    }

    async fn join_room(&self, room: i64, user: i64, at: Timestamp) -> Result<bool, StoreError> {
        let _lent = self.writer.lend().await?;
        let done = sqlx::query(
            "INSERT INTO room_members (room_id, user_id, joined_at) VALUES (?, ?, ?) \
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
        let _lent = self.writer.lend().await?;
        let done = sqlx::query("DELETE FROM room_members WHERE room_id = ? AND user_id = ?")
            .bind(room)
            .bind(user)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn is_member(&self, room: i64, user: i64) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM room_members WHERE room_id = ? AND user_id = ?")
            .bind(room)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn room_members(&self, room: i64) -> Result<Vec<i64>, StoreError> {
        let rows =
            sqlx::query("SELECT user_id FROM room_members WHERE room_id = ? ORDER BY user_id")
                .bind(room)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("user_id"))
            .collect::<Result<_, _>>()?)
    }

    async fn insert_message(&self, new: NewMessage<'_>) -> Result<Inserted, StoreError> {
        self.writer.insert(new).await
    }

    async fn insert_messages(&self, new: Vec<NewMessage<'_>>) -> Vec<Result<Inserted, StoreError>> {
        self.writer.insert_many(new).await
    }

    async fn message(&self, id: i64) -> Result<Option<Message>, StoreError> {
        self.writer.flush().await?;
        let sql = concat!("SELECT ", message_columns!(), " FROM messages WHERE id = ?");
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(message_from).transpose()?)
    }

    async fn mark_delivered(&self, ids: &[i64], at: Timestamp) -> Result<Vec<i64>, StoreError> {
        self.writer.mark_delivered(ids.to_vec(), at).await
    }

    async fn undelivered(&self, receiver: i64, limit: u32) -> Result<Vec<Message>, StoreError> {
        self.writer.backlog(receiver, limit).await
    }

    async fn newest_message_id(&self) -> Result<i64, StoreError> {
        self.writer.flush().await?;
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
        self.writer.mark_read(reader, sender, at).await
    }

    async fn mark_room_read(&self, room: i64, user: i64) -> Result<Option<i64>, StoreError> {
        let _lent = self.writer.lend().await?;
        let row = sqlx::query(
            "UPDATE room_members SET last_read_id = \
             (SELECT COALESCE(MAX(id), 0) FROM messages WHERE room_id = ?1) \
             WHERE room_id = ?1 AND user_id = ?2 RETURNING last_read_id",
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
        self.writer.flush().await?;
        let before = before.unwrap_or(i64::MAX);
        let rows = match conversation {
            Conversation::Direct(a, b) => {
                sqlx::query(crate::history::HISTORY_PAGE)
                    .bind(a)
                    .bind(b)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Conversation::Room(room) => {
                let sql = concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE room_id = ? AND id < ? \
                     ORDER BY id DESC LIMIT ?"
                );
                sqlx::query(sql)
                    .bind(room)
                    .bind(before)
                    .bind(limit)
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
    use crate::{Status, Target};

    /// A fresh directory of this test process's own, `sb-store-{name}-{pid}`, and the URL
    /// of the database `{name}.db` in it.
    fn scratch_db(name: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("sb-store-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = url_of(&dir.join(format!("{name}.db")));
        (dir, url)
    }

    /// The URL of the database file `path`, created if missing.
    fn url_of(path: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    /// Every check of the behaviour suite that a single store can run.
    async fn whole_suite(store: &SqliteStore) {
        crate::suite::message_store(store).await;
        crate::suite::concurrency(store).await;
        crate::suite::batched_inserts(store).await;
    }

    #[tokio::test]
    async fn behaviour_suite() {
        let (dir, url) = scratch_db("suite");
        let store = SqliteStore::open(&url).await.unwrap();
        whole_suite(&store).await;
        store.close().await;
        // Reopening runs the migrations again: they must be recognised as applied.
        let reopened = SqliteStore::open(&url).await.unwrap();
        assert!(reopened.users(None, 10).await.unwrap().len() >= 3);
        reopened.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The suite again with groups that stay open until something asks for a commit (an
    /// hour, as a crash would find them): every read through the pool must still see what the
    /// writer answered, and every write through the pool must get the write lock, where
    /// SQLite's busy handler would give up after 5 s.
    #[tokio::test]
    async fn behaviour_suite_with_groups_left_open() {
        let (dir, url) = scratch_db("suite-open");
        let store = open_grouping(&url, std::time::Duration::from_secs(3600)).await;
        whole_suite(&store).await;
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The store at `url` with groups `group_every` long.
    async fn open_grouping(url: &str, group_every: std::time::Duration) -> SqliteStore {
        let limits = Limits {
            group_every,
            ..Limits::default()
        };
        SqliteStore::open_with(url, limits).await.unwrap()
    }

    /// A batch that fails undoes itself only (its savepoint); one whose failure ends the
    /// whole transaction (here a trigger's `RAISE(ROLLBACK)`) undoes the group's earlier
    /// batches with it, and those, already answered, are run again from the redo log with
    /// the ids they were answered with.
    #[tokio::test]
    async fn a_failed_batch_loses_nothing_answered_before_it() {
        let (dir, url) = scratch_db("failed");
        let store = open_grouping(&url, std::time::Duration::from_secs(3600)).await;
        let now = Timestamp::now();
        let a = store.create_user("fail-a", None, "h", now).await.unwrap();
        let b = store.create_user("fail-b", None, "h", now).await.unwrap();
        {
            let _lent = store.writer.lend().await.unwrap();
            sqlx::raw_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON messages BEGIN \
                 SELECT RAISE(ABORT, 'refused') WHERE NEW.content = 'abort'; \
                 SELECT RAISE(ROLLBACK, 'refused') WHERE NEW.content = 'rollback'; END",
            )
            .execute(&store.pool)
            .await
            .unwrap();
        }
        let send = async |content: &str| {
            store
                .insert_message(NewMessage {
                    content,
                    ..direct(a.id, b.id, None)
                })
                .await
                .map(|i| i.message)
        };
        let one = send("one").await.unwrap();
        let aborted = send("abort").await;
        assert!(aborted.is_err(), "{aborted:?}");
        let two = send("two").await.unwrap();
        let rolled_back = send("rollback").await;
        assert!(rolled_back.is_err(), "{rolled_back:?}");
        let three = send("three").await.unwrap();
        let page = |store: &SqliteStore| {
            let store = store.clone();
            async move {
                store
                    .history(Conversation::Direct(a.id, b.id), None, 10)
                    .await
                    .unwrap()
                    .into_iter()
                    .rev()
                    .map(|m| (m.id, m.content))
                    .collect::<Vec<_>>()
            }
        };
        let expected = vec![
            (one.id, "one".to_owned()),
            (two.id, "two".to_owned()),
            (three.id, "three".to_owned()),
        ];
        assert_eq!(page(&store).await, expected);
        assert_eq!([two.id, three.id], [one.id + 1, one.id + 2]);
        store.close().await;
        let reopened = SqliteStore::open(&url).await.unwrap();
        assert_eq!(
            page(&reopened).await,
            expected,
            "nothing run twice on start"
        );
        reopened.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Every write on a pooled connection gets the write lock while the writer holds a
    /// group open (here for an hour): without [`Writer::lend`] each would wait in SQLite's
    /// busy handler until it gave up ("database is locked").
    #[tokio::test]
    async fn pool_writes_get_the_lock_from_an_open_group() {
        let (dir, url) = scratch_db("lend");
        let store = open_grouping(&url, std::time::Duration::from_secs(3600)).await;
        let now = Timestamp::now();
        let a = store.create_user("lend-a", None, "h", now).await.unwrap();
        let b = store.create_user("lend-b", None, "h", now).await.unwrap();
        // Each write below comes right after a message has opened a group.
        let open_a_group = async || {
            store
                .insert_message(direct(a.id, b.id, None))
                .await
                .unwrap();
        };
        open_a_group().await;
        let c = store.create_user("lend-c", None, "h", now).await.unwrap();
        open_a_group().await;
        let room = store.create_room("lend-room", a.id, now).await.unwrap();
        open_a_group().await;
        assert!(store.join_room(room.id, c.id, now).await.unwrap());
        open_a_group().await;
        store.set_last_seen(c.id, now).await.unwrap();
        open_a_group().await;
        assert_eq!(store.mark_room_read(room.id, c.id).await.unwrap(), Some(0));
        open_a_group().await;
        assert!(store.leave_room(room.id, c.id).await.unwrap());
        assert_eq!(
            store
                .history(Conversation::Direct(a.id, b.id), None, 10)
                .await
                .unwrap()
                .len(),
            6
        );
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Copy the database's files from `from` to `to` as a crash leaves them: the log and
    /// the redo log as written so far (no shared-memory index: it is rebuilt), without
    /// anything the process would still do.
    fn copy_as_crashed(from: &std::path::Path, to: &std::path::Path, with_redo: bool) {
        std::fs::create_dir_all(to).unwrap();
        for suffix in ["", "-wal", "-redo"] {
            if suffix == "-redo" && !with_redo {
                continue;
            }
            let name = format!("crash.db{suffix}");
            std::fs::copy(from.join(&name), to.join(&name)).unwrap();
        }
    }

    /// What the writer answered but had not committed when the process died comes back on
    /// the next start, with the ids it was answered with: messages, delivered and read
    /// marks, and the `clientMsgId`s that make a retry a duplicate. Without the redo log
    /// the same files hold none of it (so the copy really is from before the commit).
    #[tokio::test]
    async fn answered_writes_survive_a_crash_before_their_group_commits() {
        let (dir, url) = scratch_db("crash");
        let store = open_grouping(&url, std::time::Duration::from_secs(3600)).await;
        let now = Timestamp::now();
        let a = store.create_user("crash-a", None, "h", now).await.unwrap();
        let b = store.create_user("crash-b", None, "h", now).await.unwrap();
        let room = store.create_room("crash-room", a.id, now).await.unwrap();
        // Committed: the room's creation had the writer commit its group.
        let before = store.newest_message_id().await.unwrap();
        let mut sent = Vec::new();
        for i in 0..5 {
            let key = format!("k{i}");
            let m = store
                .insert_message(NewMessage {
                    sender: a.id,
                    target: Target::User(b.id),
                    content: &format!("direct {i}"),
                    message_type: "text",
                    client_msg_id: Some(&key),
                    at: now,
                })
                .await
                .unwrap();
            sent.push(m.message);
        }
        let in_room = store
            .insert_message(NewMessage {
                sender: b.id,
                target: Target::Room(room.id),
                content: "to the room",
                message_type: "text",
                client_msg_id: None,
                at: now,
            })
            .await
            .unwrap()
            .message;
        let later = Timestamp(now.0 + 1000);
        let delivered = store
            .mark_delivered(&[sent[0].id, sent[1].id], later)
            .await
            .unwrap();
        assert_eq!(delivered, [sent[0].id, sent[1].id]);
        // All answered; none committed (the group stays open for an hour).
        let crashed = dir.join("crashed");
        let without_redo = dir.join("without-redo");
        copy_as_crashed(&dir, &crashed, true);
        copy_as_crashed(&dir, &without_redo, false);

        let lost = SqliteStore::open(&url_of(&without_redo.join("crash.db")))
            .await
            .unwrap();
        assert_eq!(
            lost.newest_message_id().await.unwrap(),
            before,
            "the copy is from before the group committed"
        );
        lost.close().await;

        let back = SqliteStore::open(&url_of(&crashed.join("crash.db")))
            .await
            .unwrap();
        let history = back
            .history(Conversation::Direct(a.id, b.id), None, 10)
            .await
            .unwrap();
        let mut ids: Vec<i64> = history.iter().map(|m| m.id).collect();
        ids.reverse();
        assert_eq!(
            ids,
            sent.iter().map(|m| m.id).collect::<Vec<_>>(),
            "same ids, same order"
        );
        for m in &sent {
            let stored = back.message(m.id).await.unwrap().unwrap();
            assert_eq!(stored.content, m.content);
            assert_eq!(stored.client_msg_id, m.client_msg_id);
        }
        let statuses: Vec<Status> = [sent[0].id, sent[1].id, sent[2].id]
            .iter()
            .map(|&id| history.iter().find(|m| m.id == id).unwrap().status)
            .collect();
        assert_eq!(
            statuses,
            [Status::Delivered, Status::Delivered, Status::Sent]
        );
        let room_page = back
            .history(Conversation::Room(room.id), None, 10)
            .await
            .unwrap();
        assert_eq!(
            room_page.iter().map(|m| m.id).collect::<Vec<_>>(),
            [in_room.id]
        );
        // A retry of an answered message is a duplicate, not a second row.
        let retry = back
            .insert_message(NewMessage {
                sender: a.id,
                target: Target::User(b.id),
                content: "direct 3",
                message_type: "text",
                client_msg_id: Some("k3"),
                at: now,
            })
            .await
            .unwrap();
        assert!(retry.duplicate);
        assert_eq!(retry.message.id, sent[3].id);
        // New messages go on from there; the backlog holds the three undelivered.
        let next = back
            .insert_message(direct(a.id, b.id, Some("k5")))
            .await
            .unwrap();
        assert_eq!(next.message.id, in_room.id + 1);
        assert_eq!(
            backlog_ids(&back, b.id).await,
            [sent[2].id, sent[3].id, sent[4].id, next.message.id]
        );
        back.close().await;

        // Started again after a clean close: nothing is run twice.
        let again = SqliteStore::open(&url_of(&crashed.join("crash.db")))
            .await
            .unwrap();
        assert_eq!(again.newest_message_id().await.unwrap(), next.message.id);
        assert_eq!(
            again
                .history(Conversation::Direct(a.id, b.id), None, 10)
                .await
                .unwrap()
                .len(),
            6
        );
        again.close().await;
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Group commit keeps queue order (one conversation's messages get ascending ids) and a
    /// closed store refuses writes with an error instead of hanging.
    #[tokio::test]
    async fn batched_inserts_keep_send_order_and_close_cleanly() {
        let (dir, url) = scratch_db("order");
        let store = SqliteStore::open(&url).await.unwrap();
        let now = Timestamp::now();
        let a = store.create_user("order-a", None, "h", now).await.unwrap();
        let b = store.create_user("order-b", None, "h", now).await.unwrap();
        let contents: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        let sent = futures_util::future::join_all(contents.iter().map(|c| {
            store.insert_message(NewMessage {
                sender: a.id,
                target: Target::User(b.id),
                content: c,
                message_type: "text",
                client_msg_id: None,
                at: now,
            })
        }))
        .await;
        let ids: Vec<i64> = sent.into_iter().map(|r| r.unwrap().message.id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids follow send order: {ids:?}"
        );
        store.close().await;
        let refused = store
            .insert_message(NewMessage {
                sender: a.id,
                target: Target::User(b.id),
                content: "late",
                message_type: "text",
                client_msg_id: None,
                at: now,
            })
            .await;
        assert!(
            matches!(refused, Err(StoreError::Database(_))),
            "{refused:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// While the writer is busy, the checkpointer rewinds the log (at half the writer's
    /// limit, 6 MiB here), so the log never reaches the size at which the writer would
    /// stop to rewind it itself (120,000 messages, and the writer never pauses between
    /// them). Also runs the batched WAL writes ([`wal_batch`](crate::wal_batch)) through
    /// the rewinds: every message reads back after a restart.
    ///
    /// The limit is about a twentieth of the real one, so the checkpointer's period is too:
    /// at 200 ms a release build (80,000 messages in 0.44 s) grew the log by 3.5 MB past
    /// the rewind threshold before the next pass, and past the limit. At 10 ms the log
    /// peaked at 3.3 MB (debug, rewound 5 times) and 3.6 MB (release, 4 times); with the
    /// rewind request disabled, 6.5 MB.
    #[tokio::test]
    async fn the_checkpointer_rewinds_the_log_before_the_writer_has_to() {
        let (dir, url) = scratch_db("wal");
        let store = SqliteStore::open_with(
            &url,
            Limits {
                log_limit: 6 << 20,
                checkpoint_every: Duration::from_millis(10),
                ..Limits::default()
            },
        )
        .await
        .unwrap();
        let now = Timestamp::now();
        let mut users = Vec::new();
        for i in 0..20 {
            users.push(
                store
                    .create_user(&format!("wal-{i}"), None, "h", now)
                    .await
                    .unwrap()
                    .id,
            );
        }
        let wal = dir.join("wal.db-wal");
        const ROUNDS: usize = 600;
        let mut largest = 0;
        for round in 0..ROUNDS {
            let contents: Vec<String> = (0..200)
                .map(|i| format!("round {round} message {i}"))
                .collect();
            let sent = futures_util::future::join_all(contents.iter().enumerate().map(|(i, c)| {
                store.insert_message(NewMessage {
                    sender: users[i % 20],
                    target: Target::User(users[(i + 1) % 20]),
                    content: c,
                    message_type: "text",
                    client_msg_id: Some(c),
                    at: now,
                })
            }))
            .await;
            if let Some(Err(e)) = sent.iter().find(|r| r.is_err()) {
                panic!("round {round}: {e}");
            }
            largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        }
        assert!(largest < 6 << 20, "the WAL grew to {largest} bytes");
        // The log header's checkpoint sequence number counts rewinds.
        let header = std::fs::read(&wal).unwrap();
        let rewinds = u32::from_be_bytes(header[12..16].try_into().unwrap());
        assert!(rewinds >= 2, "the log was rewound {rewinds} times");
        store.close().await;
        // Every message survived the rewinds: user 0 sent 10 a round to user 1.
        let reopened = SqliteStore::open(&url).await.unwrap();
        let page = reopened
            .history(Conversation::Direct(users[0], users[1]), None, 10_000)
            .await
            .unwrap();
        assert_eq!(page.len(), ROUNDS * 10);
        assert_eq!(page[0].content, format!("round {} message 180", ROUNDS - 1));
        assert_eq!(page[ROUNDS * 10 - 1].content, "round 0 message 0");
        reopened.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A trickle of messages (each its own commit) does not rewind the log: a rewind makes
    /// the commit that follows it wait for an `fsync` of the log's header, so checkpoints
    /// wait for many operations (`CHECKPOINT_AFTER`) instead of following every commit.
    /// The log's header counts rewinds (its checkpoint sequence number, bytes 12..16).
    #[tokio::test]
    async fn a_trickle_of_messages_does_not_rewind_the_log_each_commit() {
        let (dir, url) = scratch_db("trickle");
        let store = SqliteStore::open(&url).await.unwrap();
        let now = Timestamp::now();
        let a = store
            .create_user("trickle-a", None, "h", now)
            .await
            .unwrap();
        let b = store
            .create_user("trickle-b", None, "h", now)
            .await
            .unwrap();
        let rewinds = || {
            let header = std::fs::read(dir.join("trickle.db-wal")).unwrap();
            u32::from_be_bytes(header[12..16].try_into().unwrap())
        };
        let mut first = None;
        // 600 ms of commits: checkpoints after every commit (at most one per 200 ms)
        // rewound the log about three times.
        for i in 0..60 {
            let content = format!("trickle {i}");
            store
                .insert_message(NewMessage {
                    sender: a.id,
                    target: Target::User(b.id),
                    content: &content,
                    message_type: "text",
                    client_msg_id: None,
                    at: now,
                })
                .await
                .unwrap();
            first.get_or_insert_with(rewinds);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            first,
            Some(rewinds()),
            "the log was rewound during the trickle"
        );
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The mark `below` of `table` (`client_msg_ids_written`, `history_written`): every
    /// message under this id has its key written.
    async fn written_mark(store: &SqliteStore, table: &str) -> i64 {
        store.writer.flush().await.unwrap();
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT below FROM {table}")))
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    /// The keys of `sender` in the table `client_msg_ids`.
    async fn written_keys(store: &SqliteStore, sender: i64) -> Vec<String> {
        store.writer.flush().await.unwrap();
        sqlx::query_scalar("SELECT client_msg_id FROM client_msg_ids WHERE sender_id = ?")
            .bind(sender)
            .fetch_all(&store.pool)
            .await
            .unwrap()
    }

    /// The store at `url` with sweeps `sweep_every` apart.
    async fn open_sweeping(url: &str, sweep_every: std::time::Duration) -> SqliteStore {
        let limits = Limits {
            sweep_every,
            history_sweep_every: sweep_every,
            ..Limits::default()
        };
        SqliteStore::open_with(url, limits).await.unwrap()
    }

    /// The ids of `receiver`'s backlog, as a connecting receiver gets it.
    async fn backlog_ids(store: &SqliteStore, receiver: i64) -> Vec<i64> {
        let page = store.undelivered(receiver, 100).await.unwrap();
        page.into_iter().map(|m| m.id).collect()
    }

    /// The ids in the table `backlog` for `receiver`.
    async fn backlog_table(store: &SqliteStore, receiver: i64) -> Vec<i64> {
        store.writer.flush().await.unwrap();
        sqlx::query_scalar("SELECT id FROM backlog WHERE receiver_id = ? ORDER BY id")
            .bind(receiver)
            .fetch_all(&store.pool)
            .await
            .unwrap()
    }

    /// An offline receiver's backlog, through the writer: keys wait in memory, a sweep
    /// writes those still undelivered a period later, and both come back in order, after
    /// a restart too (whether a key was in memory or in the table); a delivered or a read
    /// mark takes a message out of both.
    #[tokio::test]
    async fn the_backlog_is_kept_in_memory_then_in_the_table_and_survives_a_restart() {
        let (dir, url) = scratch_db("backlog");
        let sweep_every = std::time::Duration::from_millis(300);
        let store = open_sweeping(&url, sweep_every).await;
        let now = Timestamp::now();
        let mut user = Vec::new();
        for name in ["bl-a", "bl-b", "bl-c"] {
            user.push(store.create_user(name, None, "h", now).await.unwrap().id);
        }
        let (a, b, c) = (user[0], user[1], user[2]);
        let send = |store: &SqliteStore, to: i64| {
            let store = store.clone();
            async move {
                store
                    .insert_message(direct(a, to, None))
                    .await
                    .unwrap()
                    .message
                    .id
            }
        };
        let mut old = Vec::new();
        for _ in 0..5 {
            old.push(send(&store, b).await);
        }
        let to_c = send(&store, c).await;
        assert_eq!(backlog_ids(&store, b).await, old, "from memory");
        assert!(backlog_table(&store, b).await.is_empty());

        // Two sweeps later the old keys are in the table (the first sweep's cutoff is from
        // before them); a key younger than a period still waits in memory.
        for _ in 0..2 {
            tokio::time::sleep(sweep_every + std::time::Duration::from_millis(50)).await;
            store.mark_delivered(&[to_c], now).await.unwrap();
        }
        let young = send(&store, b).await;
        assert_eq!(backlog_table(&store, b).await, old);
        let mut all = old.clone();
        all.push(young);
        assert_eq!(
            backlog_ids(&store, b).await,
            all,
            "table and memory, merged"
        );
        let page = store.undelivered(b, 2).await.unwrap();
        assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), old[..2]);
        assert!(backlog_ids(&store, c).await.is_empty(), "delivered");

        // Delivered: one from the table, the young one from memory.
        let marked = store.mark_delivered(&[old[0], young], now).await.unwrap();
        assert_eq!(marked, [old[0], young]);
        assert_eq!(backlog_ids(&store, b).await, old[1..]);
        assert_eq!(backlog_table(&store, b).await, old[1..]);
        let in_memory = send(&store, b).await;
        store.close().await;

        let store = open_sweeping(&url, sweep_every).await;
        let mut left = old[1..].to_vec();
        left.push(in_memory);
        assert_eq!(backlog_ids(&store, b).await, left, "after a restart");
        // Read: every one from `a`, delivered ones too, from the table and from memory.
        let read = store.mark_read(b, a, now).await.unwrap();
        assert_eq!(read, [&old[..], &[young, in_memory]].concat());
        assert!(backlog_ids(&store, b).await.is_empty(), "read");
        assert!(backlog_table(&store, b).await.is_empty());
        // Later sweeps write none of the read keys.
        tokio::time::sleep(sweep_every * 2 + std::time::Duration::from_millis(100)).await;
        store.mark_delivered(&[], now).await.unwrap();
        tokio::time::sleep(sweep_every + std::time::Duration::from_millis(50)).await;
        store.mark_delivered(&[], now).await.unwrap();
        assert!(backlog_table(&store, b).await.is_empty());
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Read marks through the store: a mark takes every unread message of its direction
    /// and nothing else, whether its keys wait in the writer's memory or are in the table
    /// `history`; marks of 2,000 messages take two slices each. (What a slice costs is
    /// `history`'s unit test.)
    #[tokio::test]
    async fn a_read_mark_takes_the_unread_messages_of_its_direction() {
        let (dir, url) = scratch_db("read");
        let sweep_every = std::time::Duration::from_millis(200);
        let store = open_sweeping(&url, sweep_every).await;
        let now = Timestamp::now();
        let a = store
            .create_user("read-a", None, "h", now)
            .await
            .unwrap()
            .id;
        let b = store
            .create_user("read-b", None, "h", now)
            .await
            .unwrap()
            .id;
        let send = |n: usize| store.insert_messages((0..n).map(|_| direct(a, b, None)).collect());
        let ids = |sent: Vec<Result<Inserted, StoreError>>| -> Vec<i64> {
            sent.into_iter().map(|r| r.unwrap().message.id).collect()
        };
        let old = ids(send(2000).await);
        // The other direction stays unread: a mark of one direction never reads the other.
        let reply = store.insert_message(direct(b, a, None)).await.unwrap();
        assert_eq!(store.mark_read(b, a, now).await.unwrap(), old);

        // Swept into the table (once a sweep is due, each batch writes a slice of 64), then
        // three more in memory.
        tokio::time::sleep(sweep_every + std::time::Duration::from_millis(50)).await;
        for _ in 0..100 {
            if history_table(&store, b, a).await.len() == 2000 {
                break;
            }
            store.mark_delivered(&[], now).await.unwrap();
        }
        assert_eq!(history_table(&store, b, a).await, old);
        let new = ids(send(3).await);
        assert_eq!(store.mark_read(b, a, now).await.unwrap(), new);
        let more = ids(send(2000).await);
        assert_eq!(store.mark_read(b, a, now).await.unwrap(), more);

        assert!(store.mark_read(b, a, now).await.unwrap().is_empty());
        assert_eq!(
            store.mark_read(a, b, now).await.unwrap(),
            [reply.message.id],
            "the other direction"
        );
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The ids of `history`'s keys of messages from `sender` to `receiver`.
    async fn history_table(store: &SqliteStore, receiver: i64, sender: i64) -> Vec<i64> {
        store.writer.flush().await.unwrap();
        sqlx::query_scalar(
            "SELECT id FROM history WHERE receiver_id = ? AND sender_id = ? ORDER BY id",
        )
        .bind(receiver)
        .bind(sender)
        .fetch_all(&store.pool)
        .await
        .unwrap()
    }

    /// A direct conversation's history pages (the pool's reads) are whole and in order
    /// wherever its keys are: only in `messages` past the mark (waiting in the writer's
    /// memory), in the table `history` after a sweep, on both sides of the mark, and after
    /// a restart; pages across the mark neither skip nor repeat a message.
    #[tokio::test]
    async fn direct_history_pages_are_whole_wherever_the_keys_are() {
        let (dir, url) = scratch_db("history");
        let sweep_every = std::time::Duration::from_millis(300);
        let store = open_sweeping(&url, sweep_every).await;
        let now = Timestamp::now();
        let a = store.create_user("h-a", None, "h", now).await.unwrap().id;
        let b = store.create_user("h-b", None, "h", now).await.unwrap().id;
        let c = store.create_user("h-c", None, "h", now).await.unwrap().id;
        let send = async |store: &SqliteStore, from: i64, to: i64| {
            store
                .insert_message(direct(from, to, None))
                .await
                .unwrap()
                .message
                .id
        };
        // The conversation's ids, with another one's messages in between.
        let mut sent = Vec::new();
        for round in 0..60 {
            sent.push(send(&store, a, b).await);
            sent.push(send(&store, b, a).await);
            if round % 2 == 0 {
                send(&store, c, a).await;
            }
        }
        // Every page of `size`, newest first, put together.
        let paged = async |store: &SqliteStore, size: u32| {
            let mut all: Vec<i64> = Vec::new();
            loop {
                let page = store
                    .history(Conversation::Direct(a, b), all.last().copied(), size)
                    .await
                    .unwrap();
                assert!(page.len() <= size as usize);
                let done = page.len() < size as usize;
                all.extend(page.iter().map(|m| m.id));
                if done {
                    return all;
                }
            }
        };
        let newest_first = |ids: &[i64]| ids.iter().rev().copied().collect::<Vec<_>>();
        assert_eq!(
            paged(&store, 7).await,
            newest_first(&sent),
            "keys in memory only"
        );
        assert!(history_table(&store, a, b).await.is_empty());

        // A sweep's first slice (64 keys, in key order: receiver a's first) writes the
        // direction b to a; the mark stays where it was until the sweep ends, so these
        // keys are in the table and past the mark.
        tokio::time::sleep(sweep_every + std::time::Duration::from_millis(50)).await;
        store.mark_delivered(&[], now).await.unwrap();
        assert_eq!(history_table(&store, a, b).await.len(), 60, "b to a swept");
        assert!(
            history_table(&store, b, a).await.is_empty(),
            "a to b not yet"
        );
        assert!(written_mark(&store, "history_written").await <= sent[0]);
        for size in [7, 100] {
            assert_eq!(
                paged(&store, size).await,
                newest_first(&sent),
                "mid-sweep, {size}"
            );
        }
        // Two more slices end the sweep and move the mark.
        store.mark_delivered(&[], now).await.unwrap();
        store.mark_delivered(&[], now).await.unwrap();
        assert_eq!(history_table(&store, b, a).await.len(), 60, "a to b swept");
        assert!(written_mark(&store, "history_written").await > sent[sent.len() - 1]);
        // Newer ones past the mark, older ones in the table only.
        sent.push(send(&store, a, b).await);
        sent.push(send(&store, b, a).await);
        for size in [1, 3, 5, 100, 200] {
            assert_eq!(
                paged(&store, size).await,
                newest_first(&sent),
                "pages of {size}"
            );
        }

        store.close().await;
        let store = open_sweeping(&url, sweep_every).await;
        assert_eq!(
            history_table(&store, b, a).await.len(),
            61,
            "written at start"
        );
        assert_eq!(
            paged(&store, 4).await,
            newest_first(&sent),
            "after a restart"
        );
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn direct(sender: i64, receiver: i64, key: Option<&str>) -> NewMessage<'_> {
        NewMessage {
            sender,
            target: Target::User(receiver),
            content: key.unwrap_or("no key"),
            message_type: "text",
            client_msg_id: key,
            at: Timestamp::now(),
        }
    }

    /// A repeated `clientMsgId` is found while its key waits in the writer's memory, once
    /// a sweep has written it (several commits' slices for a long backlog of keys), and
    /// after a restart, including a key that arrived behind a running sweep and was still
    /// in memory when the store closed: the recovery mark stops at it.
    #[tokio::test]
    async fn client_msg_ids_are_found_in_memory_in_the_table_and_after_a_restart() {
        let (dir, url) = scratch_db("keys");
        // Sweeps far apart, so no step of the test (milliseconds each) outlasts one.
        let sweep_every = std::time::Duration::from_secs(3);
        let store = open_sweeping(&url, sweep_every).await;
        let now = Timestamp::now();
        let a = store
            .create_user("keys-a", None, "h", now)
            .await
            .unwrap()
            .id;
        let b = store
            .create_user("keys-b", None, "h", now)
            .await
            .unwrap()
            .id;
        let is_repeat = |store: &SqliteStore, key: String, original: i64| {
            let store = store.clone();
            async move {
                let again = store
                    .insert_message(direct(a, b, Some(&key)))
                    .await
                    .unwrap();
                assert!(again.duplicate, "{key} is a repeat");
                assert_eq!(again.message.id, original, "{key} names its first message");
                assert_eq!(again.message.content, key);
            }
        };

        // 200 keys in one job: a sweep needs several commits' slices for them.
        let keys: Vec<String> = (0..200).map(|i| format!("k{i:03}")).collect();
        let burst = store
            .insert_messages(keys.iter().map(|k| direct(a, b, Some(k))).collect())
            .await;
        let ids: Vec<i64> = burst.into_iter().map(|r| r.unwrap().message.id).collect();
        assert!(
            written_keys(&store, a).await.is_empty(),
            "waiting in memory"
        );
        is_repeat(&store, keys[7].clone(), ids[7]).await;

        // The first commit after the pause starts a sweep and writes one slice of it.
        tokio::time::sleep(sweep_every + std::time::Duration::from_millis(100)).await;
        let plain = |store: &SqliteStore| {
            let store = store.clone();
            async move { store.insert_message(direct(a, b, None)).await.unwrap() }
        };
        plain(&store).await;
        let written = written_keys(&store, a).await;
        assert!(
            !written.is_empty() && written.len() < keys.len(),
            "one slice per commit: {} written",
            written.len()
        );
        // A key that sorts before the sweep's cursor waits for the next sweep.
        let behind = store
            .insert_message(direct(a, b, Some("a-behind")))
            .await
            .unwrap()
            .message
            .id;
        for _ in 0..10 {
            plain(&store).await;
        }
        assert_eq!(
            written_keys(&store, a).await,
            keys,
            "the sweep wrote all 200"
        );
        assert_eq!(
            written_mark(&store, "client_msg_ids_written").await,
            behind,
            "the mark stops at what waits"
        );
        is_repeat(&store, keys[150].clone(), ids[150]).await;
        is_repeat(&store, "a-behind".into(), behind).await;
        store.close().await;

        // Restart: the keys from the mark on are written before the first batch.
        let store = open_sweeping(&url, sweep_every).await;
        assert!(
            written_keys(&store, a)
                .await
                .contains(&"a-behind".to_owned())
        );
        assert!(written_mark(&store, "client_msg_ids_written").await > behind);
        is_repeat(&store, "a-behind".into(), behind).await;
        is_repeat(&store, keys[0].clone(), ids[0]).await;
        let fresh = store
            .insert_message(direct(a, b, Some("fresh")))
            .await
            .unwrap();
        assert!(!fresh.duplicate);
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A database written before `client_msg_ids` (migration 1 only) keeps its senders'
    /// keys through the migration that drops the old unique index, its backlog through the
    /// one that moves it to a table, its messages, ids and history through the rebuild
    /// of `messages` without AUTOINCREMENT, and its history's keys through the move of the
    /// history index to a table.
    #[tokio::test]
    async fn a_database_from_before_client_msg_ids_keeps_its_keys_and_backlog() {
        let (dir, url) = scratch_db("v1");
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        migrator(&migrations::SQLITE[..1]).run(&pool).await.unwrap();
        for statement in [
            "INSERT INTO users (id, username, password_hash, created_at) \
             VALUES (1, 'v1-a', 'h', 0), (2, 'v1-b', 'h', 0)",
            "INSERT INTO messages (sender_id, receiver_id, content, client_msg_id, status, created_at) \
             VALUES (1, 2, 'k1', 'k1', 'delivered', 0), (1, 2, 'k2', 'k2', 'sent', 0), \
             (2, 1, 'k1', 'k1', 'sent', 0)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let store = SqliteStore::open(&url).await.unwrap();
        for (sender, key, id) in [(1, "k1", 1), (1, "k2", 2), (2, "k1", 3)] {
            let again = store
                .insert_message(direct(sender, 3 - sender, Some(key)))
                .await
                .unwrap();
            assert!(again.duplicate, "{sender}/{key}");
            assert_eq!(again.message.id, id);
        }
        let new = store
            .insert_message(direct(2, 1, Some("k2")))
            .await
            .unwrap();
        assert!(!new.duplicate, "keys are per sender");
        assert_eq!(written_mark(&store, "client_msg_ids_written").await, 4);
        // Ids go on after the stored ones.
        assert_eq!(new.message.id, 4);
        // Migration 0003 moved the `sent` messages into the table `backlog`.
        assert_eq!(backlog_ids(&store, 2).await, [2]);
        assert_eq!(backlog_ids(&store, 1).await, [3, new.message.id]);
        // The rebuilt table's trigger takes a delivered message out of the table.
        store.mark_delivered(&[2], Timestamp::now()).await.unwrap();
        assert_eq!(backlog_table(&store, 2).await, Vec::<i64>::new());
        assert_eq!(backlog_ids(&store, 2).await, Vec::<i64>::new());
        // History in both directions: migration 0005 moved the keys of the stored
        // messages into the table `history`; the new one is read past its mark.
        assert_eq!(history_table(&store, 2, 1).await, [1, 2]);
        assert_eq!(history_table(&store, 1, 2).await, [3]);
        assert_eq!(written_mark(&store, "history_written").await, 4);
        let history = store
            .history(Conversation::Direct(1, 2), None, 10)
            .await
            .unwrap();
        let ids: Vec<i64> = history.iter().map(|m| m.id).collect();
        assert_eq!(ids, [4, 3, 2, 1]);
        assert_eq!(history[2].content, "k2");
        assert_eq!(history[3].status, Status::Delivered);
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A commit of new messages rewrites no `sqlite_sequence` page (`messages` has no
    /// AUTOINCREMENT since migration 0004: it cost a log page per commit), and a batch's
    /// ids still follow each other, each naming its own row.
    #[tokio::test]
    async fn new_messages_leave_sqlite_sequence_alone() {
        let (dir, url) = scratch_db("sequence");
        let store = SqliteStore::open(&url).await.unwrap();
        let now = Timestamp::now();
        let a = store.create_user("seq-a", None, "h", now).await.unwrap();
        let b = store.create_user("seq-b", None, "h", now).await.unwrap();
        let sequence = || async {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT name, seq FROM sqlite_sequence ORDER BY name",
            )
            .fetch_all(&store.pool)
            .await
            .unwrap()
        };
        let before = sequence().await;
        let keys = ["s1", "s2", "s3", "s4", "s5"];
        let stored = store
            .insert_messages(keys.iter().map(|k| direct(a.id, b.id, Some(k))).collect())
            .await;
        let ids: Vec<i64> = stored.into_iter().map(|r| r.unwrap().message.id).collect();
        assert_eq!(sequence().await, before);
        assert_eq!(ids, (ids[0]..ids[0] + 5).collect::<Vec<_>>());
        for (id, key) in ids.iter().zip(keys) {
            assert_eq!(store.message(*id).await.unwrap().unwrap().content, key);
        }
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// `sqlite::memory:` still works: the writer joins the pool's shared in-memory database.
    #[tokio::test]
    async fn an_in_memory_store_takes_messages() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let now = Timestamp::now();
        let a = store.create_user("mem-a", None, "h", now).await.unwrap();
        let b = store.create_user("mem-b", None, "h", now).await.unwrap();
        let sent = store
            .insert_message(NewMessage {
                sender: a.id,
                target: Target::User(b.id),
                content: "hello",
                message_type: "text",
                client_msg_id: None,
                at: now,
            })
            .await
            .unwrap();
        let stored = store.message(sent.message.id).await.unwrap().unwrap();
        assert_eq!(stored.content, "hello");
        store.close().await;
    }
}
