//! The SQLite hot write path: one thread owns one connection and runs every message
//! insert and status change (delivered and read marks) that queued up while it ran the
//! previous batch, in one transaction that stays open over several batches (a group).
//!
//! Why one writer taking batches: SQLite has one writer at a time. Autocommit inserts from
//! several pooled connections serialise on the write lock (the losers sleep in SQLite's
//! busy handler, milliseconds at a time). One writer taking whatever is queued never waits
//! for the lock against itself, and keeps arrival order (ids are handed out in queue order,
//! so messages of one conversation stay in order).
//!
//! Why groups: every commit appends the pages it touched to the log again, and at 10k
//! messages/s a batch holds one or two messages, so a commit per batch wrote the table's
//! tail page (and its parents, and page 1) for every one or two messages. A group commits
//! at most every [`GROUP_EVERY`] (sooner when asked), so those pages go to the log once per
//! group. Each batch is answered as soon as it has run, before its group commits, so no
//! message waits for the group: the batch is first written to the redo log
//! ([`redo`](crate::redo)), from which a crashed process's next start, or a group that
//! failed to commit, runs it again. So "persisted before `message_sent`" still holds
//! against a crash of the process, as it did with `synchronous = NORMAL` commits; a power
//! cut loses the last moments, now up to a group more. A batch runs under a savepoint, so
//! that its failure undoes it alone. The pool's connections see only committed data:
//! their reads of messages first ask for a commit ([`Writer::flush`]), their writes have
//! the writer commit after every batch while they run ([`Writer::lend`]).
//!
//! Each commit also writes a slice of the `clientMsgId`s that wait in memory, in key
//! order ([`client_ids`](crate::client_ids)): as an index entry per message they cost a
//! log page each; a slice of a sweep over a period's keys writes a page per sender. The
//! offline backlog is kept the same way ([`backlog`](crate::backlog)): a direct message's
//! key waits in memory until its delivered mark, and only those undelivered after a
//! sweep period are written; so the backlog is read here too, between the batch's writes.
//! The direct history's keys go the same way as the `clientMsgId`s
//! ([`history`](crate::history)), and read marks merge them with the table here.
//!
//! Why a thread of its own (rusqlite) rather than an sqlx connection: sqlx runs each
//! SQLite connection on a worker thread and every statement is a round trip to it (a
//! channel send, a wake-up, a reply and a wake-up back), which profiled at about a third
//! of the server's CPU under chat load, three times SQLite's own share. Here a batch costs
//! one hand-off each way: the runtime queues jobs without waking anything but a sleeping
//! writer, the writer runs the whole batch on its own thread, and sends every answer back
//! in one message to a small task on the runtime that completes the callers (waking
//! tasks from inside the runtime is cheap; waking each from another thread is a syscall).
//!
//! Why checkpoints mostly on a thread of their own: by default the connection that commits
//! runs the WAL checkpoint once the log passes 1000 pages, copying pages into the database
//! file and fsyncing it, which stalled the writer every few batches and was the largest
//! single cost of a message. Here a checkpointer thread runs passive checkpoints (which
//! never block the writer) once [`CHECKPOINT_AFTER`] operations have committed, at most
//! every [`CHECKPOINT_EVERY`], so a hot page written by many batches is copied once, and
//! `fsync`s the database file after each (SQLite itself syncs it only once a checkpoint
//! has copied the whole log).
//! Not after every commit: once a checkpoint has copied the whole log, the writer's next
//! commit rewinds it, and SQLite then `fsync`s the log's new header before writing the
//! commit (a reordered write after a rewind could corrupt the database otherwise). A
//! checkpoint per commit at a low message rate put that `fsync` (1 to 10 ms here, more on
//! a busy disk) in front of every other message and its room fan-out.
//!
//! Rewinding the log under load: SQLite only rewinds the log from its start when a write
//! begins with every frame copied, which a checkpoint running alongside a busy writer
//! never achieves, and a log that only grows makes every append allocate new file pages.
//! So once the log passes half of [`LOG_LIMIT`], the checkpointer asks the writer to run
//! one passive checkpoint itself between two batches, right after the checkpointer's own
//! pass: it copies only what committed since, and the `fsync`s the writer then waits for
//! (the log, the database, the rewound log's header) find little left to write. Until
//! session 6 the writer's automatic checkpoint at the limit did this, after the log had
//! grown for seconds: those `fsync`s wrote everything since the last rewind (the database
//! file's pages were never synced before), tens of milliseconds on a shared virtual disk
//! while every message queued behind the writer waited. The automatic checkpoint at
//! [`LOG_LIMIT`] remains as a backstop (a reader that held on to the log throughout).
//!
//! The writer's connection writes the log through [`wal_batch`](crate::wal_batch), one
//! `pwrite` per 64 KiB of a commit instead of two per page.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use tokio::sync::{mpsc, oneshot};

use crate::backlog::Backlog;
use crate::client_ids::ClientIds;
use crate::history::History;
use crate::redo::{Op, RedoLog, Row};
use crate::{Inserted, Message, NewMessage, Status, StoreError, Target, Timestamp};

/// Most rows (messages inserted or marked) one transaction takes jobs for: bounds the
/// time a batch holds the write lock.
const BATCH: usize = 256;

/// Least time between two checkpoints: bounds their cost (and the log's growth: about
/// this long's worth of commits). Measured at 10k messages/s (BENCHMARKS.md, sessions 9
/// and 10): 20 to 100 ms spread the tail evenly at twice the checkpointer's CPU, 1 to 2 s
/// made the p99 1.5 to 4 times worse (each pass then syncs seconds of log at once).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Operations committed between two checkpoints (at least). A checkpoint that copies
/// everything makes the writer rewind the log at its next commit, and a rewind waits for
/// an `fsync` of the log's new header (see the module doc): checkpointing after every
/// commit put that `fsync` in front of every other message at 10 messages/s. Under load
/// this many operations commit within milliseconds, so [`CHECKPOINT_EVERY`] paces them
/// as before; at low rates the log holds a few MiB at most before it is copied.
const CHECKPOINT_AFTER: usize = 256;

