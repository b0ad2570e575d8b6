//! "Delivered" receipts, batched: a message handed to a recipient's connection is queued
//! here; one task marks queued messages delivered in the store, one job per batch,
//! and then tells each sender (`message_delivered`).
//!
//! The queue is bounded ([`ChatConfig::receipts_queue`](crate::ChatConfig)), so a flood of
//! messages cannot grow memory without end while the store falls behind. When it is full,
//! whoever hands over the next receipt waits for room: the sending connection (its next
//! frame is read once the receipt is queued), or the node's link to the other nodes. The
//! alternatives lose something users see: a dropped receipt leaves its message `sent`, so
//! the recipient would get it a second time as offline backlog at their next connect, and
//! the sender would never hear `message_delivered`. Waiting loses nothing and slows only
//! those producing receipts faster than the store can record them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard_store::{MessageStore, Timestamp};
use tokio::sync::mpsc;

use crate::cluster::Cluster;
use crate::hub::Out;
use crate::protocol::frame;

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
    tx: mpsc::Sender<Delivered>,
}

/// The receiving end of [`Receipts`], until [`Pending::start`] gives it its task.
pub(crate) struct Pending(mpsc::Receiver<Delivered>);

impl Receipts {
    /// The queue (`capacity` receipts at most), and its receiving end to start once the
    /// [`Cluster`] (which both feeds the queue and carries the reports) exists.
    pub(crate) fn new(capacity: usize) -> (Self, Pending) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Receipts { tx }, Pending(rx))
    }

    /// Queue a receipt, waiting while the queue is full.
    pub(crate) async fn delivered(&self, d: Delivered) {
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
    mut rx: mpsc::Receiver<Delivered>,
    store: Arc<dyn MessageStore>,
    cluster: Arc<Cluster>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
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
    let data = json!({
        "messageId": d.id,
        "receiverId": d.receiver,
        "clientMsgId": d.client_msg_id,
        "status": "delivered",
        "deliveredAt": at,
    });
    cluster
        .send(
            &[d.sender],
            &Out::Frame(frame("message_delivered", data)),
            None,
            None,
        )
        .await;
}
