//! The broker's subscriber task on a Redis Cluster: sharded pub/sub (`SSUBSCRIBE`), and
//! knowing when a channel's subscription had a gap.
//!
//! The task holds its own cluster connection in RESP3 (see
//! `connection::Cluster::sharded_pubsub`): `SSUBSCRIBE` goes to the master owning the
//! channel's slot, a node connection that closes is reopened and the client resubscribes
//! there by itself. Pub/sub keeps nothing, so every such repair leaves a gap, and a gap must
//! reach the channel's local subscribers as `Lagged`, never silently. The task reads every
//! push (in order per node) and recognises:
//! - `Disconnection`: one node's connection closed (killed, `CLIENT KILL`ed, its master
//!   dead before a failover). The push does not say which node, so every local subscriber
//!   is cut off;
//! - an `sunsubscribe` the task did not ask for: the server dropped the channel because
//!   its slot moved to another master (resharding, a failed-over master coming back as a
//!   replica) — that channel's subscribers are cut off;
//! - an `ssubscribe` confirmation the task did not ask for: the client resubscribed the
//!   channel on another node after a topology change — that channel's subscribers are cut
//!   off (unless it is the resubscription that follows a `Disconnection`, already reported).
//!
//! After a cut, the next local subscriber of the channel makes the task `SSUBSCRIBE` it
//! afresh (the answer, from the current owner, proves the subscription is live before
//! `subscribe` returns). Upstream subscriptions nobody wants any more (left by the client's
//! own resubscription) are dropped when their next message or confirmation shows up.
//!
//! Cuts err on the safe side: a `Disconnection` of any node (a replica too) cuts every
//! channel, and when the client reloads the topology it resubscribes every channel without
//! saying which ones moved, so all of them are cut, including those that stayed. Not
//! covered: a master that hangs without closing its connections (no push tells of it)
//! goes unnoticed until the client next reloads the topology.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use switchboard_engine::EngineError;
use switchboard_engine::fanout::Fanout;
use tokio::sync::mpsc;

use crate::broker::{Sync, refuse_while_waiting};
use crate::connection::Cluster;
use crate::unavailable;

/// Connect (retrying with backoff), then route pushes and requests until the broker is
/// dropped.
pub(crate) async fn subscriber(
    cluster: Cluster,
    fanout: Arc<Fanout>,
    prefix: String,
    mut sync: mpsc::UnboundedReceiver<Sync>,
    mut emptied: mpsc::UnboundedReceiver<String>,
) {
    let (push_tx, mut pushes) = mpsc::unbounded_channel();
    let mut backoff = Duration::from_millis(100);
    let conn = loop {
        match cluster.sharded_pubsub(push_tx.clone()).await {
            Ok(conn) => break conn,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "redis cluster subscriber connection failed");
                if !refuse_while_waiting(backoff, &e, &mut sync, &mut emptied).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    drop(push_tx);
    tracing::info!("redis cluster subscriber connected (sharded pub/sub)");
    let mut shards = Shards {
        conn,
        fanout,
        prefix,
        subscribed: HashSet::new(),
        asked_sub: HashMap::new(),
        asked_unsub: HashMap::new(),
        orphans: HashSet::new(),
    };
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return };
                shards.on_push(push).await;
            }
            req = sync.recv() => {
                let Some(req) = req else { return };
                let result = shards.reconcile(&req.channel).await;
                if let Some(done) = req.done {
                    let _ = done.send(result);
                }
            }
            Some(channel) = emptied.recv() => {
                let _ = shards.reconcile(&channel).await;
            }
        }
    }
}

struct Shards {
    conn: ClusterConnection,
    fanout: Arc<Fanout>,
    prefix: String,
    /// Channels (without the prefix) this task subscribed and believes live upstream.
    subscribed: HashSet<String>,
    /// Confirmations still to come for the task's own `SSUBSCRIBE`s / `SUNSUBSCRIBE`s:
    /// a confirmation beyond these was not asked for, so it tells of a gap.
    asked_sub: HashMap<String, usize>,
    asked_unsub: HashMap<String, usize>,
    /// Channels that were subscribed when a node connection closed: the client may
    /// resubscribe them by itself (one confirmation each, already reported as a gap).
    orphans: HashSet<String>,
}

