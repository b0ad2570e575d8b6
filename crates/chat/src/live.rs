//! How many `/ws` sessions are live on this node, so that a clean stop can wait for each to
//! end before the store closes: a session's end records its user's `lastSeen` and presence,
//! and a process that exits first loses them.
//!
//! A count rather than a handle per session: an idle connection's task is kept small (see
//! the idle benchmark in BENCHMARKS.md), and the session already holds the service.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Live {
    count: AtomicUsize,
    none_left: Notify,
}

impl Live {
    /// A session starts.
    pub(crate) fn enter(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// A session has ended.
    pub(crate) fn leave(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.none_left.notify_waiters();
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once no session is live.
    pub(crate) async fn none_left(&self) {
        loop {
            // Registered before the check: a `leave` between the two still wakes it.
            let left = self.none_left.notified();
            if self.count() == 0 {
                return;
            }
            left.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waits_for_the_last_session() {
        let live = Arc::new(Live::default());
        live.none_left().await;
        live.enter();
        live.enter();
        let waiting = tokio::spawn({
            let live = live.clone();
            async move { live.none_left().await }
        });
        live.leave();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "one session is still live");
        live.leave();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("resolves once none is left")
            .unwrap();
    }
}
