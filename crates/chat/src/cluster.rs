//! Chat routing across nodes: a frame for some users reaches their connections on this
//! node through the [`Hub`] and their connections on other nodes through the engine's
//! [`Broker`].
//!
//! Channels (on the engine's broker; Redis pub/sub with `--redis-url`):
//!
//! | channel | who listens | carries |
//! |---|---|---|
//! | `node:{id}` | node `id` | frames for some of its users |
//! | `chat:presence` | every node | `user_online` / `user_offline` for presence watchers |
//! | [`EXPIRED_CHANNEL`] | every node | users the registry took offline with their dead node |
//!
//! Batching is per node, not per socket: the [`Registry`] says in one call which nodes hold
//! connections of which recipients ([`Registry::locate`]), and each remote node gets one
//! publish carrying the frame once and its recipients' ids; the publishes go out
//! concurrently, pipelined on the broker's one command connection. The answer is kept per
//! recipient set (a room's members) with the registry's version, and the next message
//! asks only whether anything moved since: one script call on Redis that answers
//! "unchanged" while nothing has, so a busy room's members are looked up once, not once
//! per message. Asking every time, rather than
//! waiting to be told of moves, is what makes a device that was just answered
//! `connection_established` on another node get the very next message: a notice that a
//! connection came would race the message itself. With the embedded engine every
//! connection is on this node, so nothing is looked up or published: chat runs exactly
//! as on one node.
//!
//! Delivery between nodes is at most once, like pub/sub. When a node's subscription is
//! cut off (its Redis connection dropped, or it fell too far behind) it may have missed
//! frames, so it closes its connections (1012) rather than leave a silent gap; a direct
//! message is stored before it is routed, so one missed that way is still `sent` and
//! arrives as offline backlog when the client reconnects. The connection that writes it,
//! on whichever node, marks it delivered (the shared store tells which was first) and the
//! sender hears `message_delivered` wherever they are connected.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_engine::broker::Recv;
use switchboard_engine::registry::{EXPIRED_CHANNEL, Located};
use switchboard_engine::{Broker, Engine, EngineError, Registry};
use switchboard_store::{MessageStore, Timestamp};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::hub::{Hub, Out};
use crate::protocol::frame;
use crate::receipts::Delivered;

const PRESENCE: &str = "chat:presence";

/// Why a node closes its connections after its subscription was cut off.
const MISSED: &str = "Missed messages from other nodes; reconnect";

/// Close reasons a node can be asked to use (a close frame's reason is static text).
const CLOSE_REASONS: &[&str] = &["Replaced by a newer connection"];

fn node_channel(node: &str) -> String {
    format!("node:{node}")
}

/// What travels between nodes: this header as one JSON line, then the frame text as is
/// (so the frame is neither re-encoded nor escaped).
#[derive(Serialize, Deserialize)]
struct Header {
    /// The publishing node (a node ignores its own broadcasts).
    from: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    users: Vec<i64>,
    /// The frame is this `new_message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<i64>,
    /// Close the users' connections with this code and reason instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    close: Option<(u16, String)>,
    /// Mark this direct message delivered if the node hands it to a connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receipt: Option<Delivered>,
}

impl Header {
    fn from(node: &str) -> Self {
        Header {
            from: node.to_owned(),
            users: Vec::new(),
            message: None,
            close: None,
            receipt: None,
        }
    }
}

/// Remote nodes holding connections of some recipients, with those recipients.
type Remote = Arc<BTreeMap<String, Vec<i64>>>;

/// Where some recipients were, as of a registry version.
struct Kept {
    version: u64,
    remote: Remote,
}

/// Most recipient sets whose location is kept (then all are forgotten).
const LOCATED_CAPACITY: usize = 4096;

fn encode(header: &Header, text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 128);
    // A derived Serialize of plain data cannot fail; serde_json never writes a raw newline.
    let _ = serde_json::to_writer((&mut buf).writer(), header);
    buf.put_u8(b'\n');
    buf.put_slice(text.as_bytes());
    buf.freeze()
}

fn decode(payload: &[u8]) -> Option<(Header, Utf8Bytes)> {
    let split = payload.iter().position(|b| *b == b'\n')?;
    let header = serde_json::from_slice(&payload[..split]).ok()?;
    let text = std::str::from_utf8(&payload[split + 1..]).ok()?;
    Some((header, Utf8Bytes::from(text.to_owned())))
}

pub(crate) struct Cluster {
    hub: Arc<Hub>,
    registry: Arc<dyn Registry>,
    broker: Arc<dyn Broker>,
    node: String,
    /// The engine is this process's own (embedded): no other node can hold a connection,
    /// so nothing is looked up or published.
    alone: bool,
    located: Mutex<HashMap<Vec<i64>, Kept>>,
}

