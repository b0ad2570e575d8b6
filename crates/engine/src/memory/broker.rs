//! In-process [`Broker`]: publishing is handing the payload to the local [`Fanout`].

use async_trait::async_trait;
use bytes::Bytes;

use crate::fanout::Fanout;
use crate::{Broker, EngineError, Subscription};

#[derive(Default)]
pub struct MemoryBroker {
    fanout: Fanout,
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, EngineError> {
        Ok(self.fanout.deliver(channel, payload))
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, EngineError> {
        Ok(self.fanout.subscribe(channel))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn behaviour_suite() {
        crate::suite::broker(&super::MemoryBroker::new()).await;
    }
}