/// Longest a group (one transaction over several batches, each answered before it
/// commits: see the module doc) stays open. Commits 5 or 10 ms apart wrote 2.3 times less
/// log than a commit per batch at 10k messages/s and took the p99 from 3.4 to 1.6 ms on the
/// bench host (BENCHMARKS.md, session 18); a power cut may lose this much more than
/// `synchronous = NORMAL` lost before.
const GROUP_EVERY: Duration = Duration::from_millis(5);

/// Log size (bytes) at which the writer checkpoints itself (SQLite's automatic
/// checkpoint), so that the log restarts: a backstop. Normally the log is rewound at half
/// this size (see [`Checkpointer::pass`]).
const LOG_LIMIT: u64 = 128 << 20;

/// What tests change about the writer.
pub(crate) struct Limits {
    /// Log size (bytes) at which the writer rewinds the log ([`LOG_LIMIT`]).
    pub log_limit: u64,
    /// Least time between two checkpoints ([`CHECKPOINT_EVERY`]). A test that shrinks
    /// `log_limit` shrinks this with it: the log grows by about this long's worth of
    /// commits past the checkpointer's rewind threshold.
    pub checkpoint_every: Duration,
    /// Time between two sweeps over the keys waiting in memory
    /// ([`SWEEP_EVERY`](crate::sweep::SWEEP_EVERY)).
    pub sweep_every: Duration,
    /// The same for the direct history
    /// ([`HISTORY_SWEEP_EVERY`](crate::sweep::HISTORY_SWEEP_EVERY)).
    pub history_sweep_every: Duration,
    /// Longest a group stays open ([`GROUP_EVERY`]).
    pub group_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            log_limit: LOG_LIMIT,
            checkpoint_every: CHECKPOINT_EVERY,
            sweep_every: crate::sweep::SWEEP_EVERY,
            history_sweep_every: crate::sweep::HISTORY_SWEEP_EVERY,
            group_every: GROUP_EVERY,
        }
    }
}

/// A message to insert, owned so it can cross to the writer thread.
struct Pending {
    sender: i64,
    target: Target,
    content: String,
    message_type: String,
    client_msg_id: Option<String>,
    at: Timestamp,
}

impl From<NewMessage<'_>> for Pending {
    fn from(new: NewMessage<'_>) -> Self {
        Pending {
            sender: new.sender,
            target: new.target,
            content: new.content.to_owned(),
            message_type: new.message_type.to_owned(),
            client_msg_id: new.client_msg_id.map(str::to_owned),
            at: new.at,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

impl<'a> From<&'a Pending> for Row<'a> {
    fn from(p: &'a Pending) -> Self {
        let (receiver, room) = columns(p.target);
        Row {
            sender: p.sender,
            receiver,
            room,
            content: p.content.as_str().into(),
            message_type: p.message_type.as_str().into(),
            client_msg_id: p.client_msg_id.as_deref().map(Into::into),
            at: p.at.0,
        }
    }
}

/// A redo log's op as the job it was, its answer going nowhere: what it answered is what
/// running it again gives.
impl From<Op<'_>> for Job {
    fn from(op: Op<'_>) -> Self {
        match op {
            Op::Insert(rows) => {
                let new = rows
                    .into_iter()
                    .map(|row| Pending {
                        sender: row.sender,
                        target: match (row.receiver, row.room) {
                            (_, Some(room)) => Target::Room(room),
                            (receiver, None) => Target::User(receiver.unwrap_or_default()),
                        },
                        content: row.content.into_owned(),
                        message_type: row.message_type.into_owned(),
                        client_msg_id: row.client_msg_id.map(|c| c.into_owned()),
                        at: Timestamp(row.at),
                    })
                    .collect();
                Job::Insert(new, oneshot::channel().0)
            }
            Op::Delivered(ids, at) => {
                Job::Mark(Mark::Delivered(ids, Timestamp(at)), oneshot::channel().0)
            }
            Op::Read {
                reader,
                sender,
                at,
                after,
            } => Job::Mark(
                Mark::Read {
                    reader,
                    sender,
                    at: Timestamp(at),
                    after,
                },
                oneshot::channel().0,
            ),
        }
    }
}
/// One outcome per message of an insert job.
type Inserts = Vec<Result<Inserted, StoreError>>;

enum Job {
    /// Messages in order (a connection's burst, or one message): one job, one answer.
    Insert(Vec<Pending>, oneshot::Sender<Inserts>),
    /// A status change; answers the ids it changed, ascending.
    Mark(Mark, Reply<Vec<i64>>),
    /// A page of a receiver's backlog: (receiver, limit).
    Backlog(i64, u32, Reply<Vec<Message>>),
    /// Commit the open group, then answer.
    Flush(Reply<()>),
    /// Finish what is queued, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// The status changes of direct messages, written by the writer like its inserts (a
/// pooled connection would take the write lock from under the writer's batches, and each
/// would sleep in SQLite's busy handler while the other held it).
enum Mark {
    /// These messages were written to a connection of their receiver.
    Delivered(Vec<i64>, Timestamp),
    /// `reader` read what `sender` sent them: the next slice of it, after the message id
    /// `after` (the previous slice's last) when given ([`History::unread`]).
    Read {
        reader: i64,
        sender: i64,
        at: Timestamp,
        after: Option<i64>,
    },
}

/// Handle to the writer thread. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    /// A std channel: the writer waits on it with a timeout while a group is open.
    /// Unbounded is fine: every sender awaits its reply, so the queue holds at most one job
    /// per waiting caller.
    jobs: std_mpsc::Sender<Job>,
    /// Writes on pooled connections under way ([`Writer::lend`]).
    lent: Arc<AtomicUsize>,
}

/// A write on a pooled connection is under way while this lives ([`Writer::lend`]).
pub(crate) struct Lent(Arc<AtomicUsize>);