impl Shards {
    /// Subscribe or unsubscribe `channel` upstream so it matches the local subscribers.
    /// Running in the one task serialises these, so a subscribe racing the last
    /// unsubscribe of the same channel can never leave it unsubscribed.
    async fn reconcile(&mut self, channel: &str) -> Result<(), EngineError> {
        let wanted = self.fanout.has_subscribers(channel);
        let name = format!("{}{channel}", self.prefix);
        if wanted && !self.subscribed.contains(channel) {
            *self.asked_sub.entry(channel.to_owned()).or_default() += 1;
            if let Err(e) = self.conn.ssubscribe(&name).await {
                take(&mut self.asked_sub, channel);
                return Err(unavailable(e));
            }
            self.subscribed.insert(channel.to_owned());
        } else if !wanted && self.subscribed.remove(channel) {
            *self.asked_unsub.entry(channel.to_owned()).or_default() += 1;
            if let Err(e) = self.conn.sunsubscribe(&name).await {
                take(&mut self.asked_unsub, channel);
                return Err(unavailable(e));
            }
        }
        Ok(())
    }

    async fn on_push(&mut self, push: PushInfo) {
        if push.kind == PushKind::Disconnection {
            let cut = self.fanout.lag_all();
            self.orphans.extend(self.subscribed.drain());
            tracing::warn!(
                subscribers = cut,
                "a redis cluster node connection closed; local subscribers cut off"
            );
            return;
        }
        let mut data = push.data.into_iter();
        let Some(channel) = data.next().and_then(text) else {
            return;
        };
        let Some(channel) = channel.strip_prefix(self.prefix.as_str()) else {
            return;
        };
        match push.kind {
            PushKind::SMessage => {
                let Some(Value::BulkString(payload)) = data.next() else {
                    return;
                };
                if self.fanout.deliver(channel, Bytes::from(payload)) > 0 {
                    return;
                }
                // A message after the closed connection's pushes: any resubscription of
                // this channel has been confirmed by now, none is still to come.
                self.orphans.remove(channel);
                self.drop_unwanted(channel).await;
            }
            PushKind::SSubscribe => {
                if take(&mut self.asked_sub, channel) {
                    return;
                }
                if !self.orphans.remove(channel) {
                    let cut = self.fanout.lag(channel);
                    tracing::warn!(
                        channel,
                        subscribers = cut,
                        "redis cluster resubscribed a channel on another node; its subscribers cut off"
                    );
                    self.subscribed.remove(channel);
                }
                self.drop_unwanted(channel).await;
            }
            PushKind::SUnsubscribe => {
                if take(&mut self.asked_unsub, channel) {
                    return;
                }
                self.orphans.remove(channel);
                if self.subscribed.remove(channel) {
                    let cut = self.fanout.lag(channel);
                    tracing::warn!(
                        channel,
                        subscribers = cut,
                        "redis cluster dropped a channel (its slot moved); its subscribers cut off"
                    );
                }
            }
            _ => {}
        }
    }

    /// `channel` is subscribed upstream (a message or confirmation just came): unsubscribe
    /// it if no local subscriber wants it and the task has not already.
    async fn drop_unwanted(&mut self, channel: &str) {
        if self.subscribed.contains(channel)
            || self.fanout.has_subscribers(channel)
            || self.asked_unsub.contains_key(channel)
        {
            return;
        }
        self.subscribed.insert(channel.to_owned());
        if let Err(e) = self.reconcile(channel).await {
            tracing::debug!(channel, error = %e, "cannot drop an unwanted subscription");
        }
    }
}

/// Count one expected confirmation of `channel` as arrived; false if none was expected.
fn take(asked: &mut HashMap<String, usize>, channel: &str) -> bool {
    match asked.get_mut(channel) {
        Some(n) if *n > 1 => {
            *n -= 1;
            true
        }
        Some(_) => {
            asked.remove(channel);
            true
        }
        None => false,
    }
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}
