//! Direct-message history on SQLite: which messages a conversation holds, by (receiver,
//! sender, id). The message writer keeps the table `history` (migration 0005) a slice per
//! commit instead of the index `messages_direct` on `messages`.
//!
//! Why: as an index, every direct message put an entry on a leaf of its conversation's, a
//! random leaf per message; once the `clientMsgId`s and the backlog were out of the
//! B-trees it was 45 % of the log's frames at 10k messages/s (BENCHMARKS.md, session 14),
//! and the latency tail follows the log (session 9).
//!
//! How: the keys of committed direct messages wait in memory and are written in sweeps, a
//! slice per commit in key order ([`Unwritten`]), so a leaf takes a sweep period of a
//! conversation's keys at once. The recovery mark is `history_written.below`.
//!
//! Reads: the writer (read marks) merges its memory with the table. Other connections
//! ([`HISTORY_PAGE`]) read the table and `messages` from the mark on, in one statement so
//! in one snapshot. The messages past the mark, a sweep period or two of them
//! ([`HISTORY_SWEEP_EVERY`](crate::sweep::HISTORY_SWEEP_EVERY)), are a scan of the newest
//! rows that the index saved: a page of 50 took 1.5 to 5 ms past 20,000 of them (two
//! seconds at 10k messages/s; short rows, then the bench's), 0.1 ms with none
//! (BENCHMARKS.md, sessions 15 and 16).
//! PostgreSQL keeps an ordinary index: its commits do not rewrite whole pages.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::rows::message_columns;
use crate::unwritten::{Table, Unwritten};

/// The table `history` and its mark (migration 0005).
static TABLE: Table = Table {
    mark: "history_written",
    catch_up: "INSERT OR IGNORE INTO history (receiver_id, sender_id, id) \
               SELECT receiver_id, sender_id, id FROM messages \
               WHERE id >= ?1 AND receiver_id IS NOT NULL ORDER BY receiver_id, sender_id, id",
    insert: "INSERT OR IGNORE INTO history (receiver_id, sender_id, id) VALUES (?1, ?2, ?3)",
};

/// (receiver, sender, message id).
type Key = (i64, i64, i64);

/// The writer's side of the table: the keys not written yet.
pub(crate) struct History {
    keys: Unwritten<Key>,
}

impl History {
    /// Write the keys the last run left in memory ([`Unwritten::open`]).
    pub(crate) fn open(conn: &Connection, sweep_every: Duration) -> rusqlite::Result<Self> {
        Ok(History {
            keys: Unwritten::open(conn, &TABLE, sweep_every)?,
        })
    }

    /// Direct message `id` from `sender` to `receiver` was inserted by the batch being
    /// written.
    pub(crate) fn add(&mut self, receiver: i64, sender: i64, id: i64) {
        self.keys.add((receiver, sender, id), id);
    }

    /// Write the sweep's next slice in the batch's transaction; at the sweep's end, move
    /// the recovery mark.
    pub(crate) fn write_slice(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.keys
            .write_slice(conn, |insert, key, _| insert.execute(*key).map(drop))
    }

    /// The batch ended (see [`Unwritten::settle`]).
    pub(crate) fn settle(&mut self, committed: bool) {
        self.keys.settle(committed);
    }

    /// The oldest messages from `sender` to `reader` not read yet, `limit` at most,
    /// ascending: those after `after` (the last of a previous slice) when given, else after
    /// the newest one read.
    ///
    /// Only messages past the newest read one are looked at. A read mark takes every
    /// message of the direction, oldest first, and the writer commits ids in increasing
    /// order, so the read messages of a direction are always the ones up to some id: a walk
    /// down the direction's keys stops at the first read one it meets, and a mark costs the
    /// unread messages, not the whole history. (PostgreSQL, whose concurrent writers may
    /// commit ids out of order, has a partial index on unread messages instead.)
    pub(crate) fn unread(
        &self,
        conn: &Connection,
        reader: i64,
        sender: i64,
        after: Option<i64>,
        limit: usize,
    ) -> rusqlite::Result<Vec<i64>> {
        let after = match after {
            Some(id) => id,
            None => self.newest_read(conn, reader, sender)?,
        };
        let mut ids: Vec<i64> = conn
            .prepare_cached(UNREAD)?
            .query_map(params![reader, sender, after, limit as i64], |row| {
                row.get(0)
            })?
            .collect::<Result<_, _>>()?;
        let after = after.saturating_add(1);
        ids.extend(
            self.keys
                .range((reader, sender, after)..=(reader, sender, i64::MAX))
                .take(limit)
                .map(|&(_, _, id)| id),
        );
        // A key the batch being committed wrote is in both.
        ids.sort_unstable();
        ids.dedup();
        ids.truncate(limit);
        Ok(ids)
    }

