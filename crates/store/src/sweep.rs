//! How fast the writer's sweeps go. Two tables are written a slice per commit from keys
//! the message writer keeps in memory instead of an index entry per message: the
//! `clientMsgId`s ([`client_ids`](crate::client_ids)) and the offline backlog
//! ([`backlog`](crate::backlog)). Both sweep their keys in key order at this pace, so a
//! leaf of the table takes a period's keys at once.

use std::time::Duration;

/// Time from one sweep's start to the next: about how many of a sender's (or receiver's)
/// keys share one leaf write. The keys wait in memory about that long (some 10,000
/// `clientMsgId`s at 10k messages/s).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Keys a commit writes at most, unless it adds more.
const SLICE: usize = 64;

/// Keys a commit that adds `added` writes at most: [`SLICE`], or four times what it adds.
/// At about 2,500 commits/s under load a sweep needs a few keys per commit, and a
/// saturated writer (hundreds of messages per commit) still finishes a sweep in a
/// fraction of [`SWEEP_EVERY`], so memory stays about a period's worth. At a trickle of
/// messages every commit takes all that wait. No commit takes everything at once: session
/// 11 measured a pass over a period's keys holding the writer for 26 ms.
pub(crate) fn slice_len(added: usize) -> usize {
    SLICE.max(4 * added)
}
