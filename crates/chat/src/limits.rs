//! Abuse limits on `/ws`: a fixed-window rate limit on each connection's frames and a cap
//! on simultaneous connections per client IP address.
//!
//! Both refuse loudly and lose nothing: a frame over the rate gets an `error` frame (the
//! connection stays open), a connection over the cap gets HTTP 429 before its handshake.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The error text of a frame refused by the rate limit.
pub(crate) fn rate_limited(max: u32, window: Duration) -> String {
    format!(
        "Rate limit exceeded: at most {max} frames per {} ms; this frame was ignored, send it again later",
        window.as_millis()
    )
}

/// One connection's count of frames in the current window. The window opens with the
/// first frame after the previous one closed, so a burst is judged as a whole.
#[derive(Default)]
pub(crate) struct FrameLimit {
    /// When the current window opened (`None`: no window open yet).
    opened: Option<Instant>,
    count: u32,
}

/// What the rate limit says about one frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow,
    /// Over the limit, the first time in this window (worth a log line).
    RefuseFirst,
    Refuse,
}

impl FrameLimit {
    /// Count one frame against `max` per `window` (`max` 0: no limit).
    pub(crate) fn admit(&mut self, max: u32, window: Duration) -> Verdict {
        if max == 0 {
            return Verdict::Allow;
        }
        let now = Instant::now();
        match self.opened {
            Some(opened) if now.duration_since(opened) < window => {}
            _ => {
                self.opened = Some(now);
                self.count = 0;
            }
        }
        self.count = self.count.saturating_add(1);
        match self.count.checked_sub(max) {
            None | Some(0) => Verdict::Allow,
            Some(1) => Verdict::RefuseFirst,
            Some(_) => Verdict::Refuse,
        }
    }
}

/// Live `/ws` connections per client address.
pub(crate) struct PerIp {
    cap: usize,
    live: Mutex<HashMap<IpAddr, usize>>,
}

/// A counted connection; its address's count drops when this is dropped.
pub(crate) struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// `cap` connections per address at most (0: no cap, nothing counted).
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(PerIp {
            cap,
            live: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Count a new connection from `ip`: `Err` when the address already has `cap`;
    /// `Ok(None)` when there is no cap.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<IpSlot>, ()> {
        if self.cap == 0 {
            return Ok(None);
        }
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let n = live.entry(ip).or_insert(0);
        if *n >= self.cap {
            return Err(());
        }
        *n += 1;
        Ok(Some(IpSlot {
            per_ip: self.clone(),
            ip,
        }))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut live = self
            .per_ip
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = live.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                live.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn frames_over_the_limit_are_refused_until_the_window_closes() {
        let window = Duration::from_secs(1);
        let mut limit = FrameLimit::default();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!((0..3).all(|_| limit.admit(3, window) == Verdict::Allow));
        assert_eq!(limit.admit(3, window), Verdict::RefuseFirst, "the fourth");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(limit.admit(3, window), Verdict::Refuse, "same window");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(limit.admit(3, window), Verdict::Allow, "a new window");
        assert!(
            (0..1000).all(|_| limit.admit(0, window) == Verdict::Allow),
            "0: no limit"
        );
    }

    #[test]
    fn the_cap_counts_live_connections_per_address() {
        let per_ip = PerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = per_ip.admit(a).unwrap();
        let _second = per_ip.admit(a).unwrap();
        assert!(per_ip.admit(a).is_err(), "the third from one address");
        assert!(per_ip.admit(b).unwrap().is_some(), "another address");
        drop(first);
        assert!(per_ip.admit(a).is_ok(), "a slot came free");
        assert!(PerIp::new(0).admit(a).unwrap().is_none(), "no cap");
    }
}
