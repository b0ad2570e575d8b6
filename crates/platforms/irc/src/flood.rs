//! Outgoing flood control: a token bucket. A burst of lines goes out at once, then lines
//! leave at a steady rate, so a long multi-line message never gets the connection killed
//! for flooding. (PONGs and our own PINGs are free: they must not wait behind a burst.)

use std::time::Duration;

use tokio::time::Instant;

/// Lines sent back to back before the rate applies.
const BURST: f64 = 10.0;
/// Lines per second after the burst.
const RATE: f64 = 2.0;

pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new() -> Self {
        Bucket {
            tokens: BURST,
            at: Instant::now(),
        }
    }

    /// Spend a token, or learn when the next one is there.
    pub fn take(&mut self) -> Result<(), Instant> {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> Result<(), Instant> {
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * RATE).min(BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((1.0 - self.tokens) / RATE))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = Bucket::new();
        let t0 = b.at;
        for _ in 0..10 {
            b.take_at(t0).unwrap();
        }
        assert_eq!(b.take_at(t0).unwrap_err(), t0 + Duration::from_millis(500));
        let later = t0 + Duration::from_millis(500);
        b.take_at(later).unwrap();
        assert!(b.take_at(later).is_err());
    }
}