impl Cluster {
    pub(crate) fn new(hub: Arc<Hub>, engine: &Engine, node: String) -> Self {
        Cluster {
            hub,
            registry: engine.registry.clone(),
            broker: engine.broker.clone(),
            alone: !engine.distributed,
            node,
            located: Mutex::new(HashMap::new()),
        }
    }

    /// Record a connection of `user` in the registry (`true`: the user just came online).
    pub(crate) async fn connect(&self, user: i64, conn: &str) -> Result<bool, EngineError> {
        self.registry
            .connect(&user.to_string(), conn, &self.node)
            .await
    }

    /// Forget a connection (`true`: it was the user's last).
    pub(crate) async fn disconnect(&self, user: i64, conn: &str) -> Result<bool, EngineError> {
        self.registry.disconnect(&user.to_string(), conn).await
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<i64>, Kept>> {
        self.located.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The remote nodes holding connections of `users`: what was kept, if nothing moved
    /// since, or the registry's new answer.
    async fn locate(&self, users: &[i64]) -> Result<Remote, EngineError> {
        // Taken (an `Arc`) before asking, so an "unchanged" answer needs no second look.
        let kept = self
            .kept()
            .get(users)
            .map(|k| (k.version, k.remote.clone()));
        let ids: Vec<String> = users.iter().map(i64::to_string).collect();
        let known = kept.as_ref().map(|(version, _)| *version);
        let (version, mut nodes) = match self.registry.locate(&ids, known).await? {
            Located::At { version, nodes } => (version, nodes),
            // Only ever the answer to a known version, so `kept` is there.
            Located::Unchanged => return Ok(kept.map(|(_, remote)| remote).unwrap_or_default()),
        };
        nodes.remove(&self.node);
        let remote: Remote = Arc::new(
            nodes
                .into_iter()
                .map(|(node, held)| (node, held.iter().filter_map(|u| u.parse().ok()).collect()))
                .collect(),
        );
        let mut kept = self.kept();
        if kept.len() >= LOCATED_CAPACITY {
            kept.clear();
        }
        // Answers to concurrent lookups may come back in any order: keep the newest.
        match kept.get(users) {
            Some(k) if k.version >= version => {}
            _ => {
                kept.insert(
                    users.to_vec(),
                    Kept {
                        version,
                        remote: remote.clone(),
                    },
                );
            }
        }
        Ok(remote)
    }

    /// Forget every kept location (the broker was cut off: the registry may have been
    /// restarted and lost its version).
    fn forget_locations(&self) {
        self.kept().clear();
    }

    /// Queue `out` on every connection of `users`, on every node, except this node's
    /// connection `except`. A direct message's receipt travels with it, so the connection
    /// that writes it, on whichever node, marks it delivered. Returns the connections
    /// reached on this node.
    pub(crate) async fn send(&self, users: &[i64], out: &Out, except: Option<u64>) -> usize {
        if self.alone {
            return self.hub.send_to_users(users, out, except);
        }
        // The remote half is polled first (`biased`), so its PUBLISH is handed to the
        // broker's connection before the local connections are woken. On a one-thread
        // runtime a woken task runs after those woken before it, so publishing after the
        // local queueing held the other nodes' frames back behind every local socket write
        // (250 of them in the split benchmark); this way both nodes write at once.
        let ((), local) = tokio::join!(
            biased;
            self.send_remote(users, out),
            async { self.hub.send_to_users(users, out, except) },
        );
        local
    }

    /// The other nodes' half of [`Cluster::send`]: one publish per node holding some of
    /// `users`.
    async fn send_remote(&self, users: &[i64], out: &Out) {
        let (text, message, close, receipt) = match out {
            Out::Frame(t) => (t.as_str(), None, None, None),
            Out::Message(id, t, receipt) => (t.as_str(), Some(*id), None, receipt.as_deref()),
            Out::Close(code, reason) => ("", None, Some((*code, (*reason).to_owned())), None),
        };
        let mut header = Header {
            message,
            close,
            receipt: receipt.cloned(),
            ..Header::from(&self.node)
        };
        let nodes = match self.locate(users).await {
            Ok(nodes) => nodes,
            Err(e) => {
                tracing::error!(error = %e, users = users.len(), "registry unavailable: frame reaches this node only");
                return;
            }
        };
        let mut publishes = Vec::new();
        for (node, held) in nodes.iter() {
            header.users.clone_from(held);
            let payload = encode(&header, text);
            publishes.push(async move {
                let channel = node_channel(node);
                if let Err(e) = self.broker.publish(&channel, payload).await {
                    tracing::error!(error = %e, node = %node, "cannot route a frame to a node");
                }
            });
        }
        futures_util::future::join_all(publishes).await;
    }

    /// Tell every presence watcher, on every node.
    pub(crate) async fn presence_event(&self, text: Utf8Bytes) {
        self.hub.presence_event(text.clone());
        if self.alone {
            return;
        }
        let header = Header::from(&self.node);
        if let Err(e) = self.broker.publish(PRESENCE, encode(&header, &text)).await {
            tracing::error!(error = %e, "cannot announce presence to the other nodes");
        }
    }

    /// Close every connection of `user` on every node but this node's `keep`.
    pub(crate) async fn close_others(&self, user: i64, keep: u64, code: u16, reason: &'static str) {
        self.send(&[user], &Out::Close(code, reason), Some(keep))
            .await;
    }

    /// Start listening to this node's channels; the answer comes once they are subscribed
    /// (retrying with backoff until the broker accepts).
    pub(crate) fn listen(
        self: &Arc<Self>,
        store: Arc<dyn MessageStore>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> oneshot::Receiver<()> {
        let (ready, answer) = oneshot::channel();
        tokio::spawn(listen(self.clone(), store, shutdown, ready));
        answer
    }

    /// A frame from another node.
    fn receive(&self, header: Header, text: Utf8Bytes) {
        let out = match (header.close, header.message) {
            (Some((code, reason)), _) => {
                let reason = CLOSE_REASONS
                    .iter()
                    .find(|r| **r == reason)
                    .copied()
                    .unwrap_or("Closed by the server");
                Out::Close(code, reason)
            }
            (None, Some(id)) => Out::Message(id, text, header.receipt.map(Arc::new)),
            (None, None) => Out::Frame(text),
        };
        self.hub.send_to_users(&header.users, &out, None);
    }

    /// A user the registry took offline with their dead node.
    async fn expired(&self, store: &dyn MessageStore, user: &str) {
        let Ok(id) = user.parse::<i64>() else { return };
        if self.hub.username(id).is_some() {
            // Still connected here: this node was the one presumed dead, and its heartbeat
            // registers the connection again.
            return;
        }
        let username = match store.user(id).await {
            Ok(Some(u)) => u.username,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, user = id, "cannot load an expired user");
                return;
            }
        };
        self.hub.presence_event(frame(
            "user_offline",
            json!({ "userId": id, "username": username, "lastSeen": Timestamp::now() }),
        ));
    }
}

async fn listen(
    cluster: Arc<Cluster>,
    store: Arc<dyn MessageStore>,
    shutdown: tokio_util::sync::CancellationToken,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    let own = node_channel(&cluster.node);
    loop {
        let subscribed = async {
            Ok::<_, switchboard_engine::EngineError>((
                cluster.broker.subscribe(&own).await?,
                cluster.broker.subscribe(PRESENCE).await?,
                cluster.broker.subscribe(EXPIRED_CHANNEL).await?,
            ))
        };
        let (mut node, mut presence, mut expired) = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = subscribed => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot subscribe to the chat channels");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        };
        backoff = Duration::from_millis(100);
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        tracing::debug!(node = %cluster.node, "chat channels subscribed");
        let ended = loop {
            let recv = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = node.recv() => r,
                r = presence.recv() => match r {
                    Recv::Message(payload) => {
                        match decode(&payload) {
                            Some((h, _)) if h.from == cluster.node => {}
                            Some((_, text)) => cluster.hub.presence_event(text),
                            None => tracing::warn!("unreadable presence event from another node"),
                        }
                        continue;
                    }
                    other => other,
                },
                r = expired.recv() => match r {
                    Recv::Message(user) => {
                        cluster.expired(store.as_ref(), &String::from_utf8_lossy(&user)).await;
                        continue;
                    }
                    other => other,
                },
            };
            match recv {
                Recv::Message(payload) => match decode(&payload) {
                    Some((header, text)) => cluster.receive(header, text),
                    None => {
                        tracing::warn!(bytes = payload.len(), "unreadable frame from another node")
                    }
                },
                other => break other,
            }
        };
        // Frames published meanwhile are gone. Never a silent gap: every connection here is
        // closed, and reconnecting brings the direct messages it missed (stored, still
        // `sent`) as offline backlog.
        tracing::warn!(reason = ?ended, "chat channels cut off; closing this node's connections and subscribing again");
        cluster.forget_locations();
        cluster.hub.close_all(1012, MISSED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_crosses_unchanged_with_its_header() {
        let text = r#"{"type":"new_message","data":{"content":"line\nbreak ü"}}"#;
        let header = Header {
            users: vec![3, 4],
            message: Some(9),
            ..Header::from("node-a")
        };
        let (h, t) = decode(&encode(&header, text)).expect("decodes");
        assert_eq!(
            (h.from.as_str(), h.users, h.message),
            ("node-a", vec![3, 4], Some(9))
        );
        assert_eq!(t.as_str(), text);
        assert!(decode(b"no header line").is_none());
        assert!(decode(b"{not json}\n{}").is_none());
    }
}
