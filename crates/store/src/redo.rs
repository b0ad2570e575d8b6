//! The message writer's redo log: what the writer has answered but not yet committed.
//!
//! Why: the writer keeps one transaction open across its batches for a few milliseconds
//! (a *group*, see [`sqlite_writer`](crate::sqlite_writer)) and answers each batch before
//! the group commits. A commit per batch rewrote the table's tail page, its parents and
//! page 1 into SQLite's log for every one or two messages: at 10k messages/s that log was
//! 2.5 times the bytes of a grouped one, and on a virtual machine whose host charges disk
//! flushes to the guest's CPUs, those bytes were what kept the p99 above 2 ms
//! (BENCHMARKS.md, session 18). The answered batches must still survive a crash of the
//! process, so each is written here first: one `write` of one record, no `fsync` (SQLite's
//! commits in `synchronous = NORMAL` were not synced either; a power cut loses the last
//! moments, as before, but never leaves a half-applied batch).
//!
//! How: the file `<database>-redo` holds the records of the open group only, from offset 0.
//! A record is `[length u32][crc32 u32][group i64][ops as JSON]` (little-endian; the CRC
//! covers the group and the ops). The group's number goes into the table `redo_group` in
//! the group's own transaction, so the database says which group committed last. On
//! start, and when a group's transaction fails, the records of the next group are run
//! again, in order, by the same code that ran them first: they start from the same state,
//! so they get the same ids. Whatever follows them in the file (an older, longer group's
//! records; a torn write) fails the CRC or names another group, and is ignored.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bytes before a record's JSON: length, CRC, group.
const HEADER: usize = 16;

/// One write the writer answered, as it is run again.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum Op<'a> {
    /// A job's messages, in order.
    Insert(Vec<Row<'a>>),
    /// A delivered mark: ids, time (ms).
    Delivered(Vec<i64>, i64),
    /// A slice of a read mark.
    Read {
        reader: i64,
        sender: i64,
        at: i64,
        after: Option<i64>,
    },
}

/// A new message, as the writer got it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Row<'a> {
    pub sender: i64,
    /// Receiver (direct message) or room: exactly one is set.
    pub receiver: Option<i64>,
    pub room: Option<i64>,
    pub content: Cow<'a, str>,
    pub message_type: Cow<'a, str>,
    pub client_msg_id: Option<Cow<'a, str>>,
    pub at: i64,
}

/// The redo log of one database file (none for an in-memory database).
pub(crate) struct RedoLog {
    file: Option<File>,
    /// Where the next record goes.
    end: u64,
}

impl RedoLog {
    /// The log beside the database file `db` (`None`: in memory, nothing to redo).
    pub(crate) fn open(db: Option<&Path>) -> io::Result<Self> {
        let file = match db {
            Some(db) => Some(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path(db))?,
            ),
            None => None,
        };
        Ok(RedoLog { file, end: 0 })
    }

    /// The records of `group` from the start of the file, each a batch's ops.
    pub(crate) fn read(&self, group: i64) -> io::Result<Vec<Vec<Op<'static>>>> {
        let Some(file) = &self.file else {
            return Ok(Vec::new());
        };
        let size = file.metadata()?.len();
        let mut records = Vec::new();
        let mut at = 0u64;
        let mut header = [0u8; HEADER];
        loop {
            match file.read_exact_at(&mut header, at) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let len = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default()) as usize;
            let crc = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default());
            let of = i64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
            // Another group's record, or a length past the end (a damaged one).
            if of != group || at + (HEADER + len) as u64 > size {
                break;
            }
            let mut body = vec![0u8; len];
            file.read_exact_at(&mut body, at + HEADER as u64)?;
            if checksum(group, &body) != crc {
                break;
            }
            match serde_json::from_slice(&body) {
                Ok(ops) => records.push(ops),
                Err(_) => break,
            }
            at += (HEADER + len) as u64;
        }
        Ok(records)
    }

    /// One batch's `ops` as a record of `group`, to [`append`](Self::append) once the
    /// batch has run (its jobs are consumed by running them).
    pub(crate) fn record(group: i64, ops: &[Op<'_>]) -> Vec<u8> {
        let mut record = vec![0u8; HEADER];
        // Plain data: serialising it cannot fail.
        let _ = serde_json::to_writer(&mut record, ops);
        let len = u32::try_from(record.len() - HEADER).unwrap_or(u32::MAX);
        let crc = checksum(group, &record[HEADER..]);
        record[0..4].copy_from_slice(&len.to_le_bytes());
        record[4..8].copy_from_slice(&crc.to_le_bytes());
        record[8..16].copy_from_slice(&group.to_le_bytes());
        record
    }

    /// Write `record` after the group's others: one `write`, no sync.
    pub(crate) fn append(&mut self, record: &[u8]) -> io::Result<()> {
        if let Some(file) = &self.file {
            file.write_all_at(record, self.end)?;
        }
        self.end += record.len() as u64;
        Ok(())
    }

    /// The group committed: the next one's records start at the beginning again. Nothing
    /// is erased: the old records name a group that has committed.
    pub(crate) fn restart(&mut self) {
        self.end = 0;
    }
}

