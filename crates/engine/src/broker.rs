//! Publish/subscribe between the parts of a server (and, with a distributed backend, between
//! servers). A gateway session subscribes to `session:{id}`; a worker supervisor publishes
//! that session's job results and incoming platform traffic there.
//!
//! Delivery is at-most-once and in publish order per channel. A subscriber that falls more
//! than its buffer behind is not silently skipped: its [`Subscription`] ends with
//! [`Recv::Lagged`] so its owner can tell the client and close.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::EngineError;

/// How many messages a subscriber may fall behind before it is cut off.
pub const SUBSCRIBER_BUFFER: usize = 1024;

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Send `payload` to every current subscriber of `channel`; returns how many it reached
    /// (a distributed backend counts subscribed nodes, not their local subscribers).
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, EngineError>;

    /// Start receiving what is published to `channel` from now on. Dropping the
    /// subscription unsubscribes.
    async fn subscribe(&self, channel: &str) -> Result<Subscription, EngineError>;
}

/// One message, or the reason the subscription ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    Message(Bytes),
    /// The subscriber fell too far behind and was cut off.
    Lagged,
    /// The broker shut down.
    Closed,
}

/// A live subscription; unsubscribes when dropped.
pub struct Subscription {
    rx: mpsc::Receiver<Item>,
    _guard: Box<dyn Send + Sync>,
}

/// What a backend pushes into a subscription's buffer.
#[derive(Debug)]
pub enum Item {
    Message(Bytes),
    Lagged,
}

impl Subscription {
    /// Build a subscription from a backend's receiver and a guard whose `Drop` unsubscribes.
    pub fn new(rx: mpsc::Receiver<Item>, guard: impl Send + Sync + 'static) -> Self {
        Subscription {
            rx,
            _guard: Box::new(guard),
        }
    }

    /// Wait for the next message.
    pub async fn recv(&mut self) -> Recv {
        match self.rx.recv().await {
            Some(Item::Message(b)) => Recv::Message(b),
            Some(Item::Lagged) => Recv::Lagged,
            None => Recv::Closed,
        }
    }
}
