//! The SQLite hot write path: one task owns one connection and commits every message
//! insert and delivered-mark that queued up while the previous commit ran, in one
//! transaction (group commit).
//!
//! Why: SQLite has one writer at a time. Autocommit inserts from several pooled
//! connections serialise on the write lock (the losers sleep in SQLite's busy handler,
//! milliseconds at a time) and every commit appends the touched pages to the WAL again.
//! One writer taking whatever is queued turns N commits into one, never waits for the lock
//! against itself, and keeps arrival order (ids are handed out in queue order, so messages
//! of one conversation stay in order). Each caller gets its answer only after the commit
//! that made its row durable, so "persisted before `message_sent`" still holds.

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, QueryBuilder, Sqlite};
use tokio::sync::{mpsc, oneshot};

use crate::rows::{
    is_foreign_key_violation, is_unique_violation, message_columns, message_from, sorted_ids,
};
use crate::{Inserted, NewMessage, StoreError, Target, Timestamp};

/// Most operations in one transaction: bounds the time a batch holds the write lock.
const BATCH: usize = 256;

/// A message to insert, owned so it can cross to the writer task.
struct Pending {
    sender: i64,
    target: Target,
    content: String,
    message_type: String,
    client_msg_id: Option<String>,
    at: Timestamp,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    Insert(Pending, Reply<Inserted>),
    MarkDelivered(Vec<i64>, Timestamp, Reply<Vec<i64>>),
    /// Finish what is queued, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::UnboundedSender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Database("the message writer has stopped".into())
}

impl Writer {
    /// Open the writer's own connection and start its task.
    pub(crate) async fn start(options: &SqliteConnectOptions) -> Result<Self, StoreError> {
        let conn = SqliteConnection::connect_with(options).await?;
        // Unbounded is fine: every sender awaits its reply, so the queue holds at most one
        // job per waiting caller.
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(conn, rx));
        Ok(Writer { jobs })
    }

    async fn call<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(job(reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    pub(crate) async fn insert(&self, new: NewMessage<'_>) -> Result<Inserted, StoreError> {
        let pending = Pending {
            sender: new.sender,
            target: new.target,
            content: new.content.to_owned(),
            message_type: new.message_type.to_owned(),
            client_msg_id: new.client_msg_id.map(str::to_owned),
            at: new.at,
        };
        self.call(|reply| Job::Insert(pending, reply)).await
    }

    pub(crate) async fn mark_delivered(
        &self,
        ids: Vec<i64>,
        at: Timestamp,
    ) -> Result<Vec<i64>, StoreError> {
        self.call(|reply| Job::MarkDelivered(ids, at, reply)).await
    }

    /// Commit what is queued and close the connection; later calls fail.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

async fn run(mut conn: SqliteConnection, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH);
    let mut closing = None;
    while closing.is_none() && rx.recv_many(&mut jobs, BATCH).await > 0 {
        if let Some(at) = jobs.iter().position(|j| matches!(j, Job::Close(_))) {
            // Jobs queued after the close are dropped: their callers see `stopped()`.
            if let Job::Close(done) = jobs.swap_remove(at) {
                closing = Some(done);
            }
            jobs.truncate(at);
        }
        commit(&mut conn, &mut jobs).await;
    }
    rx.close();
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing the message writer's connection failed");
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// One outcome per job, sent only once the batch is committed (or has failed).
enum Done {
    Insert(Result<Inserted, StoreError>, Reply<Inserted>),
    MarkDelivered(Result<Vec<i64>, StoreError>, Reply<Vec<i64>>),
}

impl Done {
    fn send(self, failed: Option<&str>) {
        let fail = |e: &str| StoreError::Database(e.to_owned());
        match self {
            Done::Insert(r, reply) => {
                let _ = reply.send(match (r, failed) {
                    (Ok(_), Some(e)) => Err(fail(e)),
                    (r, _) => r,
                });
            }
            Done::MarkDelivered(r, reply) => {
                let _ = reply.send(match (r, failed) {
                    (Ok(_), Some(e)) => Err(fail(e)),
                    (r, _) => r,
                });
            }
        }
    }
}

/// Run `jobs` in one transaction and answer each caller.
async fn commit(conn: &mut SqliteConnection, jobs: &mut Vec<Job>) {
    let mut done = Vec::with_capacity(jobs.len());
    // IMMEDIATE: take the write lock up front (other pooled connections may write rarely,
    // e.g. new accounts), so no statement of the batch can hit a lock upgrade deadlock.
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            let e = e.to_string();
            tracing::error!(error = %e, count = jobs.len(), "cannot begin a message batch");
            for job in jobs.drain(..) {
                fail(job, &e);
            }
            return;
        }
    };
    let mut fatal: Option<String> = None;
    for job in jobs.drain(..) {
        if let Some(e) = &fatal {
            fail(job, e);
            continue;
        }
        // A constraint failure only undoes its own statement in SQLite; anything else may
        // have ended the transaction, so the rest of the batch is failed, not run outside it.
        match job {
            Job::Insert(p, reply) => match insert(&mut tx, &p).await {
                Ok(r) => done.push(Done::Insert(r, reply)),
                Err(e) => {
                    fatal = Some(e.to_string());
                    done.push(Done::Insert(Err(e.into()), reply));
                }
            },
            Job::MarkDelivered(ids, at, reply) => match mark_delivered(&mut tx, &ids, at).await {
                Ok(changed) => done.push(Done::MarkDelivered(Ok(changed), reply)),
                Err(e) => {
                    fatal = Some(e.to_string());
                    done.push(Done::MarkDelivered(Err(e.into()), reply));
                }
            },
            Job::Close(_) => unreachable!("close jobs are taken out of the batch"),
        }
    }
    let failed = match fatal {
        Some(e) => {
            let _ = tx.rollback().await;
            Some(e)
        }
        None => tx.commit().await.err().map(|e| e.to_string()),
    };
    if let Some(e) = &failed {
        tracing::error!(error = %e, count = done.len(), "message batch not committed");
    }
    for d in done {
        d.send(failed.as_deref());
    }
}

