//! [`Broker`] on Redis pub/sub.
//!
//! Publishing goes over the shared command connection (a multiplexed connection, so
//! concurrent publishes from many tasks are pipelined onto one socket). Receiving uses one
//! subscriber task per node: the first local subscriber of a channel makes it subscribe
//! upstream, the last one leaving makes it unsubscribe, and every message it reads is
//! handed to the local [`Fanout`] (so a slow local subscriber is cut off with `Lagged`
//! exactly as in the embedded broker).
//!
//! On one server that task owns one dedicated `SUBSCRIBE` connection. If it drops, messages
//! published meanwhile are gone (pub/sub keeps nothing), so every local subscriber is cut
//! off with `Lagged` rather than left with a silent gap; the task reconnects with backoff
//! and new subscriptions work again.
//!
//! On a Redis Cluster pub/sub is sharded (`SPUBLISH`/`SSUBSCRIBE`, see `shard.rs`): a
//! channel lives on the master owning its name's slot, publisher and subscribers talk to
//! that master directly, and no message crosses the cluster bus — where classic pub/sub
//! lost messages without anyone noticing when a bus link reset. One channel is always on
//! one master, so its messages keep their order, and the count `publish` returns is exact
//! (the nodes subscribed on that master). Whatever interrupts a channel's subscription —
//! its master's connection closing (a kill, `CLIENT KILL`, a failover), its slot moving
//! away, the client resubscribing it elsewhere — cuts that channel's local subscribers off
//! with `Lagged`; see `shard.rs` for how each case is recognised and what is not.

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
use crate::{shard, unavailable};

/// A request to the subscriber task: make Redis's subscription to a channel match whether
/// it has local subscribers, answering when done.
pub(crate) struct Sync {
    pub(crate) channel: String,
    pub(crate) done: Option<oneshot::Sender<Result<(), EngineError>>>,
}

pub struct RedisBroker {
    conn: Conn,
    prefix: String,
    /// `PUBLISH`, or `SPUBLISH` on a cluster.
    publish: &'static str,
    fanout: Arc<Fanout>,
    sync: mpsc::UnboundedSender<Sync>,
}

impl RedisBroker {
    /// Start the node's subscriber task; it runs until the broker is dropped.
    pub(crate) fn start(target: Target, conn: Conn, prefix: &str) -> Self {
        let (emptied_tx, emptied_rx) = mpsc::unbounded_channel();
        let (sync_tx, sync_rx) = mpsc::unbounded_channel();
        let fanout = Arc::new(Fanout::with_listener(emptied_tx));
        let prefix = prefix.to_owned();
        let publish = match target {
            Target::Single(client) => {
                let task = subscriber(client, fanout.clone(), prefix.clone(), sync_rx, emptied_rx);
                tokio::spawn(task);
                "PUBLISH"
            }
            Target::Cluster(cluster) => {
                let task = shard::subscriber(
                    *cluster,
                    fanout.clone(),
                    prefix.clone(),
                    sync_rx,
                    emptied_rx,
                );
                tokio::spawn(task);
                "SPUBLISH"
            }
        };
        RedisBroker {
            conn,
            prefix,
            publish,
            fanout,
            sync: sync_tx,
        }
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, EngineError> {
        // Redis counts the subscribed connections, i.e. the nodes with a subscriber.
        redis::cmd(self.publish)
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

/// The single-server subscriber task: (re)connect, resubscribe, then route messages and
/// requests until the connection drops or the broker is dropped.
async fn subscriber(
    client: redis::Client,
    fanout: Arc<Fanout>,
    prefix: String,
    mut sync: mpsc::UnboundedReceiver<Sync>,
    mut emptied: mpsc::UnboundedReceiver<String>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let (mut sink, mut stream) = match client.get_async_pubsub().await {
            Ok(p) => p.split(),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "redis subscriber connection failed");
                if !refuse_while_waiting(backoff, &e, &mut sync, &mut emptied).await {
                    return;
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

/// Wait `backoff` before the next connection attempt, answering subscribe requests with
/// the connection's `error` meanwhile so subscribers fail fast instead of hanging. False
/// once the broker is gone.
pub(crate) async fn refuse_while_waiting(
    backoff: Duration,
    error: &redis::RedisError,
    sync: &mut mpsc::UnboundedReceiver<Sync>,
    emptied: &mut mpsc::UnboundedReceiver<String>,
) -> bool {
    let wait = tokio::time::sleep(backoff);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            () = &mut wait => return true,
            req = sync.recv() => match req {
                Some(Sync { done: Some(done), .. }) => {
                    let _ = done.send(Err(unavailable(error.clone())));
                }
                Some(_) => {}
                None => return false,
            },
            Some(_) = emptied.recv() => {}
        }
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