impl Drop for Lent {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn stopped() -> StoreError {
    StoreError::Database("the message writer has stopped".into())
}

fn db_error(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// A connection to the database file at `path` (whose schema is already migrated), with
/// the pool's settings (see `SqliteStore::open`; WAL is a property of the file);
/// `batched`: through [`wal_batch`](crate::wal_batch).
fn open(path: &Path, batched: bool) -> Result<Connection, StoreError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    // sqlx names a `sqlite::memory:` database `file:sqlx-in-memory-<n>` and shares its
    // cache between connections; join that same in-memory database.
    let memory = path.to_string_lossy().starts_with("file:sqlx-in-memory-");
    if memory {
        flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
    }
    let conn = if batched && !memory && crate::wal_batch::register() {
        Connection::open_with_flags_and_vfs(path, flags, crate::wal_batch::NAME)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(db_error)?;
    conn.busy_timeout(Duration::from_secs(5))
        .and_then(|_| conn.pragma_update(None, "foreign_keys", true))
        .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
        .map_err(db_error)?;
    Ok(conn)
}

fn spawn(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<thread::JoinHandle<()>, StoreError> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| StoreError::Database(format!("cannot start the {name} thread: {e}")))
}

/// The checkpointer thread's connection and what it needs to prepare a rewind.
struct Checkpointer {
    conn: Connection,
    /// The database file, to `fsync` after each checkpoint (`None` in memory).
    db: Option<std::fs::File>,
    /// Log frames past which the writer is asked to finish the checkpoint.
    rewind_frames: i64,
    /// Set to ask the writer for it (see [`Checkpointer::pass`]).
    rewind: Arc<AtomicBool>,
    /// Least time between two passes ([`CHECKPOINT_EVERY`]).
    every: Duration,
}

impl Checkpointer {
    /// Per nudge: a passive checkpoint (which never blocks the writer) and an `fsync` of
    /// the database file; at most every `every` ([`CHECKPOINT_EVERY`]). Ends when the
    /// writer does.
    fn run(self, nudged: std_mpsc::Receiver<()>) {
        while nudged.recv().is_ok() {
            self.pass();
            thread::sleep(self.every);
        }
    }

    fn pass(&self) {
        let log = match checkpoint(&self.conn, "PASSIVE") {
            Ok((_, log, _)) => log,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed");
                return;
            }
        };
        // SQLite syncs the database file only when a checkpoint has copied the whole
        // log, which beside a busy writer happens at the rewind: the pages copied by
        // every pass before it would all be written out then, while the writer waits.
        // Written out here instead, a little at a time, off the writer's path.
        if let Some(db) = &self.db
            && let Err(e) = db.sync_data()
        {
            tracing::warn!(error = %e, "cannot sync the database file");
        }
        // Beside a busy writer a checkpoint never copies the whole log (more commits
        // arrive meanwhile), so the log is never rewound. The writer finishes the job
        // between two of its batches, right after this pass: it copies only what
        // committed since, and the `fsync`s it waits for (log, database, then the
        // rewound log's header) find little left to write, where at the log limit they
        // wrote everything since the last pass.
        if log >= self.rewind_frames {
            self.rewind.store(true, Ordering::Release);
        }
    }
}

/// `(busy, log frames, checkpointed frames)` of one `wal_checkpoint` on `conn`.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
    })
}

impl Writer {
    /// Open the writer's own connection to the database file at `path` (whose schema is
    /// already migrated), run again what an earlier process answered but did not commit
    /// ([`redo`](crate::redo)), and start its thread. Needs a Tokio runtime.
    pub(crate) fn start(path: &Path, limits: &Limits) -> Result<Self, StoreError> {
        let conn = open(path, true)?;
        // The writer runs some two dozen distinct statements (three insert sizes, the
        // marks, the backlog's pages, three sweeps, a read mark's three, `BEGIN`,
        // `COMMIT` and the savepoints); rusqlite's default cache of 16 would parse some
        // again whenever they mix. (The checkpointer's connection, also from `open`,
        // needs no cache.)
        conn.set_prepared_statement_cache_capacity(32);
        let file = conn.path().filter(|f| !f.is_empty()).map(Path::new);
        let redo = RedoLog::open(file)
            .map_err(|e| StoreError::Database(format!("cannot open the redo log: {e}")))?;
        let committed: i64 = conn
            .query_row("SELECT seq FROM redo_group", [], |row| row.get(0))
            .map_err(db_error)?;
        // Checkpoints are mostly the checkpointer's (see the module doc).
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .map_err(db_error)?;
        let pages = i64::try_from(limits.log_limit).unwrap_or(i64::MAX) / page_size.max(512);
        let pages = pages.clamp(16, i64::from(i32::MAX));
        conn.pragma_update(None, "wal_autocheckpoint", pages)
            .map_err(db_error)?;
        let checkpointer = open(path, false)?;
        let db = match checkpointer.path() {
            Some(file) if !file.is_empty() => Some(
                std::fs::File::open(file)
                    .map_err(|e| StoreError::Database(format!("cannot open {file}: {e}")))?,
            ),
            _ => None,
        };
        let rewind = Arc::new(AtomicBool::new(false));
        let checkpointer = Checkpointer {
            conn: checkpointer,
            db,
            rewind_frames: pages / 2,
            rewind: Arc::clone(&rewind),
            every: limits.checkpoint_every,
        };
        let (answers, answers_rx) = mpsc::unbounded_channel();
        let (nudge, nudged) = std_mpsc::sync_channel(1);
        let lent = Arc::new(AtomicUsize::new(0));
        let mut thread = Thread {
            kept: Kept::open(&conn, limits.sweep_every, limits.history_sweep_every)?,
            conn,
            sweep_every: (limits.sweep_every, limits.history_sweep_every),
            group: Group {
                since: None,
                number: committed + 1,
                every: limits.group_every,
            },
            redo,
            answers,
            checkpoint: nudge,
            checkpointer: None,
            rewind,
            lent: Arc::clone(&lent),
            lost: false,
        };
        thread.redo()?;
        thread.checkpointer = Some(spawn("sqlite-checkpoint", move || {
            checkpointer.run(nudged)
        })?);
        let (jobs, rx) = std_mpsc::channel();
        tokio::spawn(answer(answers_rx));
        spawn("sqlite-writer", move || thread.run(&rx))?;
        Ok(Writer { jobs, lent })
    }