fn fail(job: Job, e: &str) {
    let err = || StoreError::Database(e.to_owned());
    match job {
        Job::Insert(_, reply) => {
            let _ = reply.send(Err(err()));
        }
        Job::MarkDelivered(_, _, reply) => {
            let _ = reply.send(Err(err()));
        }
        Job::Close(_) => {}
    }
}

/// Insert one message; a duplicate `client_msg_id` returns the stored one, an unknown
/// receiver or room is `NotFound`. `Err` only for failures that end the batch.
async fn insert(
    conn: &mut SqliteConnection,
    new: &Pending,
) -> Result<Result<Inserted, StoreError>, sqlx::Error> {
    let (receiver, room) = match new.target {
        Target::User(u) => (Some(u), None),
        Target::Room(r) => (None, Some(r)),
    };
    let sql = concat!(
        "INSERT INTO messages (sender_id, receiver_id, room_id, content, message_type, \
         client_msg_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING ",
        message_columns!()
    );
    let inserted = sqlx::query(sql)
        .bind(new.sender)
        .bind(receiver)
        .bind(room)
        .bind(&new.content)
        .bind(&new.message_type)
        .bind(new.client_msg_id.as_deref())
        .bind(new.at.0)
        .fetch_one(&mut *conn)
        .await;
    match inserted {
        Ok(row) => Ok(Ok(Inserted {
            message: message_from(&row)?,
            duplicate: false,
        })),
        Err(e) if is_unique_violation(&e) => {
            let sql = concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE sender_id = ? AND client_msg_id = ?"
            );
            let row = sqlx::query(sql)
                .bind(new.sender)
                .bind(new.client_msg_id.as_deref())
                .fetch_one(&mut *conn)
                .await?;
            Ok(Ok(Inserted {
                message: message_from(&row)?,
                duplicate: true,
            }))
        }
        Err(e) if is_foreign_key_violation(&e) => Ok(Err(StoreError::NotFound(match new.target {
            Target::User(_) => "user",
            Target::Room(_) => "room",
        }))),
        Err(e) => Err(e),
    }
}

async fn mark_delivered(
    conn: &mut SqliteConnection,
    ids: &[i64],
    at: Timestamp,
) -> Result<Vec<i64>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q: QueryBuilder<Sqlite> =
        QueryBuilder::new("UPDATE messages SET status = 'delivered', delivered_at = ");
    q.push_bind(at.0);
    q.push(" WHERE status = 'sent' AND receiver_id IS NOT NULL AND id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    q.push(") RETURNING id");
    let rows = q.build().fetch_all(&mut *conn).await?;
    sorted_ids(&rows)
}
