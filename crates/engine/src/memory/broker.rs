//! In-process [`Broker`]: a map from channel name to the subscribers' bounded buffers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::lock;
use crate::broker::{Item, SUBSCRIBER_BUFFER};
use crate::{Broker, EngineError, Subscription};

type Channels = HashMap<String, Vec<(u64, mpsc::Sender<Item>)>>;

#[derive(Default)]
pub struct MemoryBroker {
    channels: Arc<Mutex<Channels>>,
    next_id: AtomicU64,
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Removes one subscriber from its channel when the [`Subscription`] is dropped.
struct Unsubscribe {
    channels: Weak<Mutex<Channels>>,
    channel: String,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(channels) = self.channels.upgrade() {
            let mut map = lock(&channels);
            if let Some(subs) = map.get_mut(&self.channel) {
                subs.retain(|(id, _)| *id != self.id);
                if subs.is_empty() {
                    map.remove(&self.channel);
                }
            }
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, EngineError> {
        let mut map = lock(&self.channels);
        let Some(subs) = map.get_mut(channel) else {
            return Ok(0);
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
        }
        Ok(delivered)
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, EngineError> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER + 1);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.channels)
            .entry(channel.to_owned())
            .or_default()
            .push((id, tx));
        let guard = Unsubscribe {
            channels: Arc::downgrade(&self.channels),
            channel: channel.to_owned(),
            id,
        };
        Ok(Subscription::new(rx, guard))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn behaviour_suite() {
        crate::suite::broker(&super::MemoryBroker::new()).await;
    }
}
