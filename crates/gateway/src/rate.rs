//! Per-connection rate limiting, Sockethub's fixed-window rule: more than `max` events in
//! one window blocks the connection for `block`. Unlike Sockethub, a blocked event is still
//! answered (with an error), and the client is told once per block with an `error` push.

use std::time::Duration;

use tokio::time::Instant;

pub(crate) struct RateLimiter {
    window: Duration,
    max: u32,
    block: Duration,
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

/// What the limiter says about one event.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Refused, and this is the first refusal of the block: tell the client.
    BlockedNow,
    /// Refused, the client was already told.
    Blocked,
}

impl RateLimiter {
    pub fn new(window: Duration, max: u32, block: Duration) -> Self {
        RateLimiter {
            window,
            max,
            block,
            window_start: Instant::now(),
            count: 0,
            blocked_until: None,
        }
    }

    pub fn check(&mut self) -> Verdict {
        let now = Instant::now();
        if let Some(until) = self.blocked_until {
            if now < until {
                return Verdict::Blocked;
            }
            self.blocked_until = None;
            self.window_start = now;
            self.count = 0;
        }
        if now.duration_since(self.window_start) > self.window {
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        if self.count > self.max {
            self.blocked_until = Some(now + self.block);
            return Verdict::BlockedNow;
        }
        Verdict::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn blocks_after_max_then_recovers() {
        let mut r = RateLimiter::new(Duration::from_secs(1), 3, Duration::from_secs(5));
        for _ in 0..3 {
            assert_eq!(r.check(), Verdict::Allow);
        }
        assert_eq!(r.check(), Verdict::BlockedNow);
        assert_eq!(r.check(), Verdict::Blocked);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(r.check(), Verdict::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn window_resets() {
        let mut r = RateLimiter::new(Duration::from_secs(1), 2, Duration::from_secs(5));
        assert_eq!(r.check(), Verdict::Allow);
        assert_eq!(r.check(), Verdict::Allow);
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert_eq!(r.check(), Verdict::Allow);
    }
}