    async fn call<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(job(reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Commit what the writer has answered, so that the pool's connections see it: their
    /// reads of messages call this first.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        self.call(Job::Flush).await
    }

    /// Before a write on a pooled connection: the writer commits its group and, until
    /// the guard is dropped, commits after every batch. Otherwise, under load, one group
    /// follows another and the pool's connection would find the write lock taken each time
    /// SQLite's busy handler tries again; between single batches it is free most of the time.
    pub(crate) async fn lend(&self) -> Result<Lent, StoreError> {
        self.lent.fetch_add(1, Ordering::AcqRel);
        let lent = Lent(Arc::clone(&self.lent));
        self.flush().await?;
        Ok(lent)
    }

    pub(crate) async fn insert(&self, new: NewMessage<'_>) -> Result<Inserted, StoreError> {
        self.insert_many(vec![new])
            .await
            .pop()
            .unwrap_or_else(|| Err(stopped()))
    }

    /// Insert `new` in order, in one job (so in one transaction unless the batch is full).
    pub(crate) async fn insert_many(&self, new: Vec<NewMessage<'_>>) -> Inserts {
        let count = new.len();
        let all_stopped = || (0..count).map(|_| Err(stopped())).collect();
        let (reply, answer) = oneshot::channel();
        let job = Job::Insert(new.into_iter().map(Pending::from).collect(), reply);
        if self.jobs.send(job).is_err() {
            return all_stopped();
        }
        answer.await.unwrap_or_else(|_| all_stopped())
    }

    pub(crate) async fn mark_delivered(
        &self,
        ids: Vec<i64>,
        at: Timestamp,
    ) -> Result<Vec<i64>, StoreError> {
        self.call(|reply| Job::Mark(Mark::Delivered(ids, at), reply))
            .await
    }

    /// Mark every direct message from `sender` to `reader` read, a job per
    /// [`READ_SLICE`]; returns their ids, ascending. A mark that fails after a slice has
    /// committed returns [`StoreError::ReadCutShort`] with what it marked (the rest stays
    /// unread for the next mark), so that the sender still hears of those.
    pub(crate) async fn mark_read(
        &self,
        reader: i64,
        sender: i64,
        at: Timestamp,
    ) -> Result<Vec<i64>, StoreError> {
        let mut read: Vec<i64> = Vec::new();
        loop {
            let after = read.last().copied();
            let mark = Mark::Read {
                reader,
                sender,
                at,
                after,
            };
            match self.call(|reply| Job::Mark(mark, reply)).await {
                Ok(slice) => {
                    let done = slice.len() < READ_SLICE;
                    read.extend(slice);
                    if done {
                        return Ok(read);
                    }
                }
                Err(e) if read.is_empty() => return Err(e),
                // The slices before stay committed: their receipts are owed all the same.
                Err(e) => {
                    return Err(StoreError::ReadCutShort {
                        read,
                        cause: e.to_string(),
                    });
                }
            }
        }
    }

    /// Up to `limit` direct messages to `receiver` not delivered yet, oldest first.
    pub(crate) async fn backlog(
        &self,
        receiver: i64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        self.call(|reply| Job::Backlog(receiver, limit, reply))
            .await
    }

    /// Commit what is queued and close the connection; later calls fail.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

/// The writer thread's state.
struct Thread {
    conn: Connection,
    kept: Kept,
    /// `(sweep_every, history_sweep_every)`, to load [`Kept`] again after a lost group.
    sweep_every: (Duration, Duration),
    group: Group,
    redo: RedoLog,
    answers: mpsc::UnboundedSender<Vec<Done>>,
    /// Nudges the checkpointer.
    checkpoint: std_mpsc::SyncSender<()>,
    /// The checkpointer's thread, which ends once `checkpoint` is dropped.
    checkpointer: Option<thread::JoinHandle<()>>,
    /// Set by the checkpointer to ask for a rewind (see [`Checkpointer::pass`]).
    rewind: Arc<AtomicBool>,
    /// Writes on pooled connections under way ([`Writer::lend`]).
    lent: Arc<AtomicUsize>,
    /// A group could neither commit nor be run again: the writer stops (its callers see
    /// `stopped()`), and the redo log keeps the group for the next start.
    lost: bool,
}

/// One transaction over several batches.
struct Group {
    /// When the open group began; `None`: none is open.
    since: Option<Instant>,
    /// The open (or next) group's number: one above the last committed one's.
    number: i64,
    /// Longest a group stays open ([`GROUP_EVERY`]).
    every: Duration,
}

impl Thread {
    /// Take whatever is queued (up to [`BATCH`]), run it in the open group and answer it;
    /// commit the group when it is old enough, or asked to; until closed or every handle is
    /// gone, or a group can neither commit nor be run again.
    fn run(mut self, rx: &std_mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(BATCH);
        let mut flushes = Vec::new();
        let mut closing = None;
        // Operations run since the checkpointer was last nudged.
        let mut uncheckpointed = 0;
        while closing.is_none() && !self.lost {
            let first = match self.group.since {
                None => rx.recv().ok(),
                Some(since) => {
                    match rx.recv_timeout(self.group.every.saturating_sub(since.elapsed())) {
                        Ok(job) => Some(job),
                        Err(std_mpsc::RecvTimeoutError::Timeout) => {
                            let _ = self.finish();
                            continue;
                        }
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => None,
                    }
                }
            };
            let Some(first) = first else {
                break;
            };
            // Flushes wait for the group's commit below; the rest is the batch.
            let mut rows = 0;
            let mut next = Some(first);
            while let Some(job) = next {
                match job {
                    Job::Flush(reply) => flushes.push(reply),
                    job => {
                        rows += job.rows();
                        jobs.push(job);
                    }
                }
                next = if rows < BATCH {
                    rx.try_recv().ok()
                } else {
                    None
                };
            }
            if let Some(at) = jobs.iter().position(|j| matches!(j, Job::Close(_))) {
                // Jobs queued after the close are dropped: their callers see `stopped()`.
                if let Job::Close(done) = jobs.swap_remove(at) {
                    closing = Some(done);
                }
                jobs.truncate(at);
            }
            if !jobs.is_empty() {
                uncheckpointed += jobs.len();
                let done = self.batch(&mut jobs);
                if let Err(mpsc::error::SendError(done)) = self.answers.send(done) {
                    // The runtime is gone; answer from here rather than drop the callers.
                    done.into_iter().for_each(Done::send);
                }
            }
            let rewind = self.rewind.swap(false, Ordering::Acquire);
            if rewind
                || !flushes.is_empty()
                || closing.is_some()
                || self.lent.load(Ordering::Acquire) > 0
                || self
                    .group
                    .since
                    .is_some_and(|t| t.elapsed() >= self.group.every)
            {
                let finished = if self.lost {
                    Err(stopped())
                } else {
                    self.finish()
                };
                for reply in flushes.drain(..) {
                    let _ = reply.send(
                        finished
                            .as_ref()
                            .map_err(|e| StoreError::Database(e.to_string()))
                            .copied(),
                    );
                }
            }
            // After the answers: the callers' wake-ups go first.
            if uncheckpointed >= CHECKPOINT_AFTER {
                uncheckpointed = 0;
                // Full: a checkpoint is already due.
                let _ = self.checkpoint.try_send(());
            }
            if rewind && self.group.since.is_none() {
                // Passive: on the only writer's connection between batches it copies the
                // whole log (unless a reader still uses it), so the next commit rewinds.
                if let Err(e) = checkpoint(&self.conn, "PASSIVE") {
                    tracing::warn!(error = %e, "WAL checkpoint before a rewind failed");
                }
            }
        }
        if !self.lost {
            let _ = self.finish();
        }
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "closing the message writer's connection failed");
        }
        // The checkpointer's connection closes before the close is answered (within a pass
        // and a pause of it), so that the pool's last connection, closed next, is the
        // database's last: SQLite then copies the whole log into the file and removes it.
        drop(self.checkpoint);
        if let Some(checkpointer) = self.checkpointer.take()
            && checkpointer.join().is_err()
        {
            tracing::warn!("the checkpointer thread panicked");
        }
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Run `jobs` in the open group (opening one if needed), under a savepoint so that a
    /// failure undoes this batch only, and write them to the redo log before they are
    /// answered; one outcome per job.
    fn batch(&mut self, jobs: &mut Vec<Job>) -> Vec<Done> {
        if self.group.since.is_none() {
            if let Err(e) = begin(&self.conn) {
                let e = e.to_string();
                tracing::error!(error = %e, count = jobs.len(), "cannot begin a message batch");
                return jobs.drain(..).filter_map(|job| fail(job, &e)).collect();
            }
            self.group.since = Some(Instant::now());
        }
        // Before they run: running consumes them. (A batch of backlog reads has none.)
        let ops: Vec<Op<'_>> = jobs.iter().filter_map(Job::op).collect();
        let record = (!ops.is_empty()).then(|| RedoLog::record(self.group.number, &ops));
        drop(ops);
        if let Err(e) = statement(&self.conn, "SAVEPOINT batch") {
            let e = e.to_string();
            tracing::error!(error = %e, count = jobs.len(), "cannot begin a message batch");
            return jobs.drain(..).filter_map(|job| fail(job, &e)).collect();
        }
        let (done, mut fatal) = run_jobs(&self.conn, jobs, &mut self.kept);
        if fatal.is_none()
            && let Some(record) = &record
            && let Err(e) = self.redo.append(record)
        {
            fatal = Some(format!("cannot write the redo log: {e}"));
        }
        let failed = match fatal {
            None => statement(&self.conn, "RELEASE batch")
                .err()
                .map(|e| e.to_string()),
            Some(e) => Some(e),
        };
        let Some(e) = failed else {
            self.kept.settle(true);
            return done;
        };
        tracing::error!(error = %e, count = done.len(), "message batch not committed");
        if self.conn.is_autocommit() {
            // The failure ended the whole transaction: the group's earlier batches, already
            // answered, are undone with it. Run them again from the redo log.
            self.group.since = None;
            let _ = self.redo_lost();
        } else {
            let undone = statement(&self.conn, "ROLLBACK TO batch")
                .and_then(|()| statement(&self.conn, "RELEASE batch"));
            if let Err(e) = undone {
                tracing::error!(error = %e, "cannot undo a failed batch");
            }
            self.kept.settle(false);
        }
        done.into_iter().map(|d| d.failed(&e)).collect()
    }

    /// Commit the open group, if any. If the commit fails, the group is run again from the
    /// redo log and committed; `Err` if that fails too (the writer then stops: the redo log
    /// still holds the group for the next start).
    fn finish(&mut self) -> Result<(), StoreError> {
        if self.group.since.take().is_none() {
            return Ok(());
        }
        match close_group(&self.conn, self.group.number) {
            Ok(()) => {
                self.group.number += 1;
                self.redo.restart();
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, group = self.group.number, "a group did not commit");
                self.redo_lost()
            }
        }
    }

