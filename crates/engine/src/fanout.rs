//! Local fan-out: channel name → this process's subscribers' bounded buffers.
//!
//! The in-process broker is nothing but this; a distributed broker feeds it from its one
//! subscriber connection (Centrifuge's design), so every backend cuts off slow subscribers
//! the same way. A listener, if given, learns when a channel loses its last local
//! subscriber so a network backend can unsubscribe upstream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::Subscription;
use crate::broker::{Item, SUBSCRIBER_BUFFER};

type Channels = HashMap<String, Vec<(u64, mpsc::Sender<Item>)>>;

#[derive(Default)]
pub struct Fanout {
    channels: Arc<Mutex<Channels>>,
    next_id: AtomicU64,
    emptied: Option<mpsc::UnboundedSender<String>>,
}

/// Lock a std mutex, recovering the data if a panicking thread poisoned it: every critical
/// section here leaves the map consistent before anything that could panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Fanout {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fan-out that sends a channel's name on `emptied` when its last subscriber goes.
    pub fn with_listener(emptied: mpsc::UnboundedSender<String>) -> Self {
        Fanout {
            emptied: Some(emptied),
            ..Self::default()
        }
    }

    /// Hand `payload` to every local subscriber of `channel`; returns how many got it.
    pub fn deliver(&self, channel: &str, payload: Bytes) -> usize {
        let mut map = lock(&self.channels);
        let Some(subs) = map.get_mut(channel) else {
            return 0;
        };
        let mut delivered = 0;
        subs.retain(|(_, tx)| {
            // One slot of every buffer is kept for the Lagged marker, so a subscriber that is
            // cut off always learns why.
            if tx.capacity() <= 1 {
                let _ = tx.try_send(Item::Lagged);
                return false;
            }
            match tx.try_send(Item::Message(payload.clone())) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(_) => false, // receiver gone
            }
        });
        if subs.is_empty() {
            map.remove(channel);
            self.notify_emptied(channel);
        }
        delivered
    }

    /// A new local subscriber of `channel`.
    pub fn subscribe(&self, channel: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER + 1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.channels)
            .entry(channel.to_owned())
            .or_default()
            .push((id, tx));
        let guard = Unsubscribe {
            channels: Arc::downgrade(&self.channels),
            emptied: self.emptied.clone(),
            channel: channel.to_owned(),
            id,
        };
        Subscription::new(rx, guard)
    }

    /// Whether `channel` has a local subscriber.
    pub fn has_subscribers(&self, channel: &str) -> bool {
        lock(&self.channels).contains_key(channel)
    }

    /// Every channel with a local subscriber.
    pub fn channels(&self) -> Vec<String> {
        lock(&self.channels).keys().cloned().collect()
    }

    /// Cut off every subscriber with `Lagged`: their messages may have been lost (a
    /// network backend lost its subscriber connection), and a gap must never be silent.
    pub fn lag_all(&self) -> usize {
        let drained: Vec<_> = lock(&self.channels).drain().collect();
        let mut n = 0;
        for (_, subs) in drained {
            for (_, tx) in subs {
                // The slot kept free in every buffer holds the marker.
                let _ = tx.try_send(Item::Lagged);
                n += 1;
            }
        }
        n
    }

    /// Cut off `channel`'s subscribers with `Lagged`: its upstream subscription had a gap
    /// (a network backend lost it on one shard) while other channels are unaffected.
    pub fn lag(&self, channel: &str) -> usize {
        let subs = lock(&self.channels).remove(channel).unwrap_or_default();
        for (_, tx) in &subs {
            let _ = tx.try_send(Item::Lagged);
        }
        subs.len()
    }

    fn notify_emptied(&self, channel: &str) {
        if let Some(tx) = &self.emptied {
            let _ = tx.send(channel.to_owned());
        }
    }
}

/// Removes one subscriber from its channel when the [`Subscription`] is dropped.
struct Unsubscribe {
    channels: Weak<Mutex<Channels>>,
    emptied: Option<mpsc::UnboundedSender<String>>,
    channel: String,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Some(channels) = self.channels.upgrade() else {
            return;
        };
        let mut map = lock(&channels);
        let Some(subs) = map.get_mut(&self.channel) else {
            return;
        };
        subs.retain(|(id, _)| *id != self.id);
        if subs.is_empty() {
            map.remove(&self.channel);
            if let Some(tx) = &self.emptied {
                let _ = tx.send(self.channel.clone());
            }
        }
    }
}
