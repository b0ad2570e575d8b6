//! Keys of committed messages that wait in memory until a sweep writes them to their
//! table: what the `clientMsgId`s ([`client_ids`](crate::client_ids)) and the direct
//! history ([`history`](crate::history)) share.
//!
//! Why: as an index entry per message, every message puts a key on a leaf of its own
//! (its sender's, its conversation's), and every commit appends each leaf it dirtied to
//! the log, which the checkpointer copies again. Written a slice per commit in key order,
//! one sweep a period ([`sweep`](crate::sweep)), a leaf takes about a period of its keys
//! at once (BENCHMARKS.md, sessions 11, 15 and 16).
//!
//! Recovery: each table has a mark, an id below which every message's key is in the table.
//! A sweep's last commit moves it to the oldest key still in memory. On start
//! [`Unwritten::open`] writes the keys of the messages from the mark on, which covers
//! whatever memory held when the process stopped. So a reader that sees the table and the
//! mark in one snapshot finds every key in the table or its message in `messages` from the
//! mark on.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::time::Duration;

use rusqlite::{Connection, Statement, Transaction, TransactionBehavior};

use crate::sweep::{Sweep, slice_len};

/// The SQL of the table an [`Unwritten`] writes.
pub(crate) struct Table {
    /// The table of the recovery mark: `below`, in its one row.
    pub(crate) mark: &'static str,
    /// Writes the keys of the messages from id `?1` on (at start: what memory held when
    /// the process stopped).
    pub(crate) catch_up: &'static str,
    /// Writes one key (bound by [`Unwritten::write_slice`]'s caller).
    pub(crate) insert: &'static str,
}

/// The keys not written yet (each with its message's id), and the sweep over them.
pub(crate) struct Unwritten<K> {
    table: &'static Table,
    /// Sets the mark: `?1` the oldest id still waiting, or NULL when none is (one past
    /// the newest message).
    set_mark: String,
    waiting: BTreeMap<K, i64>,
    sweep: Sweep<K>,
    /// Written by the batch being committed: they leave `waiting` once it commits.
    written: Vec<K>,
    /// The first id the batch being committed added: its keys go if it does not commit
    /// (its ids will be handed out again).
    added_from: Option<i64>,
    /// Keys the batch being committed added.
    added: usize,
}

impl<K: Ord + Clone> Unwritten<K> {
    /// Write the keys the last run left in memory (from `table`'s mark on) and move the
    /// mark past the newest message: nothing waits then. A sweep starts at most every
    /// `sweep_every` (a [`sweep`](crate::sweep) period but in tests).
    pub(crate) fn open(
        conn: &Connection,
        table: &'static Table,
        sweep_every: Duration,
    ) -> rusqlite::Result<Self> {
        let set_mark = format!(
            "UPDATE {} SET below = COALESCE(?1, (SELECT COALESCE(MAX(id), 0) + 1 FROM messages))",
            table.mark
        );
        let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        let below: i64 = tx.query_row(&format!("SELECT below FROM {}", table.mark), [], |row| {
            row.get(0)
        })?;
        tx.execute(table.catch_up, [below])?;
        tx.execute(&set_mark, [None::<i64>])?;
        tx.commit()?;
        Ok(Unwritten {
            table,
            set_mark,
            waiting: BTreeMap::new(),
            sweep: Sweep::new(sweep_every),
            written: Vec::new(),
            added_from: None,
            added: 0,
        })
    }

    /// The id of the message whose key is `key`, if it waits.
    pub(crate) fn get(&self, key: &K) -> Option<i64> {
        self.waiting.get(key).copied()
    }

    /// The waiting keys in `range`, in key order.
    pub(crate) fn range(&self, range: impl RangeBounds<K>) -> impl DoubleEndedIterator<Item = &K> {
        self.waiting.range(range).map(|(key, _)| key)
    }

    /// Message `id` with `key` was inserted by the batch being written.
    pub(crate) fn add(&mut self, key: K, id: i64) {
        self.waiting.insert(key, id);
        self.added_from.get_or_insert(id);
        self.added += 1;
    }

    /// Write the sweep's next slice in the batch's transaction (starting a sweep if one is
    /// due), each key with `write` on the table's `insert`; at the sweep's end, move the
    /// mark.
    pub(crate) fn write_slice(
        &mut self,
        conn: &Connection,
        mut write: impl FnMut(&mut Statement<'_>, &K, i64) -> rusqlite::Result<()>,
    ) -> rusqlite::Result<()> {
        if !self.sweep.running() && !self.sweep.start_if_due(!self.waiting.is_empty()) {
            return Ok(());
        }
        let mut insert = conn.prepare_cached(self.table.insert)?;
        let slice = slice_len(self.added);
        for (key, id) in self
            .waiting
            .range::<K, _>((self.sweep.from(), Bound::Unbounded))
        {
            if self.written.len() == slice {
                break;
            }
            write(&mut insert, key, *id)?;
            self.written.push(key.clone());
        }
        if self.written.len() < slice {
            // The sweep is done: every key past its cursor is written now, so what still
            // waits was added behind the cursor meanwhile; the oldest of those is the mark.
            let left = match self.sweep.cursor() {
                Some(key) => self.waiting.range::<K, _>(..=key).map(|(_, id)| *id).min(),
                None => None,
            };
            conn.prepare_cached(&self.set_mark)?.execute([left])?;
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

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    #[cfg(test)]
    pub(crate) fn oldest(&self) -> Option<i64> {
        self.waiting.values().min().copied()
    }
}
