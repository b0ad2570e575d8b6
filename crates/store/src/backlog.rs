//! The offline backlog on SQLite: which direct messages are still `sent` (not yet written
//! to a connection of their receiver), by receiver. The message writer keeps the table
//! `backlog` (migration 0003) instead of a partial index on `messages`.
//!
//! Why: almost every direct message is delivered within milliseconds, so the index
//! `messages_pending` put an entry on a leaf of its receiver's at the insert and took it
//! off again at the delivered mark: a random leaf rewritten twice per message, for a set
//! that is nearly empty. That was a tenth of the log's frames at 10k messages/s; without
//! it the log is a sixth smaller and the p99 0.81x at 5k messages/s (BENCHMARKS.md,
//! session 12).
//!
//! How: the key (receiver, id) of a new direct message waits in memory, and the delivered
//! mark takes it out again. A sweep starts every [`SWEEP_EVERY`](crate::sweep::SWEEP_EVERY)
//! and writes the keys that already waited when the previous sweep started (undelivered
//! for a period at least: the receiver is offline), a slice per commit in key order, as
//! the `clientMsgId`s are written ([`client_ids`](crate::client_ids)). A key leaves the
//! table through a trigger once its message stops being `sent`, whichever connection
//! marks it. A receiver's backlog is the table's keys and memory's, read by the writer
//! inside its batches.
//!
//! Recovery: `backlog_written.below` is an id below which every `sent` direct message has
//! its key in the table; a sweep moves it to its cutoff in its last commit. On start, and
//! after a batch that did not commit, memory is loaded again from the `sent` direct
//! messages from there on: a range of ids, about two sweep periods of messages.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use crate::Message;
use crate::rows::{message_columns, message_from_rusqlite};
use crate::sweep::{Sweep, slice_len};

/// (receiver, message id).
type Key = (i64, i64);

/// The writer's side of the table: the keys not written yet, and the sweep.
pub(crate) struct Backlog {
    /// Direct messages not delivered yet whose keys the table may not hold. Delivered and
    /// read marks go through the writer and take their keys out; a message whose status
    /// another connection changed stays here until the sweep finds it no longer `sent`,
    /// and readers check the status.
    waiting: BTreeSet<Key>,
    /// Memory may be behind the database (a batch did not commit): load it before use.
    stale: bool,
    /// The newest message id the writer knows of.
    newest: i64,
    /// Keys with a smaller id are written by the running sweep.
    cutoff: i64,
    /// The next sweep's cutoff: one past the newest id when the running one started.
    next_cutoff: i64,
    sweep: Sweep<Key>,
    /// Written (or found no longer `sent`) by the batch being committed: they leave
    /// `waiting` once it commits.
    swept: Vec<Key>,
    /// Keys the batch being committed added.
    added: usize,
}

impl Backlog {
    /// Load the keys the table may not hold (after `backlog_written.below`). A sweep
    /// starts at most every `sweep_every` ([`SWEEP_EVERY`](crate::sweep::SWEEP_EVERY) but
    /// in tests).
    pub(crate) fn open(conn: &Connection, sweep_every: Duration) -> rusqlite::Result<Self> {
        let mut backlog = Backlog {
            waiting: BTreeSet::new(),
            stale: true,
            newest: 0,
            cutoff: 0,
            next_cutoff: 0,
            sweep: Sweep::new(sweep_every),
            swept: Vec::new(),
            added: 0,
        };
        backlog.load(conn)?;
        Ok(backlog)
    }

