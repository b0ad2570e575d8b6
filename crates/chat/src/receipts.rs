//! "Delivered" receipts, batched: a recipient's connection that has written a direct
//! message to its socket queues the receipt here; one task marks queued messages delivered
//! in the store, one job per batch, and then tells each sender (`message_delivered`).
//!
//! Delivered means written to a connection that was still open: a message queued for a
//! connection that ends first (the client left, the server is closing it) is never
//! written, stays `sent`, and arrives as offline backlog at the next connect. (A frame
//! written just as the client vanishes can still be lost with it: the protocol has no
//! client acknowledgement.)
//!
//! The queue is bounded ([`ChatConfig::receipts_queue`](crate::ChatConfig)), so a flood of
//! messages cannot grow memory without end while the store falls behind. When it is full,
//! the connection handing over the next receipt waits for room (it writes nothing more
//! meanwhile; frames for it queue in its outbox). The alternatives lose something users
//! see: a dropped receipt leaves its message `sent`, so the recipient would get it a
//! second time as offline backlog at their next connect, and the sender would never hear
//! `message_delivered`. Waiting loses nothing and slows only the connections producing
//! receipts faster than the store can record them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchboard_store::{MessageStore, Status, Timestamp};
use tokio::sync::mpsc;

use crate::cluster::Cluster;
use crate::frame_writer::FrameWriter;
use crate::hub::Out;

/// Most messages marked in one statement.
const BATCH: usize = 512;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Delivered {
    pub id: i64,
    pub sender: i64,
    pub receiver: i64,
    pub client_msg_id: Option<String>,
}

#[derive(Clone)]
pub(crate) struct Receipts {
    tx: mpsc::Sender<Arc<Delivered>>,
}

/// The receiving end of [`Receipts`], until [`Pending::start`] gives it its task.
pub(crate) struct Pending(mpsc::Receiver<Arc<Delivered>>);

impl Receipts {
    /// The queue (`capacity` receipts at most), and its receiving end to start once the
    /// [`Cluster`] (which both feeds the queue and carries the reports) exists.
    pub(crate) fn new(capacity: usize) -> (Self, Pending) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Receipts { tx }, Pending(rx))
    }

    /// Queue a receipt, waiting while the queue is full.
    pub(crate) async fn delivered(&self, d: Arc<Delivered>) {
        // Only fails once the service is gone, when nobody is left to tell.
        let _ = self.tx.send(d).await;
    }
}

impl Pending {
    pub(crate) fn start(self, store: Arc<dyn MessageStore>, cluster: Arc<Cluster>) {
        tokio::spawn(run(self.0, store, cluster));
    }
}

async fn run(
    mut rx: mpsc::Receiver<Arc<Delivered>>,
    store: Arc<dyn MessageStore>,
    cluster: Arc<Cluster>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // Each device of a recipient writing the message queues its receipt: report once.
        batch.sort_unstable_by_key(|d| d.id);
        batch.dedup_by_key(|d| d.id);
        let ids: Vec<i64> = batch.iter().map(|d| d.id).collect();
        let at = Timestamp::now();
        match store.mark_delivered(&ids, at).await {
            Ok(changed) => {
                for d in batch.drain(..) {
                    if changed.binary_search(&d.id).is_ok() {
                        report(&cluster, &d, at).await;
                    }
                }
            }
            Err(e) => {
                // Left `sent`: they are delivered again (and marked) at the next connect.
                tracing::error!(error = %e, count = ids.len(), "cannot mark messages delivered");
                batch.clear();
            }
        }
    }
}

/// Tell the sender's connections, on any node, that `d` reached a device of its recipient.
pub(crate) async fn report(cluster: &Cluster, d: &Delivered, at: Timestamp) {
    let text = d.client_msg_id.as_ref().map_or(0, String::len);
    let data = FrameWriter::new("message_delivered", text)
        .int("messageId", d.id)
        .int("receiverId", d.receiver)
        .opt_text("clientMsgId", d.client_msg_id.as_deref())
        .status("status", Status::Delivered)
        .time("deliveredAt", at)
        .finish();
    cluster.send(&[d.sender], &Out::Frame(data), None).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use switchboard_engine::Engine;
    use switchboard_store::{NewMessage, Target};

    use super::*;
    use crate::hub::{Hub, Outbox};

    /// A full queue makes the next receipt wait; once the task runs, every receipt is
    /// stored and reported: none lost, none doubled (one message written to two devices).
    #[tokio::test]
    async fn a_full_queue_makes_the_producer_wait_and_loses_nothing() {
        let dir = std::env::temp_dir().join(format!("sb-receipts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("chat.db").display());
        let store = switchboard_store::open(&url).await.unwrap();
        let now = Timestamp::now();
        let alice = store.create_user("alice", None, "x", now).await.unwrap();
        let bob = store.create_user("bob", None, "x", now).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..3 {
            let content = format!("m{i}");
            let new = NewMessage {
                sender: alice.id,
                target: Target::User(bob.id),
                content: &content,
                message_type: "text",
                client_msg_id: None,
                at: now,
            };
            ids.push(store.insert_message(new).await.unwrap().message.id);
        }

        let hub = Arc::new(Hub::default());
        let outbox = Arc::new(Outbox::new(16));
        hub.register(alice.id, "alice", outbox.clone());
        let (receipts, pending) = Receipts::new(3);
        let engine = Engine::embedded();
        let cluster = Arc::new(Cluster::new(hub, &engine, "local".into()));
        let receipt = |id| {
            Arc::new(Delivered {
                id,
                sender: alice.id,
                receiver: bob.id,
                client_msg_id: None,
            })
        };

        receipts.delivered(receipt(ids[0])).await;
        // Bob's second device wrote it too.
        receipts.delivered(receipt(ids[0])).await;
        receipts.delivered(receipt(ids[1])).await;
        let third = receipts.delivered(receipt(ids[2]));
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), third.as_mut())
                .await
                .is_err(),
            "the third receipt waits while the queue is full"
        );

        pending.start(store.clone(), cluster);
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("room once the task runs");
        let mut reported = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while reported.len() < 3 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut got = Vec::new();
            outbox.drain(&mut got);
            for out in got {
                if let Out::Frame(text) = out {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(v["type"], "message_delivered");
                    reported.push(v["data"]["messageId"].as_i64().unwrap());
                }
            }
        }
        reported.sort_unstable();
        assert_eq!(reported, ids, "every sender report, once");
        for id in &ids {
            let m = store.message(*id).await.unwrap().unwrap();
            assert_eq!(m.status.as_str(), "delivered", "message {id}");
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