/// `<database>-redo`.
fn path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-redo");
    PathBuf::from(name)
}

fn checksum(group: i64, body: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&group.to_le_bytes());
    crc.update(body);
    crc.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(content: &str) -> Row<'_> {
        Row {
            sender: 1,
            receiver: Some(2),
            room: None,
            content: Cow::Borrowed(content),
            message_type: Cow::Borrowed("text"),
            client_msg_id: Some(Cow::Borrowed("c1")),
            at: 1_700_000_000_000,
        }
    }

    fn owned(ops: &[Op<'_>]) -> Vec<Op<'static>> {
        serde_json::from_slice(&serde_json::to_vec(ops).unwrap()).unwrap()
    }

    #[test]
    fn records_of_the_group_come_back_in_order_and_nothing_else() {
        let dir = tempfile_dir();
        let db = dir.join("chat.db");
        let mut log = RedoLog::open(Some(&db)).unwrap();
        // Group 7: three records, the last longer than what group 8 will write over it.
        let long = "x".repeat(500);
        let seven = [
            vec![Op::Insert(vec![row("a"), row("b")])],
            vec![Op::Delivered(vec![1, 2], 5)],
            vec![Op::Insert(vec![row(&long)])],
        ];
        for ops in &seven {
            log.append(&RedoLog::record(7, ops)).unwrap();
        }
        assert_eq!(
            log.read(7).unwrap(),
            seven.iter().map(|o| owned(o)).collect::<Vec<_>>()
        );
        assert!(log.read(8).unwrap().is_empty(), "no record of group 8 yet");

        log.restart();
        let eight = vec![Op::Read {
            reader: 2,
            sender: 1,
            at: 9,
            after: None,
        }];
        log.append(&RedoLog::record(8, &eight)).unwrap();
        // Group 7's leftovers follow group 8's record in the file: ignored.
        assert_eq!(log.read(8).unwrap(), vec![owned(&eight)]);
        // Group 7's first records were written over: nothing of it reads back whole.
        assert!(log.read(7).unwrap().is_empty());

        // A torn record: the body damaged after the header was written.
        log.append(&RedoLog::record(8, &[Op::Delivered(vec![3], 6)]))
            .unwrap();
        let file = OpenOptions::new().write(true).open(path(&db)).unwrap();
        let second = RedoLog::record(8, &eight).len() as u64;
        file.write_all_at(b"#", second + HEADER as u64 + 2).unwrap();
        assert_eq!(
            log.read(8).unwrap(),
            vec![owned(&eight)],
            "the torn one is cut off"
        );
        // A record cut short by the end of the file (its length runs past it).
        file.set_len(second + HEADER as u64 + 1).unwrap();
        assert_eq!(
            log.read(8).unwrap(),
            vec![owned(&eight)],
            "the short one is cut off"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_in_memory_database_has_nothing_to_redo() {
        let mut log = RedoLog::open(None).unwrap();
        log.append(&RedoLog::record(1, &[Op::Delivered(vec![1], 1)]))
            .unwrap();
        assert!(log.read(1).unwrap().is_empty());
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sb-redo-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