    /// The newest message from `sender` to `reader` that is read (0: none).
    fn newest_read(&self, conn: &Connection, reader: i64, sender: i64) -> rusqlite::Result<i64> {
        // Memory holds a direction's newest keys (the table's are older, or in both).
        let mut is_read = conn.prepare_cached(IS_READ)?;
        for &(_, _, id) in self
            .keys
            .range((reader, sender, i64::MIN)..=(reader, sender, i64::MAX))
            .rev()
        {
            let read: Option<bool> = is_read.query_row([id], |row| row.get(0)).optional()?;
            if read == Some(true) {
                return Ok(id);
            }
        }
        let newest: Option<i64> = conn
            .prepare_cached(NEWEST_READ)?
            .query_row(params![reader, sender], |row| row.get(0))
            .optional()?;
        Ok(newest.unwrap_or(0))
    }
}

/// Whether message `?1` is read.
const IS_READ: &str = "SELECT status = 'read' FROM messages WHERE id = ?1";

/// The table's side of [`History::unread`]: `?1` reader, `?2` sender, `?3` after, `?4`
/// limit.
const UNREAD: &str = "SELECT id FROM history \
     WHERE receiver_id = ?1 AND sender_id = ?2 AND id > ?3 ORDER BY id LIMIT ?4";

/// The table's newest read message of a direction (`?1` reader, `?2` sender): a walk down
/// the direction's keys (CROSS JOIN keeps `history` the outer loop) that stops at the
/// first read one.
const NEWEST_READ: &str = "SELECT history.id FROM history \
     CROSS JOIN messages ON messages.id = history.id \
     WHERE history.receiver_id = ?1 AND history.sender_id = ?2 AND messages.status = 'read' \
     ORDER BY history.id DESC LIMIT 1";

