//! Durable hand-off of platform jobs from the gateway to whoever runs the platform.
//!
//! A queue is named by the platform instance it feeds (`dummy`, `irc:<actor>:<scope>` …).
//! A consumer [`JobQueue::reserve`]s a job, then [`JobQueue::ack`]s it when answered or
//! [`JobQueue::nack`]s it to retry later; after [`RetryPolicy::max_attempts`] a job moves to
//! the dead letters instead of looping forever. Payloads are opaque (sealed by the caller).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::EngineError;

/// A reserved job: the consumer must ack or nack it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Identifies this reservation for ack/nack.
    pub tag: u64,
    /// The job id given at push time.
    pub job_id: String,
    pub payload: Bytes,
    /// 1 on first delivery, 2 on the first retry, …
    pub attempt: u32,
}

/// What a nack did with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackOutcome {
    /// Back in the queue, visible again after the backoff.
    Retrying { after: Duration },
    /// Out of attempts: moved to the dead letters.
    DeadLettered,
}

/// How failed jobs are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff after the `attempt`-th failure, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Append a job to `queue`.
    async fn push(&self, queue: &str, job_id: &str, payload: Bytes) -> Result<(), EngineError>;

    /// Take the oldest visible job, waiting up to `wait` for one to arrive.
    async fn reserve(&self, queue: &str, wait: Duration) -> Result<Option<Delivery>, EngineError>;

    /// The job is done; forget it.
    async fn ack(&self, queue: &str, tag: u64) -> Result<(), EngineError>;

    /// The job failed; retry it with backoff or dead-letter it.
    async fn nack(&self, queue: &str, tag: u64) -> Result<NackOutcome, EngineError>;

    /// Jobs that ran out of attempts, oldest first.
    async fn dead_letters(&self, queue: &str) -> Result<Vec<Delivery>, EngineError>;

    /// Number of jobs waiting (not reserved) in `queue`.
    async fn len(&self, queue: &str) -> Result<usize, EngineError>;

    /// This consumer stops taking jobs from `queue` (its instance stopped) while other
    /// consumers go on: anything it reserved but never handed out goes back to them. The
    /// embedded queue hands out nothing it has not reserved for a caller, so has nothing
    /// to give back.
    async fn release(&self, _queue: &str) -> Result<(), EngineError> {
        Ok(())
    }

    /// Drop a queue and everything in it (its platform instance is gone); returns the jobs
    /// that were still waiting or reserved so their requesters can be answered.
    async fn remove(&self, queue: &str) -> Result<Vec<Delivery>, EngineError>;
}
