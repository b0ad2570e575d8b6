//! [`Broker`] on Redis pub/sub.
//!
//! Publishing goes over the shared command connection (a multiplexed connection, so
//! concurrent publishes from many tasks are pipelined onto one socket). Receiving uses one
//! dedicated subscriber connection per node, owned by a single task: the first local
//! subscriber of a channel makes it `SUBSCRIBE`, the last one leaving makes it
//! `UNSUBSCRIBE`, and every message it reads is handed to the local [`Fanout`] (so a slow
//! local subscriber is cut off with `Lagged` exactly as in the embedded broker).
//!
//! On a Redis Cluster the same holds with classic pub/sub: `PUBLISH` goes to the node
//! owning the channel name's slot (always the same node for one channel, so messages keep
//! their order) and the cluster forwards it to every node, so the subscriber connection
//! may be on any node; it takes the seed nodes in turn when one fails. Sharded pub/sub
//! (`SPUBLISH`) would spare the cluster bus that broadcast, but needs one subscriber
//! connection per shard, following slot migrations; not needed at our scale yet.
//! Differences from one server:
//! - the count `publish` returns covers only the subscribers on the node that took the
//!   `PUBLISH`, so on a cluster it is a lower bound;
//! - `PUBLISH` answers once the owning node has queued the message for the cluster bus, so
//!   a subscriber on another node may get it well after `publish` returns (seconds, on a
//!   starved machine): whether a slow reader lags depends on when messages arrive, not on
//!   when they were published;
//! - a message crossing the cluster bus is lost if that bus link resets (a node stalled
//!   past half the `cluster-node-timeout`), and the subscriber's own connection never
//!   notices, so that gap goes unreported; sharded pub/sub, with no bus hop, would close it.
//!
//! If the subscriber connection drops, messages published meanwhile are gone (pub/sub keeps
//! nothing), so every local subscriber is cut off with `Lagged` rather than left with a
//! silent gap; the task reconnects with backoff and new subscriptions work again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use switchboard_engine::fanout::Fanout;
use switchboard_engine::{Broker, EngineError, Subscription};
use tokio::sync::{mpsc, oneshot};

use crate::connection::{Conn, Target};
use crate::unavailable;

/// A request to the subscriber task: make Redis's subscription to a channel match whether
/// it has local subscribers, answering when done.
struct Sync {
    channel: String,
    done: Option<oneshot::Sender<Result<(), EngineError>>>,
}

pub struct RedisBroker {
    conn: Conn,
    prefix: String,
    fanout: Arc<Fanout>,
    sync: mpsc::UnboundedSender<Sync>,
}

impl RedisBroker {
    /// Start the node's subscriber task; it runs until the broker is dropped.
    pub(crate) fn start(target: Target, conn: Conn, prefix: &str) -> Self {
        let (emptied_tx, emptied_rx) = mpsc::unbounded_channel();
        let (sync_tx, sync_rx) = mpsc::unbounded_channel();
        let fanout = Arc::new(Fanout::with_listener(emptied_tx));
        tokio::spawn(subscriber(
            target,
            fanout.clone(),
            prefix.to_owned(),
            sync_rx,
            emptied_rx,
        ));
        RedisBroker {
            conn,
            prefix: prefix.to_owned(),
            fanout,
            sync: sync_tx,
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, EngineError> {
        // Redis counts the subscribed connections, i.e. the nodes with a subscriber.
        redis::cmd("PUBLISH")
            .arg(format!("{}{channel}", self.prefix))
            .arg(&payload[..])
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, EngineError> {
        let sub = self.fanout.subscribe(channel);
        // Only return once Redis confirms the channel is subscribed (by this call or a
        // concurrent one), so a publish right after this call reaches the new subscriber.
        // On failure dropping `sub` undoes the local half.
        let stopped = || EngineError::Unavailable("redis subscriber stopped".into());
        let (done, answer) = oneshot::channel();
        self.sync
            .send(Sync {
                channel: channel.to_owned(),
                done: Some(done),
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())??;
        Ok(sub)
    }
}

/// The subscriber task: (re)connect, resubscribe, then route messages and requests until
/// the connection drops or the broker is dropped.
async fn subscriber(
    target: Target,
    fanout: Arc<Fanout>,
    prefix: String,
    mut sync: mpsc::UnboundedReceiver<Sync>,
    mut emptied: mpsc::UnboundedReceiver<String>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0;
    loop {
        let (mut sink, mut stream) = match target.pubsub(failures).await {
            Ok(p) => p.split(),
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, retry_in = ?backoff, "redis subscriber connection failed");
                let fail = unavailable(e).to_string();
                // Answer requests while waiting, so subscribers fail fast instead of hanging.
                let wait = tokio::time::sleep(backoff);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = &mut wait => break,
                        req = sync.recv() => match req {
                            Some(Sync { done: Some(done), .. }) => {
                                let _ = done.send(Err(EngineError::Unavailable(fail.clone())));
                            }
                            Some(_) => {}
                            None => return,
                        },
                        Some(_) = emptied.recv() => {}
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut subscribed = HashSet::new();
        for channel in fanout.channels() {
            if let Err(e) = reconcile(&mut sink, &fanout, &prefix, &mut subscribed, &channel).await
            {
                // The connection is failing; its stream ends next and the loop starts over.
                tracing::warn!(error = %e, "cannot resubscribe");
            }
        }
        tracing::info!(channels = subscribed.len(), "redis subscriber connected");
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    if let Some(channel) = msg.get_channel_name().strip_prefix(prefix.as_str()) {
                        fanout.deliver(channel, Bytes::copy_from_slice(msg.get_payload_bytes()));
                    }
                }
                req = sync.recv() => {
                    let Some(req) = req else { return };
                    let result = reconcile(&mut sink, &fanout, &prefix, &mut subscribed, &req.channel).await;
                    if let Some(done) = req.done {
                        let _ = done.send(result);
                    }
                }
                Some(channel) = emptied.recv() => {
                    let _ = reconcile(&mut sink, &fanout, &prefix, &mut subscribed, &channel).await;
                }
            }
        }
        let cut = fanout.lag_all();
        tracing::warn!(
            subscribers = cut,
            "redis subscriber connection lost; local subscribers cut off, reconnecting"
        );
    }
}

/// Subscribe or unsubscribe `channel` upstream so it matches the local subscribers.
/// Running in the one subscriber task serialises these, so a subscribe racing the last
/// unsubscribe of the same channel can never leave Redis unsubscribed.
async fn reconcile(
    sink: &mut PubSubSink,
    fanout: &Fanout,
    prefix: &str,
    subscribed: &mut HashSet<String>,
    channel: &str,
) -> Result<(), EngineError> {
    let wanted = fanout.has_subscribers(channel);
    let name = format!("{prefix}{channel}");
    if wanted && !subscribed.contains(channel) {
        sink.subscribe(&name).await.map_err(unavailable)?;
        subscribed.insert(channel.to_owned());
    } else if !wanted && subscribed.remove(channel) {
        sink.unsubscribe(&name).await.map_err(unavailable)?;
    }
    Ok(())
}