    /// After a group was rolled back whole: memory as the database now has it, then the
    /// group again. If that fails, the writer stops ([`Thread::lost`]).
    fn redo_lost(&mut self) -> Result<(), StoreError> {
        rollback(&self.conn);
        let (sweep_every, history_sweep_every) = self.sweep_every;
        let redone = Kept::open(&self.conn, sweep_every, history_sweep_every)
            .map(|kept| self.kept = kept)
            .and_then(|()| self.redo());
        if let Err(e) = &redone {
            tracing::error!(error = %e, group = self.group.number, "a lost group could not be run again: the message writer stops");
            self.lost = true;
        }
        redone
    }

    /// Run the redo log's records of the next group, as a group, and commit it: on start,
    /// what a crashed process answered; after a lost group, that group.
    fn redo(&mut self) -> Result<(), StoreError> {
        let number = self.group.number;
        let records = self
            .redo
            .read(number)
            .map_err(|e| StoreError::Database(format!("cannot read the redo log: {e}")))?;
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len();
        begin(&self.conn).map_err(db_error)?;
        for ops in records {
            let mut jobs: Vec<Job> = ops.into_iter().map(Job::from).collect();
            let (_, fatal) = run_jobs(&self.conn, &mut jobs, &mut self.kept);
            self.kept.settle(fatal.is_none());
            if let Some(e) = fatal {
                rollback(&self.conn);
                return Err(StoreError::Database(format!(
                    "cannot run the redo log's group {number} again: {e}"
                )));
            }
        }
        close_group(&self.conn, number).map_err(db_error)?;
        tracing::info!(
            group = number,
            batches = count,
            "answered writes run again from the redo log"
        );
        self.group.number += 1;
        self.redo.restart();
        Ok(())
    }
}

