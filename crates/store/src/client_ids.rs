//! Idempotent sends on SQLite: which message a sender's `clientMsgId` already names.
//! The message writer keeps the table `client_msg_ids` (migration 0002) a slice per
//! commit instead of an index entry per message.
//!
//! Why: as a unique index on `messages`, every message put an entry on a leaf of its
//! sender's, and every commit appends each leaf it dirtied to the log, which the
//! checkpointer copies again. At 10k messages/s from 1000 senders that was 1.2 log pages
//! per message, the largest share of the log (BENCHMARKS.md, session 11), and the latency
//! tail follows the log (session 9).
//!
//! How: the keys of committed messages wait in memory, sorted. A sweep over them starts
//! every [`SWEEP_EVERY`](crate::sweep::SWEEP_EVERY), and each commit writes the next
//! [slice](crate::sweep::slice_len) of the sweep in key order, so a leaf takes about a
//! second of its sender's keys at once. A lookup reads memory, then the table.
//!
//! Recovery: `client_msg_ids_written.below` is an id below which every message's key is in
//! the table. It is moved at the end of each sweep, in the sweep's last commit, to the
//! oldest key still in memory. On start the writer writes the keys of the messages from
//! there on, which covers whatever memory held when the process stopped.
//! PostgreSQL keeps an ordinary unique index: its commits do not rewrite whole pages.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::sweep::{Sweep, slice_len};

type Key = (i64, String);

/// The writer's side of the table: the keys not written yet, and the sweep.
pub(crate) struct ClientIds {
    /// (sender, `clientMsgId`) → message id, not yet in the table.
    waiting: BTreeMap<Key, i64>,
    sweep: Sweep<Key>,
    /// Written by the batch being committed: they leave `waiting` once it commits.
    written: Vec<Key>,
    /// The first id the batch being committed added: its keys go if it does not commit
    /// (its ids will be handed out again).
    added_from: Option<i64>,
    /// Keys the batch being committed added.
    added: usize,
}

impl ClientIds {
    /// Write the keys the last run left in memory (after `client_msg_ids_written.below`).
    /// A sweep starts at most every `sweep_every`
    /// ([`SWEEP_EVERY`](crate::sweep::SWEEP_EVERY) but in tests).
    pub(crate) fn open(conn: &Connection, sweep_every: Duration) -> rusqlite::Result<Self> {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT OR REPLACE INTO client_msg_ids (sender_id, client_msg_id, id)
                 SELECT sender_id, client_msg_id, id FROM messages
                 WHERE id >= (SELECT below FROM client_msg_ids_written)
                 AND client_msg_id IS NOT NULL
                 ORDER BY sender_id, client_msg_id;
             UPDATE client_msg_ids_written SET below = (SELECT COALESCE(MAX(id), 0) + 1 FROM messages);
             COMMIT;",
        )?;
        Ok(ClientIds {
            waiting: BTreeMap::new(),
            sweep: Sweep::new(sweep_every),
            written: Vec::new(),
            added_from: None,
            added: 0,
        })
    }

    /// The id of the message `sender` already sent with `client_msg_id`, if any.
    pub(crate) fn taken(
        &self,
        conn: &Connection,
        sender: i64,
        client_msg_id: &str,
    ) -> rusqlite::Result<Option<i64>> {
        if let Some(id) = self.waiting.get(&(sender, client_msg_id.to_owned())) {
            return Ok(Some(*id));
        }
        conn.prepare_cached(
            "SELECT id FROM client_msg_ids WHERE sender_id = ?1 AND client_msg_id = ?2",
        )?
        .query_row(params![sender, client_msg_id], |row| row.get(0))
        .optional()
    }

    /// `sender`'s message `id` carries `client_msg_id` (inserted by the batch being written).
    pub(crate) fn add(&mut self, sender: i64, client_msg_id: &str, id: i64) {
        self.waiting.insert((sender, client_msg_id.to_owned()), id);
        self.added_from.get_or_insert(id);
        self.added += 1;
    }

    /// Write the sweep's next slice in the batch's transaction (starting a sweep if one is
    /// due); at the sweep's end, move the recovery mark.
    pub(crate) fn write_slice(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if !self.sweep.running() && !self.sweep.start_if_due(!self.waiting.is_empty()) {
            return Ok(());
        }
        let mut insert = conn.prepare_cached(
            "INSERT OR REPLACE INTO client_msg_ids (sender_id, client_msg_id, id) \
             VALUES (?1, ?2, ?3)",
        )?;
        let slice = slice_len(self.added);
        let from = self.sweep.from();
        for ((sender, key), id) in self.waiting.range::<Key, _>((from, Bound::Unbounded)) {
            if self.written.len() == slice {
                break;
            }
            insert.execute(params![sender, key, id])?;
            self.written.push((*sender, key.clone()));
        }
        if self.written.len() < slice {
            // The sweep is done: every key past its cursor is written now, so what still
            // waits was added behind the cursor meanwhile; the oldest of those is the mark.
            let left = match self.sweep.cursor() {
                Some(key) => self
                    .waiting
                    .range::<Key, _>(..=key)
                    .map(|(_, id)| *id)
                    .min(),
                None => None,
            };
            conn.prepare_cached(
                "UPDATE client_msg_ids_written \
                 SET below = COALESCE(?1, (SELECT COALESCE(MAX(id), 0) + 1 FROM messages))",
            )?
            .execute([left])?;
            self.sweep.finish();
        }
        if let Some(last) = self.written.last() {
            self.sweep.pass(last.clone());
        }
        Ok(())
    }

    /// The batch ended: if it committed, its written keys leave memory; if not, its added
    /// keys go and its slice is written again.
    pub(crate) fn settle(&mut self, committed: bool) {
        let added_from = self.added_from.take();
        self.added = 0;
        self.sweep.settle(committed);
        if committed {
            for key in self.written.drain(..) {
                self.waiting.remove(&key);
            }
            return;
        }
        self.written.clear();
        if let Some(first) = added_from {
            self.waiting.retain(|_, id| *id < first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A saturated writer (every commit adds hundreds of keys, a sweep always due) writes
    /// keys as fast as they come: memory never holds more than one commit's worth, and the
    /// mark follows.
    #[test]
    fn a_saturated_writer_keeps_up_with_its_keys() {
        let mut conn = crate::migrations::migrated_in_memory();
        let mut keys = ClientIds::open(&conn, Duration::ZERO).unwrap();
        let (commits, per_commit) = (50, 256);
        let mut most = 0;
        for commit in 0..commits {
            let tx = conn.transaction().unwrap();
            for i in 0..per_commit {
                // "k10" sorts before "k2": keys land both ahead of and behind the sweep.
                let key = format!("k{}", commit * per_commit + i);
                tx.execute(
                    "INSERT INTO messages (sender_id, receiver_id, content, client_msg_id, \
                     created_at) VALUES (1, 1, 'x', ?1, 0)",
                    [&key],
                )
                .unwrap();
                keys.add(1, &key, tx.last_insert_rowid());
            }
            keys.write_slice(&tx).unwrap();
            tx.commit().unwrap();
            keys.settle(true);
            most = most.max(keys.waiting.len());
        }
        assert!(most <= per_commit, "{most} keys waited at once");
        let (written, below): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM client_msg_ids), below FROM client_msg_ids_written",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(written as usize + keys.waiting.len(), commits * per_commit);
        let oldest_waiting = keys.waiting.values().min().copied();
        assert_eq!(
            below,
            oldest_waiting.unwrap_or(commits as i64 * per_commit as i64 + 1)
        );
    }
}