/// A page of a direct conversation's history, newest first, for a connection other than
/// the writer's (`?1`, `?2` the two users, `?3` ids below this one, `?4` the page's size):
/// the newest of each direction's keys in the table, and the conversation's messages from
/// the mark on. Every id of the conversation below `?3` is in one of the three at least
/// (a key a sweep wrote past the mark is in two; `IN` takes it once).
pub(crate) const HISTORY_PAGE: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages WHERE id IN (\
         SELECT id FROM (SELECT id FROM history WHERE receiver_id = ?1 AND sender_id = ?2 \
             AND id < ?3 ORDER BY id DESC LIMIT ?4) \
         UNION ALL SELECT id FROM (SELECT id FROM history WHERE receiver_id = ?2 AND sender_id = ?1 \
             AND id < ?3 ORDER BY id DESC LIMIT ?4) \
         UNION ALL SELECT id FROM messages \
             WHERE id >= (SELECT below FROM history_written) AND id < ?3 \
             AND ((receiver_id = ?1 AND sender_id = ?2) OR (receiver_id = ?2 AND sender_id = ?1))) \
     ORDER BY id DESC LIMIT ?4"
);

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// Insert `n` direct messages from user 1 to user 2 in one commit, as the writer does
    /// (a sweep is due at every commit here); their ids.
    fn send(conn: &mut Connection, history: &mut History, n: usize) -> Vec<i64> {
        let tx = conn.transaction().unwrap();
        let mut ids = Vec::new();
        for _ in 0..n {
            tx.execute(
                "INSERT INTO messages (sender_id, receiver_id, content, created_at) \
                 VALUES (1, 2, 'x', 0)",
                [],
            )
            .unwrap();
            let id = tx.last_insert_rowid();
            history.add(2, 1, id);
            ids.push(id);
        }
        history.write_slice(&tx).unwrap();
        tx.commit().unwrap();
        history.settle(true);
        ids
    }

    fn mark_read(conn: &Connection, ids: &[i64]) {
        for id in ids {
            conn.execute("UPDATE messages SET status = 'read' WHERE id = ?1", [id])
                .unwrap();
        }
    }

    /// Steps of SQLite's virtual machine that `unread`'s statements took since the last
    /// call.
    fn steps(conn: &Connection) -> i32 {
        [IS_READ, UNREAD, NEWEST_READ]
            .iter()
            .map(|sql| {
                conn.prepare_cached(sql)
                    .unwrap()
                    .reset_status(StatementStatus::VmStep)
            })
            .sum()
    }

    /// A read mark's slice walks the unread messages of its direction, not the whole
    /// history, whether their keys are in the table or in memory: with 2,000 messages
    /// already read, finding the 3 new ones takes a few hundred steps of SQLite's virtual
    /// machine (a `status <> 'read'` filter over the direction took one pass over every
    /// message, over 10,000 steps). A slice after the first starts where the previous one
    /// ended instead of walking down over the unread messages again.
    #[test]
    fn unread_costs_the_unread_messages_not_the_history() {
        let mut conn = crate::migrations::migrated_in_memory();
        let mut history = History::open(&conn, Duration::ZERO).unwrap();
        let old = send(&mut conn, &mut history, 2000);
        assert_eq!(history.keys.len(), 0, "all 2,000 written in their commit");
        assert_eq!(history.unread(&conn, 2, 1, None, 5000).unwrap(), old);
        assert_eq!(
            history.unread(&conn, 1, 2, None, 5000).unwrap(),
            Vec::<i64>::new(),
            "other way"
        );
        mark_read(&conn, &old);
        steps(&conn);

        // In the table.
        let new = send(&mut conn, &mut history, 3);
        assert_eq!(history.keys.len(), 0);
        assert_eq!(history.unread(&conn, 2, 1, None, 1000).unwrap(), new);
        let taken = steps(&conn);
        assert!(taken < 500, "{taken} steps for 3 unread after 2,000 read");

        // In memory (a sweep writes a slice of 64 per commit at most here, once a sweep
        // has started: keep one running over keys of a conversation that sorts first).
        let mut history = History::open(&conn, Duration::from_secs(3600)).unwrap();
        let tx = conn.transaction().unwrap();
        let mut fresh = Vec::new();
        for _ in 0..3 {
            tx.execute(
                "INSERT INTO messages (sender_id, receiver_id, content, created_at) \
                 VALUES (1, 2, 'x', 0)",
                [],
            )
            .unwrap();
            fresh.push(tx.last_insert_rowid());
            history.add(2, 1, tx.last_insert_rowid());
        }
        tx.commit().unwrap();
        history.settle(true);
        assert_eq!(history.keys.len(), 3, "in memory");
        let unread: Vec<i64> = new.iter().chain(&fresh).copied().collect();
        assert_eq!(history.unread(&conn, 2, 1, None, 1000).unwrap(), unread);
        mark_read(&conn, &new);
        steps(&conn);
        assert_eq!(history.unread(&conn, 2, 1, None, 1000).unwrap(), fresh);
        let taken = steps(&conn);
        assert!(
            taken < 500,
            "{taken} steps for 3 unread in memory after 2,003 read"
        );
        mark_read(&conn, &fresh[..1]);
        assert_eq!(history.unread(&conn, 2, 1, None, 1000).unwrap(), fresh[1..]);

        // A later slice, from the previous slice's last id.
        mark_read(&conn, &fresh);
        let more = send(&mut conn, &mut history, 2000);
        steps(&conn);
        let slice = history.unread(&conn, 2, 1, Some(more[2]), 3).unwrap();
        assert_eq!(slice, more[3..6]);
        let taken = steps(&conn);
        assert!(taken < 500, "{taken} steps for a later slice of 3");
        assert_eq!(history.unread(&conn, 2, 1, None, 3).unwrap(), more[..3]);
    }
}