/// Record group `number` as committed, in its own transaction, and commit it.
fn close_group(conn: &Connection, number: i64) -> rusqlite::Result<()> {
    let marked = conn
        .prepare_cached("UPDATE redo_group SET seq = ?1")
        .and_then(|mut stmt| stmt.execute([number]));
    match marked {
        Ok(_) => end(conn),
        Err(e) => {
            rollback(conn);
            Err(e)
        }
    }
}

/// A statement without parameters or rows, from the statement cache.
fn statement(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs on the runtime: completes the callers of each committed batch.
async fn answer(mut batches: mpsc::UnboundedReceiver<Vec<Done>>) {
    while let Some(batch) = batches.recv().await {
        batch.into_iter().for_each(Done::send);
    }
}

impl Job {
    /// What the redo log keeps of the job: nothing of a read.
    fn op(&self) -> Option<Op<'_>> {
        match self {
            Job::Insert(new, _) => Some(Op::Insert(new.iter().map(Row::from).collect())),
            Job::Mark(Mark::Delivered(ids, at), _) => Some(Op::Delivered(ids.clone(), at.0)),
            &Job::Mark(
                Mark::Read {
                    reader,
                    sender,
                    at,
                    after,
                },
                _,
            ) => Some(Op::Read {
                reader,
                sender,
                at: at.0,
                after,
            }),
            Job::Backlog(..) | Job::Flush(_) | Job::Close(_) => None,
        }
    }

    /// Rows the job writes (a close counts as one).
    fn rows(&self) -> usize {
        match self {
            Job::Insert(new, _) => new.len(),
            Job::Mark(Mark::Delivered(ids, _), _) => ids.len(),
            Job::Mark(Mark::Read { .. }, _) => READ_SLICE,
            Job::Backlog(..) | Job::Flush(_) | Job::Close(_) => 1,
        }
    }
}

/// One outcome per job, sent only once the batch is committed (or has failed).
enum Done {
    Insert(Inserts, oneshot::Sender<Inserts>),
    Marked(Result<Vec<i64>, StoreError>, Reply<Vec<i64>>),
    Backlog(Result<Vec<Message>, StoreError>, Reply<Vec<Message>>),
}

impl Done {
    fn send(self) {
        match self {
            Done::Insert(r, reply) => {
                let _ = reply.send(r);
            }
            Done::Marked(r, reply) => {
                let _ = reply.send(r);
            }
            Done::Backlog(r, reply) => {
                let _ = reply.send(r);
            }
        }
    }

    /// The batch was not committed: a success becomes this error.
    fn failed(self, e: &str) -> Done {
        let fail = || StoreError::Database(e.to_owned());
        match self {
            Done::Insert(results, reply) => Done::Insert(
                results
                    .into_iter()
                    .map(|r| r.and_then(|_| Err(fail())))
                    .collect(),
                reply,
            ),
            Done::Marked(Ok(_), reply) => Done::Marked(Err(fail()), reply),
            // It saw the batch's own writes, which are undone.
            Done::Backlog(Ok(_), reply) => Done::Backlog(Err(fail()), reply),
            other => other,
        }
    }
}

/// What the writer keeps in memory for the tables it writes a slice per commit.
struct Kept {
    client_ids: ClientIds,
    backlog: Backlog,
    history: History,
}

impl Kept {
    /// Memory as the database file has it.
    fn open(
        conn: &Connection,
        sweep_every: Duration,
        history_sweep_every: Duration,
    ) -> Result<Self, StoreError> {
        Ok(Kept {
            client_ids: ClientIds::open(conn, sweep_every).map_err(db_error)?,
            backlog: Backlog::open(conn, sweep_every).map_err(db_error)?,
            history: History::open(conn, history_sweep_every).map_err(db_error)?,
        })
    }

    /// The batch's writes stay (`true`) or were undone.
    fn settle(&mut self, kept: bool) {
        self.client_ids.settle(kept);
        self.backlog.settle(kept);
        self.history.settle(kept);
    }

    /// Message `id` was inserted by the batch being written.
    fn added(&mut self, id: i64, new: &Pending) {
        if let Some(key) = &new.client_msg_id {
            self.client_ids.add(new.sender, key, id);
        }
        if let Target::User(receiver) = new.target {
            self.backlog.add(receiver, id);
            self.history.add(receiver, new.sender, id);
        }
    }
}

/// Run `jobs` in the open transaction, then the slices the kept keys are written in; one
/// outcome per job, and the failure that ends the batch, if any.
fn run_jobs(
    conn: &Connection,
    jobs: &mut Vec<Job>,
    kept: &mut Kept,
) -> (Vec<Done>, Option<String>) {
    let mut done = Vec::with_capacity(jobs.len());
    let mut fatal: Option<String> = None;
    for job in jobs.drain(..) {
        if let Some(e) = &fatal {
            done.extend(fail(job, e));
            continue;
        }
        // A constraint failure only undoes its own statement in SQLite; anything else may
        // have ended the transaction, so the rest of the batch is failed, not run outside it.
        match job {
            Job::Insert(new, reply) => {
                let results = insert_job(conn, kept, new, &mut fatal);
                done.push(Done::Insert(results, reply));
            }
            Job::Mark(mark, reply) => match apply(conn, kept, mark) {
                Ok(changed) => done.push(Done::Marked(Ok(changed), reply)),
                Err(e) => {
                    fatal = Some(e.to_string());
                    done.push(Done::Marked(Err(db_error(e)), reply));
                }
            },
            Job::Backlog(receiver, limit, reply) => {
                match kept.backlog.page(conn, receiver, limit) {
                    Ok(page) => done.push(Done::Backlog(Ok(page), reply)),
                    Err(e) => {
                        fatal = Some(e.to_string());
                        done.push(Done::Backlog(Err(db_error(e)), reply));
                    }
                }
            }
            Job::Flush(_) | Job::Close(_) => {
                unreachable!("flush and close jobs are taken out of the batch")
            }
        }
    }
    if fatal.is_none()
        && let Err(e) = kept
            .client_ids
            .write_slice(conn)
            .and_then(|()| kept.backlog.write_slice(conn))
            .and_then(|()| kept.history.write_slice(conn))
    {
        fatal = Some(e.to_string());
    }
    (done, fatal)
}

