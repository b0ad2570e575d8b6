//! Wake-ups at a scheduled instant, to within tens of microseconds, for the open-loop
//! senders.
//!
//! Why not `tokio::time::sleep_until`: Tokio's timer rounds a deadline up to its next
//! millisecond tick and parks the runtime in `epoll_wait` with a millisecond timeout, so
//! a task wakes anywhere from 0 to about 2 ms after the instant it asked for. An
//! open-loop sender stamps each message with its *scheduled* instant (so a sender held
//! up by the server is still charged for it), which put that lag into every latency the
//! bench reports, for every server alike (BENCHMARKS.md, "Branch tail").
//!
//! Why a `timerfd` in the runtime's own event loop: the pending deadlines live in a
//! heap, and one Linux `timerfd` is armed (with nanosecond resolution) for the earliest
//! of them. It becomes readable in the same `epoll` set Tokio already waits on, so the
//! runtime thread itself wakes on time and wakes the due tasks with an in-runtime wake
//! (a queue push). Until session 8 a thread of the bench's own slept to each deadline and
//! woke the runtime from outside, two thread wake-ups per message: on 2 cores that
//! thread competed with the server under test and inflated every server's p99.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

/// The deadlines and the task that fires them; stopped when dropped. Needs a Tokio
/// runtime with I/O enabled.
pub struct Ticker {
    inner: Arc<Inner>,
    driver: JoinHandle<()>,
}

struct Inner {
    state: Mutex<State>,
    timer: AsyncFd<TimerFd>,
}

#[derive(Default)]
struct State {
    due: BinaryHeap<Reverse<Entry>>,
    /// Breaks ties between equal deadlines (wakers have no order).
    registered: u64,
    /// The deadline the timer is armed for (`None`: disarmed, nothing due).
    next: Option<Instant>,
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

/// A one-shot monotonic `timerfd`.
struct TimerFd(OwnedFd);

impl TimerFd {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the descriptor it returns is owned from here on.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Expire once, `after` from now (at least 1 ns: an all-zero setting disarms).
    fn arm(&self, after: Duration) -> io::Result<()> {
        let after = after.max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
        let rc = unsafe { libc::timerfd_settime(self.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Consume the expiry count; `WouldBlock` if it has not expired since.
    fn take(&self) -> io::Result<u64> {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into an 8-byte buffer.
        let n = unsafe { libc::read(self.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u64::from_ne_bytes(count))
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing in the state can be left half-updated by a panic that matters here.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arm the timer for `at` (called with the state locked, so arming follows the
    /// order of `next`).
    fn arm(&self, state: &mut State, at: Instant) {
        state.next = Some(at);
        if let Err(e) = self
            .timer
            .get_ref()
            .arm(at.saturating_duration_since(Instant::now()))
        {
            // Cannot happen with a valid descriptor and setting; a silent timer would
            // stall every sender, so say why.
            eprintln!("switchboard-bench: cannot arm the ticker's timerfd: {e}");
        }
    }
}

impl Ticker {
    pub fn start() -> io::Result<Self> {
        // SAFETY: `TimerFd` owns its descriptor for as long as it lives and always
        // returns that one from `as_raw_fd`.
        let timer =
            unsafe { AsyncFd::register_with_interest(TimerFd::new()?, Interest::READABLE) }?;
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            timer,
        });
        let driver = tokio::spawn(run(Arc::clone(&inner)));
        Ok(Self { inner, driver })
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
        // Senders' deadlines mostly arrive in time order, so this re-arms rarely.
        if state.next.is_none_or(|next| at < next) {
            self.inner.arm(&mut state, at);
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The driver task: on each expiry, wake whatever is due and arm for the next deadline.
async fn run(inner: Arc<Inner>) {
    let mut wake = Vec::new();
    loop {
        let Ok(mut ready) = inner.timer.readable().await else {
            return;
        };
        // Clears Tokio's readiness only on `WouldBlock`, so an expiry is never missed.
        if ready.try_io(|timer| timer.get_ref().take()).is_err() {
            continue;
        }
        let now = Instant::now();
        {
            let mut state = inner.state();
            while state.due.peek().is_some_and(|e| e.0.at <= now) {
                if let Some(Reverse(entry)) = state.due.pop() {
                    wake.push(entry.waker);
                }
            }
            match state.due.peek().map(|e| e.0.at) {
                Some(next) => inner.arm(&mut state, next),
                None => state.next = None,
            }
        }
        wake.drain(..).for_each(Waker::wake);
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
