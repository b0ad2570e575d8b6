//! Wake-ups at a scheduled instant, to within tens of microseconds, for the open-loop
//! senders.
//!
//! Why not `tokio::time::sleep_until`: Tokio's timer rounds a deadline up to its next
//! millisecond tick and parks the runtime in `epoll_wait` with a millisecond timeout, so
//! a task wakes anywhere from 0 to about 2 ms after the instant it asked for. An
//! open-loop sender stamps each message with its *scheduled* instant (so a sender held
//! up by the server is still charged for it), which put that lag into every latency the
//! bench reports, for every server alike: against the node `ws` peer at 2k messages/s a
//! sender wrote 1.2 to 1.3 ms late at the median, 0.12 to 0.14 ms with this ticker
//! (BENCHMARKS.md, "Branch tail").
//!
//! Here one thread keeps the pending deadlines in a heap, sleeps to the earliest one
//! with the OS's nanosecond timer (`thread::park_timeout`, timer slack lowered to 1 µs),
//! and wakes the tasks that are due; a task waking from it is late by the thread's
//! wake-up and the cross-thread wake of the runtime, tens of microseconds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::thread::{self, JoinHandle};
use std::time::Instant;

/// The wake-up thread; stopped when dropped.
pub struct Ticker {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

struct Inner {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    due: BinaryHeap<Reverse<Entry>>,
    /// Breaks ties between equal deadlines (wakers have no order).
    registered: u64,
    /// The deadline the thread sleeps towards (`None`: asleep with nothing due).
    next: Option<Instant>,
    stop: bool,
}

struct Entry {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing in the state can be left half-updated by a panic that matters here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ticker {
    pub fn start() -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
        });
        let thread = thread::Builder::new().name("bench-ticker".into()).spawn({
            let inner = Arc::clone(&inner);
            move || run(&inner)
        })?;
        Ok(Self {
            inner,
            thread: Some(thread),
        })
    }

    /// Completes once `at` has passed. `armed` is the caller's record of the deadline it
    /// last registered: a task that re-creates this future for the same deadline (a
    /// `select!` in a loop) registers it once, not once per poll.
    pub async fn until(&self, at: Instant, armed: &mut Option<Instant>) {
        poll_fn(|cx| {
            if Instant::now() >= at {
                return Poll::Ready(());
            }
            if *armed != Some(at) {
                *armed = Some(at);
                self.register(at, cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }

    fn register(&self, at: Instant, waker: Waker) {
        let mut state = self.inner.state();
        state.registered += 1;
        let seq = state.registered;
        state.due.push(Reverse(Entry { at, seq, waker }));
        if state.next.is_none_or(|next| at < next) {
            state.next = Some(at);
            drop(state);
            if let Some(thread) = &self.thread {
                thread.thread().unpark();
            }
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.inner.state().stop = true;
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The thread: wake whatever is due, sleep to the next deadline; until stopped.
fn run(inner: &Inner) {
    // The kernel may defer a timed wake-up by the thread's timer slack (50 µs by default)
    // to batch it with others; that is the precision this thread exists for.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let mut wake = Vec::new();
    loop {
        let now = Instant::now();
        let next = {
            let mut state = inner.state();
            if state.stop {
                return;
            }
            while state.due.peek().is_some_and(|e| e.0.at <= now) {
                if let Some(Reverse(entry)) = state.due.pop() {
                    wake.push(entry.waker);
                }
            }
            state.next = state.due.peek().map(|e| e.0.at);
            state.next
        };
        wake.drain(..).for_each(Waker::wake);
        // A deadline registered meanwhile unparks us: park returns at once then.
        match next {
            Some(at) => thread::park_timeout(at.saturating_duration_since(now)),
            None => thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Every wait ends, none before its deadline, whatever order the deadlines were
    /// registered in, and a task re-polling for the same deadline registers it once.
    #[tokio::test]
    async fn wakes_each_task_after_its_deadline() {
        let ticker = Arc::new(Ticker::start().unwrap());
        let start = Instant::now() + Duration::from_millis(20);
        let mut waits = tokio::task::JoinSet::new();
        for i in [7u32, 3, 11, 0, 5, 3] {
            let ticker = Arc::clone(&ticker);
            waits.spawn(async move {
                let at = start + Duration::from_micros(1300) * i;
                let mut armed = None;
                // A select-in-a-loop caller: the same deadline, a fresh future each time.
                for _ in 0..3 {
                    let wait = ticker.until(at, &mut armed);
                    if tokio::time::timeout(Duration::from_micros(200), wait)
                        .await
                        .is_ok()
                    {
                        break;
                    }
                }
                ticker.until(at, &mut armed).await;
                (Instant::now(), at)
            });
        }
        let all = tokio::time::timeout(Duration::from_secs(5), async {
            let mut woke = Vec::new();
            while let Some(w) = waits.join_next().await {
                woke.push(w.unwrap());
            }
            woke
        })
        .await
        .expect("every wait ends");
        assert_eq!(all.len(), 6);
        for (woke, at) in all {
            assert!(woke >= at, "woke {:?} early", at - woke);
        }
        assert!(
            ticker.inner.state().registered <= 6,
            "one registration per deadline"
        );
    }
}