/// `BEGIN IMMEDIATE` from the statement cache. rusqlite's `Transaction` runs `BEGIN` and
/// `COMMIT` through `execute_batch`, which parses them again for every batch: a few per
/// cent of the writer's time at 10k messages/s, where a batch holds one or two messages.
/// IMMEDIATE: take the write lock up front (pooled connections write rarely, e.g. new
/// accounts, rooms), so no statement of the batch can hit a lock upgrade deadlock.
fn begin(conn: &Connection) -> rusqlite::Result<()> {
    conn.prepare_cached("BEGIN IMMEDIATE")?
        .execute([])
        .map(drop)
}

/// `COMMIT` from the statement cache; if it fails, what is still open is rolled back.
fn end(conn: &Connection) -> rusqlite::Result<()> {
    let committed = conn.prepare_cached("COMMIT")?.execute([]).map(drop);
    if committed.is_err() {
        rollback(conn);
    }
    committed
}

fn rollback(conn: &Connection) {
    // Nothing to undo if SQLite already ended the transaction (after some errors it does).
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

fn fail(job: Job, e: &str) -> Option<Done> {
    let err = || StoreError::Database(e.to_owned());
    match job {
        Job::Insert(new, reply) => Some(Done::Insert(
            new.iter().map(|_| Err(err())).collect(),
            reply,
        )),
        Job::Mark(_, reply) => Some(Done::Marked(Err(err()), reply)),
        Job::Backlog(_, _, reply) => Some(Done::Backlog(Err(err()), reply)),
        // Taken out of every batch before it runs.
        Job::Flush(_) | Job::Close(_) => None,
    }
}

/// Rows per multi-row INSERT, largest first: a job's rows go in statements of these sizes.
const CHUNKS: [usize; 3] = [16, 4, 1];

/// Columns of one inserted row (parameters per row of [`insert_sql`]).
const COLUMNS: usize = 7;

/// The INSERT of `rows` messages (one of [`CHUNKS`]); built once per size.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: LazyLock<Vec<String>> = LazyLock::new(|| {
        (0..=CHUNKS[0])
            .map(|rows| {
                let values = vec!["(?, ?, ?, ?, ?, ?, ?)"; rows.max(1)].join(", ");
                format!(
                    "INSERT INTO messages (sender_id, receiver_id, room_id, content, \
                     message_type, client_msg_id, created_at) VALUES {values}"
                )
            })
            .collect()
    });
    &SQL[rows.min(CHUNKS[0])]
}

/// Insert a job's messages in order: [`CHUNKS`]-sized multi-row statements (one statement
/// runs for many rows: the per-statement work was about a third of a row's cost), and one
/// by one for a chunk with a repeated `clientMsgId` or one a constraint refused (an unknown
/// receiver), which SQLite undoes whole. A failure that ends the batch is put in `fatal`.
fn insert_job(
    conn: &Connection,
    kept: &mut Kept,
    new: Vec<Pending>,
    fatal: &mut Option<String>,
) -> Inserts {
    let mut results = Vec::with_capacity(new.len());
    let mut left = new.len();
    let mut new = new.into_iter();
    while left > 0 {
        let size = CHUNKS.into_iter().find(|&k| k <= left).unwrap_or(1);
        let chunk: Vec<Pending> = new.by_ref().take(size).collect();
        left -= chunk.len();
        if size > 1 && fatal.is_none() {
            match insert_rows(conn, kept, &chunk) {
                Ok(Some(first)) => {
                    results.extend((first..).zip(chunk).map(|(id, p)| Ok(inserted(id, p))));
                    continue;
                }
                Ok(None) => {}
                Err(e) => *fatal = Some(e.to_string()),
            }
        }
        for p in chunk {
            if let Some(e) = fatal {
                results.push(Err(StoreError::Database(e.clone())));
                continue;
            }
            match insert(conn, kept, p) {
                Ok(r) => results.push(r),
                Err(e) => {
                    *fatal = Some(e.to_string());
                    results.push(Err(db_error(e)));
                }
            }
        }
    }
    results
}

/// Insert `rows` with one statement; the first row's id (the others follow it: a new row's
/// id is one above the largest, and nothing else writes meanwhile), or `None`
/// if one of them repeats a `clientMsgId` or a constraint refused the statement (then none
/// of it was written).
fn insert_rows(
    conn: &Connection,
    kept: &mut Kept,
    rows: &[Pending],
) -> Result<Option<i64>, rusqlite::Error> {
    for (i, p) in rows.iter().enumerate() {
        if let Some(key) = &p.client_msg_id {
            let again = rows[..i]
                .iter()
                .any(|q| q.sender == p.sender && q.client_msg_id.as_ref() == Some(key));
            if again || kept.client_ids.taken(conn, p.sender, key)?.is_some() {
                return Ok(None);
            }
        }
    }
    let mut stmt = conn.prepare_cached(insert_sql(rows.len()))?;
    for (i, p) in rows.iter().enumerate() {
        let (receiver, room) = columns(p.target);
        let at = i * COLUMNS;
        stmt.raw_bind_parameter(at + 1, p.sender)?;
        stmt.raw_bind_parameter(at + 2, receiver)?;
        stmt.raw_bind_parameter(at + 3, room)?;
        stmt.raw_bind_parameter(at + 4, &p.content)?;
        stmt.raw_bind_parameter(at + 5, &p.message_type)?;
        stmt.raw_bind_parameter(at + 6, &p.client_msg_id)?;
        stmt.raw_bind_parameter(at + 7, p.at.0)?;
    }
    let first = match stmt.raw_execute() {
        Ok(n) if n == rows.len() => conn.last_insert_rowid() - n as i64 + 1,
        Ok(n) => return Err(rusqlite::Error::StatementChangedRows(n)),
        Err(e) if constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => return Ok(None),
        Err(e) => return Err(e),
    };
    for (id, p) in (first..).zip(rows) {
        kept.added(id, p);
    }
    Ok(Some(first))
}

