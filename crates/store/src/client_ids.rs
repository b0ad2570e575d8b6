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
//! How: the keys of committed messages wait in memory and are written in sweeps, a slice
//! per commit in key order ([`Unwritten`]), so a leaf takes a sweep period of its sender's
//! keys at once. A lookup reads memory, then the table. The recovery mark is
//! `client_msg_ids_written.below`.
//! PostgreSQL keeps an ordinary unique index: its commits do not rewrite whole pages.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::unwritten::{Table, Unwritten};

/// The table `client_msg_ids` and its mark (migration 0002).
static TABLE: Table = Table {
    mark: "client_msg_ids_written",
    catch_up: "INSERT OR REPLACE INTO client_msg_ids (sender_id, client_msg_id, id) \
               SELECT sender_id, client_msg_id, id FROM messages \
               WHERE id >= ?1 AND client_msg_id IS NOT NULL ORDER BY sender_id, client_msg_id",
    insert: "INSERT OR REPLACE INTO client_msg_ids (sender_id, client_msg_id, id) \
             VALUES (?1, ?2, ?3)",
};

/// The writer's side of the table: (sender, `clientMsgId`) keys not written yet.
pub(crate) struct ClientIds {
    keys: Unwritten<(i64, String)>,
}

impl ClientIds {
    /// Write the keys the last run left in memory ([`Unwritten::open`]).
    pub(crate) fn open(conn: &Connection, sweep_every: Duration) -> rusqlite::Result<Self> {
        Ok(ClientIds {
            keys: Unwritten::open(conn, &TABLE, sweep_every)?,
        })
    }

    /// The id of the message `sender` already sent with `client_msg_id`, if any.
    pub(crate) fn taken(
        &self,
        conn: &Connection,
        sender: i64,
        client_msg_id: &str,
    ) -> rusqlite::Result<Option<i64>> {
        if let Some(id) = self.keys.get(&(sender, client_msg_id.to_owned())) {
            return Ok(Some(id));
        }
        conn.prepare_cached(
            "SELECT id FROM client_msg_ids WHERE sender_id = ?1 AND client_msg_id = ?2",
        )?
        .query_row(params![sender, client_msg_id], |row| row.get(0))
        .optional()
    }

    /// `sender`'s message `id` carries `client_msg_id` (inserted by the batch being written).
    pub(crate) fn add(&mut self, sender: i64, client_msg_id: &str, id: i64) {
        self.keys.add((sender, client_msg_id.to_owned()), id);
    }

    /// Write the sweep's next slice in the batch's transaction; at the sweep's end, move
    /// the recovery mark.
    pub(crate) fn write_slice(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.keys.write_slice(conn, |insert, (sender, key), id| {
            insert.execute(params![sender, key, id]).map(drop)
        })
    }

    /// The batch ended (see [`Unwritten::settle`]).
    pub(crate) fn settle(&mut self, committed: bool) {
        self.keys.settle(committed);
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
            most = most.max(keys.keys.len());
        }
        assert!(most <= per_commit, "{most} keys waited at once");
        let (written, below): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM client_msg_ids), below FROM client_msg_ids_written",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!(written as usize + keys.keys.len(), commits * per_commit);
        let oldest_waiting = keys.keys.oldest();
        assert_eq!(
            below,
            oldest_waiting.unwrap_or(commits as i64 * per_commit as i64 + 1)
        );
    }
}
