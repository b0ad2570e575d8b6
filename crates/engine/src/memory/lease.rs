//! In-process [`Leases`]: a map from name to holder and expiry. On one node the gateway's
//! own instance map already decides who runs what, so this only has to be correct, not
//! clever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::lock;
use crate::{EngineError, Leases};

#[derive(Default)]
pub struct MemoryLeases {
    /// name → (holder, expires at). Expired entries are dropped when next looked at.
    leases: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryLeases {
    pub fn new() -> Self {
        Self::default()
    }
}

/// The live lease on `name`, dropping an expired one.
fn live<'a>(
    map: &'a mut HashMap<String, (String, Instant)>,
    name: &str,
) -> Option<&'a mut (String, Instant)> {
    if map
        .get(name)
        .is_some_and(|(_, until)| *until <= Instant::now())
    {
        map.remove(name);
    }
    map.get_mut(name)
}

#[async_trait]
impl Leases for MemoryLeases {
    async fn acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<String, EngineError> {
        let mut map = lock(&self.leases);
        let until = Instant::now() + ttl;
        match live(&mut map, name) {
            Some((h, at)) if h == holder => *at = until,
            Some((h, _)) => return Ok(h.clone()),
            None => {
                map.insert(name.to_owned(), (holder.to_owned(), until));
            }
        }
        Ok(holder.to_owned())
    }

    async fn renew(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, EngineError> {
        let mut map = lock(&self.leases);
        match live(&mut map, name) {
            Some((h, at)) if h == holder => {
                *at = Instant::now() + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, name: &str, holder: &str) -> Result<bool, EngineError> {
        let mut map = lock(&self.leases);
        let ours = live(&mut map, name).is_some_and(|(h, _)| h == holder);
        if ours {
            map.remove(name);
        }
        Ok(ours)
    }

    async fn holder(&self, name: &str) -> Result<Option<String>, EngineError> {
        Ok(live(&mut lock(&self.leases), name).map(|(h, _)| h.clone()))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn behaviour_suite() {
        crate::suite::leases(&super::MemoryLeases::new()).await;
    }
}