    /// Memory again from the database, as `conn` sees it; the sweep starts over.
    fn load(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "SELECT receiver_id, id FROM messages \
             WHERE id >= (SELECT below FROM backlog_written) \
             AND status = 'sent' AND receiver_id IS NOT NULL",
        )?;
        self.waiting = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        self.newest = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM messages", [], |row| {
            row.get(0)
        })?;
        // Everything loaded is written by the next sweep. (Memory is stale only after a
        // batch that did not commit, which stopped the sweep.)
        self.next_cutoff = self.newest + 1;
        self.stale = false;
        Ok(())
    }

    /// Direct message `id` to `receiver` was inserted by the batch being written.
    pub(crate) fn add(&mut self, receiver: i64, id: i64) {
        self.waiting.insert((receiver, id));
        self.newest = self.newest.max(id);
        self.added += 1;
    }

    /// Direct message `id` to `receiver` was marked delivered (or read) by the batch being
    /// written.
    /// (The table's key, if it has one, goes with the message's status: see the trigger.)
    pub(crate) fn delivered(&mut self, receiver: i64, id: i64) {
        self.waiting.remove(&(receiver, id));
    }

    /// Up to `limit` direct messages to `receiver` still `sent`, oldest first.
    pub(crate) fn page(
        &mut self,
        conn: &Connection,
        receiver: i64,
        limit: u32,
    ) -> rusqlite::Result<Vec<Message>> {
        if self.stale {
            self.load(conn)?;
        }
        let mut page = conn
            .prepare_cached(concat!(
                "SELECT ",
                message_columns!(),
                // A walk along the receiver's keys that stops at `limit`.
                " FROM (SELECT id AS queued FROM backlog WHERE receiver_id = ?1) \
                 JOIN messages ON messages.id = queued WHERE status = 'sent' \
                 ORDER BY queued LIMIT ?2"
            ))?
            .query_map(rusqlite::params![receiver, limit], message_from_rusqlite)?
            .collect::<Result<Vec<_>, _>>()?;
        let mut by_id = conn.prepare_cached(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE id = ?1 AND status = 'sent'"
        ))?;
        let mut from_memory = 0;
        for &(_, id) in self
            .waiting
            .range((receiver, i64::MIN)..=(receiver, i64::MAX))
        {
            if from_memory == limit {
                break;
            }
            if let Some(m) = by_id.query_row([id], message_from_rusqlite).optional()? {
                page.push(m);
                from_memory += 1;
            }
        }
        // A key can be in both after a reload (a sweep that did not finish wrote it).
        page.sort_unstable_by_key(|m| m.id);
        page.dedup_by_key(|m| m.id);
        page.truncate(limit as usize);
        Ok(page)
    }

    /// Write the sweep's next slice in the batch's transaction (starting a sweep if one is
    /// due); at the sweep's end, move the recovery mark.
    pub(crate) fn write_slice(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.stale {
            // Inside the batch's transaction: its own inserts and marks are seen.
            self.load(conn)?;
        }
        if !self.sweep.running() {
            // Even with nothing waiting: the mark moves.
            if !self.sweep.start_if_due(true) {
                return Ok(());
            }
            self.cutoff = self.next_cutoff;
            self.next_cutoff = self.newest + 1;
        }
        // A message another connection moved on from `sent` meanwhile is not written.
        let mut write = conn.prepare_cached(
            "INSERT OR IGNORE INTO backlog (receiver_id, id) \
             SELECT receiver_id, id FROM messages WHERE id = ?1 AND status = 'sent'",
        )?;
        let slice = slice_len(self.added);
        let mut done = true;
        let mut passed = None;
        for key in self.waiting.range((self.sweep.from(), Bound::Unbounded)) {
            if key.1 >= self.cutoff {
                // Too young: still likely to be delivered before the next sweep.
                passed = Some(*key);
                continue;
            }
            if self.swept.len() == slice {
                done = false;
                break;
            }
            write.execute([key.1])?;
            self.swept.push(*key);
            passed = Some(*key);
        }
        if let Some(key) = passed {
            self.sweep.pass(key);
        }
        if done {
            // Every key below the cutoff is written now (none can arrive behind the cursor:
            // new ids are above it, and a reload restarts the sweep).
            conn.prepare_cached("UPDATE backlog_written SET below = ?1")?
                .execute([self.cutoff])?;
            self.sweep.finish();
        }
        Ok(())
    }

    /// The batch ended: if it committed, its swept keys leave memory; if not, memory is
    /// loaded again before its next use.
    pub(crate) fn settle(&mut self, committed: bool) {
        self.added = 0;
        self.sweep.settle(committed);
        if committed {
            for key in self.swept.drain(..) {
                self.waiting.remove(&key);
            }
        } else {
            self.swept.clear();
            self.stale = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Insert a direct message from user 1 to `receiver`, as the writer does.
    fn send(conn: &Connection, backlog: &mut Backlog, receiver: i64) -> i64 {
        conn.execute(
            "INSERT INTO messages (sender_id, receiver_id, content, created_at) \
             VALUES (1, ?1, 'x', 0)",
            [receiver],
        )
        .unwrap();
        let id = conn.last_insert_rowid();
        backlog.add(receiver, id);
        id
    }

    fn commit(conn: &mut Connection, backlog: &mut Backlog) {
        let tx = conn.transaction().unwrap();
        backlog.write_slice(&tx).unwrap();
        tx.commit().unwrap();
        backlog.settle(true);
    }

    fn ids(page: Vec<Message>) -> Vec<i64> {
        page.into_iter().map(|m| m.id).collect()
    }

    fn table(conn: &Connection) -> Vec<(i64, i64)> {
        conn.prepare("SELECT receiver_id, id FROM backlog ORDER BY receiver_id, id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Keys wait a sweep period before they are written; a page merges the table's keys
    /// with memory's in id order; a read mark by another connection removes the key from
    /// the table (trigger) and from every page (status), and the sweep does not write it.
    #[test]
    fn keys_move_to_the_table_after_a_period_and_pages_merge_both() {
        let mut conn = crate::migrations::migrated_in_memory();
        let mut backlog = Backlog::open(&conn, Duration::ZERO).unwrap();
        let old: Vec<i64> = (0..3).map(|_| send(&conn, &mut backlog, 2)).collect();
        let read = send(&conn, &mut backlog, 3);
        // The first sweep's cutoff is from before these keys: nothing is written yet.
        commit(&mut conn, &mut backlog);
        assert!(table(&conn).is_empty());
        assert_eq!(backlog.waiting.len(), 4);
        conn.execute("UPDATE messages SET status = 'read' WHERE id = ?1", [read])
            .unwrap();
        let young = send(&conn, &mut backlog, 2);
        // The second sweep writes what waited at the first one's start, except the read one.
        commit(&mut conn, &mut backlog);
        assert_eq!(
            table(&conn),
            old.iter().map(|&id| (2, id)).collect::<Vec<_>>()
        );
        assert_eq!(
            backlog.waiting.iter().copied().collect::<Vec<_>>(),
            [(2, young)]
        );
        let mut all = old.clone();
        all.push(young);
        assert_eq!(ids(backlog.page(&conn, 2, 10).unwrap()), all);
        assert_eq!(ids(backlog.page(&conn, 2, 2).unwrap()), old[..2]);
        assert!(backlog.page(&conn, 3, 10).unwrap().is_empty());

        // Delivered, from the table and from memory.
        conn.execute(
            "UPDATE messages SET status = 'delivered' WHERE id IN (?1, ?2)",
            [old[0], young],
        )
        .unwrap();
        backlog.delivered(2, young);
        assert_eq!(ids(backlog.page(&conn, 2, 10).unwrap()), old[1..]);
        assert_eq!(table(&conn), [(2, old[1]), (2, old[2])]);
        let below: i64 = conn
            .query_row("SELECT below FROM backlog_written", [], |row| row.get(0))
            .unwrap();
        assert_eq!(below, young, "the mark is the last sweep's cutoff");
    }

    /// Memory lost (a restart) or out of date (a batch rolled back) is loaded again from
    /// the recovery mark: no `sent` message is missing, none that rolled back is there.
    #[test]
    fn memory_is_loaded_again_after_a_restart_or_a_rollback() {
        let mut conn = crate::migrations::migrated_in_memory();
        let mut backlog = Backlog::open(&conn, Duration::from_secs(3600)).unwrap();
        let kept: Vec<i64> = (0..3).map(|_| send(&conn, &mut backlog, 2)).collect();
        commit(&mut conn, &mut backlog);
        assert!(table(&conn).is_empty(), "no sweep was due");

        let tx = conn.transaction().unwrap();
        let gone = send(&tx, &mut backlog, 2);
        backlog.delivered(2, kept[0]);
        tx.rollback().unwrap();
        backlog.settle(false);
        assert_eq!(ids(backlog.page(&conn, 2, 10).unwrap()), kept);
        assert!(!backlog.waiting.contains(&(2, gone)));

        drop(backlog);
        let mut reopened = Backlog::open(&conn, Duration::from_secs(3600)).unwrap();
        assert_eq!(ids(reopened.page(&conn, 2, 10).unwrap()), kept);
    }

    /// A saturated writer (every commit adds hundreds of keys for offline receivers, a sweep
    /// always due) writes keys as fast as they come: memory holds about two commits' worth.
    #[test]
    fn a_saturated_writer_keeps_up_with_its_backlog() {
        let mut conn = crate::migrations::migrated_in_memory();
        let mut backlog = Backlog::open(&conn, Duration::ZERO).unwrap();
        let (commits, per_commit) = (50usize, 256usize);
        let mut most = 0;
        for commit in 0..commits {
            let tx = conn.transaction().unwrap();
            for i in 0..per_commit {
                // Receivers alternate: keys land ahead of and behind the sweep's cursor.
                let receiver = if (commit * per_commit + i) % 2 == 0 {
                    2
                } else {
                    3
                };
                send(&tx, &mut backlog, receiver);
            }
            backlog.write_slice(&tx).unwrap();
            tx.commit().unwrap();
            backlog.settle(true);
            most = most.max(backlog.waiting.len());
        }
        assert!(most <= 3 * per_commit, "{most} keys waited at once");
        assert_eq!(
            table(&conn).len() + backlog.waiting.len(),
            commits * per_commit
        );
    }
}
