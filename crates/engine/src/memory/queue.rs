//! In-process [`JobQueue`]: per-queue ready list, delayed retries, reservations and dead
//! letters under one mutex; a `Notify` per queue wakes waiting consumers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::lock;
use crate::queue::RetryPolicy;
use crate::{Delivery, EngineError, JobQueue, NackOutcome};

#[derive(Clone)]
struct Entry {
    job_id: String,
    payload: Bytes,
    attempt: u32,
}

impl Entry {
    fn into_delivery(self, tag: u64) -> Delivery {
        Delivery {
            tag,
            job_id: self.job_id,
            payload: self.payload,
            attempt: self.attempt,
        }
    }
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Entry>,
    /// Retries waiting for their backoff to pass, with the instant they become ready.
    delayed: Vec<(Instant, Entry)>,
    reserved: HashMap<u64, Entry>,
    dead: Vec<Entry>,
    wake: Arc<Notify>,
}

impl Queue {
    /// Move retries whose backoff has passed to the back of the ready list; return when the
    /// next one will be due.
    fn promote(&mut self, now: Instant) -> Option<Instant> {
        let mut next = None;
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                let (_, entry) = self.delayed.swap_remove(i);
                self.ready.push_back(entry);
            } else {
                next = Some(next.map_or(self.delayed[i].0, |n: Instant| n.min(self.delayed[i].0)));
                i += 1;
            }
        }
        next
    }
}

pub struct MemoryQueue {
    queues: Mutex<HashMap<String, Queue>>,
    next_tag: AtomicU64,
    policy: RetryPolicy,
}

impl MemoryQueue {
    pub fn new(policy: RetryPolicy) -> Self {
        MemoryQueue {
            queues: Mutex::new(HashMap::new()),
            next_tag: AtomicU64::new(1),
            policy,
        }
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn push(&self, queue: &str, job_id: &str, payload: Bytes) -> Result<(), EngineError> {
        let mut queues = lock(&self.queues);
        let q = queues.entry(queue.to_owned()).or_default();
        q.ready.push_back(Entry {
            job_id: job_id.to_owned(),
            payload,
            attempt: 0,
        });
        q.wake.notify_one();
        Ok(())
    }

    async fn reserve(&self, queue: &str, wait: Duration) -> Result<Option<Delivery>, EngineError> {
        let deadline = Instant::now() + wait;
        loop {
            let (wake, next_due) = {
                let mut queues = lock(&self.queues);
                let q = queues.entry(queue.to_owned()).or_default();
                let next_due = q.promote(Instant::now());
                if let Some(mut entry) = q.ready.pop_front() {
                    entry.attempt += 1;
                    let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
                    q.reserved.insert(tag, entry.clone());
                    return Ok(Some(entry.into_delivery(tag)));
                }
                (q.wake.clone(), next_due)
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let until = next_due.map_or(deadline, |due| due.min(deadline));
            // A push between unlocking and here leaves a permit in the Notify, so no wake-up
            // is lost.
            let _ = tokio::time::timeout_at(until, wake.notified()).await;
        }
    }

    async fn ack(&self, queue: &str, tag: u64) -> Result<(), EngineError> {
        let mut queues = lock(&self.queues);
        queues
            .get_mut(queue)
            .and_then(|q| q.reserved.remove(&tag))
            .map(|_| ())
            .ok_or(EngineError::UnknownDelivery(tag))
    }

    async fn nack(&self, queue: &str, tag: u64) -> Result<NackOutcome, EngineError> {
        let mut queues = lock(&self.queues);
        let q = queues
            .get_mut(queue)
            .ok_or(EngineError::UnknownDelivery(tag))?;
        let entry = q
            .reserved
            .remove(&tag)
            .ok_or(EngineError::UnknownDelivery(tag))?;
        if entry.attempt >= self.policy.max_attempts {
            q.dead.push(entry);
            return Ok(NackOutcome::DeadLettered);
        }
        let after = self.policy.backoff(entry.attempt);
        q.delayed.push((Instant::now() + after, entry));
        q.wake.notify_one();
        Ok(NackOutcome::Retrying { after })
    }

    async fn dead_letters(&self, queue: &str) -> Result<Vec<Delivery>, EngineError> {
        let queues = lock(&self.queues);
        Ok(queues.get(queue).map_or_else(Vec::new, |q| {
            q.dead.iter().map(|e| e.clone().into_delivery(0)).collect()
        }))
    }

    async fn len(&self, queue: &str) -> Result<usize, EngineError> {
        let queues = lock(&self.queues);
        Ok(queues
            .get(queue)
            .map_or(0, |q| q.ready.len() + q.delayed.len()))
    }

    async fn remove(&self, queue: &str) -> Result<Vec<Delivery>, EngineError> {
        let Some(q) = lock(&self.queues).remove(queue) else {
            return Ok(Vec::new());
        };
        // Wake any consumer still waiting so it sees the queue is gone.
        q.wake.notify_waiters();
        Ok(q.ready
            .into_iter()
            .chain(q.delayed.into_iter().map(|(_, e)| e))
            .chain(q.reserved.into_values())
            .map(|e| e.into_delivery(0))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(start_paused = true)]
    async fn behaviour_suite() {
        let policy = crate::queue::RetryPolicy::default();
        crate::suite::queue(&super::MemoryQueue::new(policy), policy).await;
    }
}
