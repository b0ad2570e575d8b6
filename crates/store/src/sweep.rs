//! How fast the writer's sweeps go. Three tables are written a slice per commit from keys
//! the message writer keeps in memory instead of an index entry per message: the
//! `clientMsgId`s ([`client_ids`](crate::client_ids)), the offline backlog
//! ([`backlog`](crate::backlog)) and the direct history ([`history`](crate::history)).
//! Each sweeps its keys in key order at this pace, so a leaf of the table takes a
//! period's keys at once.

use std::ops::Bound;
use std::time::{Duration, Instant};

/// Time from one sweep's start to the next for the `clientMsgId`s and the backlog: about
/// how many of a sender's (or receiver's) keys share one leaf write. The keys wait in
/// memory about that long (some 30,000 `clientMsgId`s at 10k messages/s).
/// Measured at 10k messages/s (BENCHMARKS.md, session 16): with every sweep at 1 s the
/// sweeps wrote a quarter of the log. All three at 3 s made the log 14 % smaller and the
/// p99 a quarter lower; as adopted (the history's at 1 s), 9 % and 0.82x. At 5 s the log
/// was no smaller in a run, and the larger sweeps raised the p99.9.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(3);

/// The same for the direct history, kept shorter: a history page scans the messages of up
/// to two periods past the history's mark ([`history`](crate::history)), 5 ms per 20,000
/// messages of the bench's size. At 10k messages/s, 3 s would make that 15 ms a page;
/// the p99 was the same with this sweep at 1 s and the other two at 3 s (session 16).
pub(crate) const HISTORY_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Keys a commit writes at most, unless it adds more.
const SLICE: usize = 64;

/// Keys a commit that adds `added` writes at most: [`SLICE`], or four times what it adds.
/// At some 10,000 commits/s under load (session 16) a sweep needs a few keys per commit
/// (some 30,000 `clientMsgId`s a period at 10k messages/s), and a saturated writer
/// (hundreds of messages per commit) still finishes a sweep in a fraction of
/// [`SWEEP_EVERY`], so memory stays about a period's worth. At a trickle of
/// messages every commit takes all that wait. No commit takes everything at once: session
/// 11 measured a pass over a period's keys holding the writer for 26 ms.
pub(crate) fn slice_len(added: usize) -> usize {
    SLICE.max(4 * added)
}

/// Where a sweep over sorted keys is, and when the next one starts: what the two sweeps
/// share. The owner walks its keys from [`Sweep::from`], notes with [`Sweep::pass`] the
/// last key its batch reached, and settles the sweep with the batch: a committed batch
/// moves the cursor there; one that did not commit restarts the sweep (the mark it may
/// have moved was not written either).
pub(crate) struct Sweep<K> {
    every: Duration,
    started: Instant,
    running: bool,
    /// The last key a committed batch of the running sweep passed; `None` at its start.
    cursor: Option<K>,
    /// The last key the batch being committed passed.
    passed: Option<K>,
}

impl<K> Sweep<K> {
    /// A sweep at most every `every` ([`SWEEP_EVERY`] but in tests), the first one
    /// `every` from now.
    pub(crate) fn new(every: Duration) -> Self {
        Sweep {
            every,
            started: Instant::now(),
            running: false,
            cursor: None,
            passed: None,
        }
    }

    pub(crate) fn running(&self) -> bool {
        self.running
    }

    /// Start a sweep from the first key if one is due and there is `work`; whether it
    /// started.
    pub(crate) fn start_if_due(&mut self, work: bool) -> bool {
        if self.running || !work || self.started.elapsed() < self.every {
            return false;
        }
        self.running = true;
        self.started = Instant::now();
        self.cursor = None;
        true
    }

    /// The running sweep's committed position.
    pub(crate) fn cursor(&self) -> Option<&K> {
        self.cursor.as_ref()
    }

    /// Where the batch's slice starts: past the cursor.
    pub(crate) fn from(&self) -> Bound<&K> {
        match &self.cursor {
            Some(key) => Bound::Excluded(key),
            None => Bound::Unbounded,
        }
    }

    /// The batch being committed got as far as `key`.
    pub(crate) fn pass(&mut self, key: K) {
        self.passed = Some(key);
    }

    /// Every key is swept (the owner writes its mark in the same batch).
    pub(crate) fn finish(&mut self) {
        self.running = false;
    }

    /// The batch ended.
    pub(crate) fn settle(&mut self, committed: bool) {
        let passed = self.passed.take();
        if !committed {
            self.running = false;
        } else if passed.is_some() {
            self.cursor = passed;
        }
    }
}