/// `(receiver_id, room_id)` of a target.
fn columns(target: Target) -> (Option<i64>, Option<i64>) {
    match target {
        Target::User(u) => (Some(u), None),
        Target::Room(r) => (None, Some(r)),
    }
}

/// The stored row of a new message: every column is known, no RETURNING row to decode.
fn inserted(id: i64, new: Pending) -> Inserted {
    let (receiver_id, room_id) = columns(new.target);
    Inserted {
        message: Message {
            id,
            sender_id: new.sender,
            receiver_id,
            room_id,
            content: new.content,
            message_type: new.message_type,
            client_msg_id: new.client_msg_id,
            status: Status::Sent,
            created_at: new.at,
            delivered_at: None,
            read_at: None,
        },
        duplicate: false,
    }
}

fn constraint(e: &rusqlite::Error, extended: std::os::raw::c_int) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation && f.extended_code == extended)
}

/// Insert one message; a repeated `client_msg_id` returns the stored one, an unknown
/// receiver or room is `NotFound`. `Err` only for failures that end the batch.
fn insert(
    conn: &Connection,
    kept: &mut Kept,
    new: Pending,
) -> Result<Result<Inserted, StoreError>, rusqlite::Error> {
    if let Some(key) = &new.client_msg_id
        && let Some(id) = kept.client_ids.taken(conn, new.sender, key)?
        && let Some(message) = stored(conn, id)?
    {
        return Ok(Ok(Inserted {
            message,
            duplicate: true,
        }));
    }
    let (receiver, room) = columns(new.target);
    let mut stmt = conn.prepare_cached(insert_sql(1))?;
    let executed = stmt.execute(params![
        new.sender,
        receiver,
        room,
        new.content,
        new.message_type,
        new.client_msg_id,
        new.at.0
    ]);
    match executed {
        Ok(_) => {
            let id = conn.last_insert_rowid();
            kept.added(id, &new);
            Ok(Ok(inserted(id, new)))
        }
        Err(e) if constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
            Ok(Err(StoreError::NotFound(match new.target {
                Target::User(_) => "user",
                Target::Room(_) => "room",
            })))
        }
        Err(e) => Err(e),
    }
}

/// The stored message `id`, if it is still there.
fn stored(conn: &Connection, id: i64) -> Result<Option<Message>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        crate::rows::message_columns!(),
        " FROM messages WHERE id = ?"
    ))?;
    stmt.query_row([id], crate::rows::message_from_rusqlite)
        .optional()
}

/// Apply a status change; returns the ids that changed, ascending.
fn apply(conn: &Connection, kept: &mut Kept, mark: Mark) -> rusqlite::Result<Vec<i64>> {
    match mark {
        Mark::Delivered(ids, at) => mark_delivered(conn, &mut kept.backlog, &ids, at),
        Mark::Read {
            reader,
            sender,
            at,
            after,
        } => {
            // A slice of the direction's unread messages ([`READ_SLICE`]): later slices
            // start from the previous one's last id instead of looking for it again.
            let unread = kept
                .history
                .unread(conn, reader, sender, after, READ_SLICE)?;
            let mut stmt = conn.prepare_cached(
                "UPDATE messages SET status = 'read', read_at = ?1, \
                 delivered_at = COALESCE(delivered_at, ?1) \
                 WHERE id IN (SELECT value FROM json_each(?2)) AND status <> 'read' \
                 RETURNING id",
            )?;
            let mut read = stmt
                .query_map(params![at.0, json_ids(&unread)], |row| {
                    let id = row.get(0)?;
                    // Its key, if still in memory, is no longer waiting.
                    kept.backlog.delivered(reader, id);
                    Ok(id)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            read.sort_unstable();
            Ok(read)
        }
    }
}

/// Most messages one read-mark job marks: a mark of a long history is a job per slice, so
/// the inserts queued meanwhile are committed between slices, not after the whole mark
/// (100,000 messages in one statement held the writer 0.2 to 0.4 s).
const READ_SLICE: usize = 1000;

/// `ids` as a JSON array, for `json_each`: one statement for a whole list of ids (a
/// statement per id spent more on running a statement, binding, cursors, finishing, than
/// on the row it changed).
fn json_ids(ids: &[i64]) -> String {
    use std::fmt::Write;
    let mut list = String::with_capacity(ids.len() * 8 + 2);
    list.push('[');
    for (i, id) in ids.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(list, "{sep}{id}");
    }
    list.push(']');
    list
}

/// Mark direct messages still `sent` delivered; returns the ids that changed, ascending.
fn mark_delivered(
    conn: &Connection,
    backlog: &mut Backlog,
    ids: &[i64],
    at: Timestamp,
) -> Result<Vec<i64>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "UPDATE messages SET status = 'delivered', delivered_at = ?1 \
         WHERE id IN (SELECT value FROM json_each(?2)) \
         AND status = 'sent' AND receiver_id IS NOT NULL RETURNING id, receiver_id",
    )?;
    let mut changed = stmt
        .query_map(params![at.0, json_ids(ids)], |row| {
            let id = row.get(0)?;
            backlog.delivered(row.get(1)?, id);
            Ok(id)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    changed.sort_unstable();
    changed.dedup();
    Ok(changed)
}
