//! "Delivered" receipts, batched: a recipient's connection that has written a direct
//! message to its socket queues the receipt here; one task marks queued messages delivered
//! in the store, one job per batch, and then tells each sender (`message_delivered`). A
//! batch's first receipt waits [`LINGER`] for others, so that the store's writer runs a
//! job per few dozen receipts rather than one per message. At a clean stop the task marks
//! what is queued before the store closes ([`Running::close`]).
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
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_store::{MessageStore, Status, Timestamp};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::cluster::Cluster;
use crate::frame_writer::FrameWriter;
use crate::hub::Out;

/// Most messages marked in one statement.
const BATCH: usize = 512;

/// How long the first receipt of a batch waits for others to join it. Why: each batch is a
/// job of the store's writer, and at 10k messages/s, marking whatever queued during the
/// last mark gave batches of one or two receipts, so a writer job per message for the
/// receipts alone, beside the inserts (BENCHMARKS.md, session 20). No message waits for
/// this: only the sender's `message_delivered` comes up to this much later.
const LINGER: Duration = Duration::from_millis(1);

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
    pub(crate) fn start(self, store: Arc<dyn MessageStore>, cluster: Arc<Cluster>) -> Running {
        let (closing, ended) = (CancellationToken::new(), CancellationToken::new());
        let task = run(
            self.0,
            store,
            cluster,
            closing.clone(),
            ended.clone().drop_guard(),
        );
        tokio::spawn(task);
        Running { closing, ended }
    }
}

/// The receipts' task, until [`Running::close`].
pub(crate) struct Running {
    closing: CancellationToken,
    /// Cancelled when the task ends, however it ends.
    ended: CancellationToken,
}

impl Running {
    /// Take no more receipts, mark and report those queued, and end. For a clean stop, once
    /// the connections that queue receipts are gone and before the store closes: a receipt
    /// left queued would leave its message `sent`, to come again as backlog.
    pub(crate) async fn close(&self) {
        self.closing.cancel();
        self.ended.cancelled().await;
    }
}

async fn run(
    mut rx: mpsc::Receiver<Arc<Delivered>>,
    store: Arc<dyn MessageStore>,
    cluster: Arc<Cluster>,
    closing: CancellationToken,
    _ended: DropGuard,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut closing = std::pin::pin!(closing.cancelled_owned());
    let mut open = true;
    loop {
        let got = tokio::select! {
            // Closing first: from then on nothing more can queue behind what is drained.
            biased;
            () = &mut closing, if open => {
                // Senders now fail; what is queued is still received, then `recv_many`
                // gives 0.
                rx.close();
                open = false;
                continue;
            }
            got = rx.recv_many(&mut batch, BATCH) => got,
        };
        if got == 0 {
            break;
        }
        if batch.len() < BATCH {
            tokio::time::sleep(LINGER).await;
            while batch.len() < BATCH
                && let Ok(d) = rx.try_recv()
            {
                batch.push(d);
            }
        }
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
    use std::path::PathBuf;

    use switchboard_engine::Engine;
    use switchboard_store::{NewMessage, Target};

    use super::*;
    use crate::hub::{Hub, Outbox};

    /// Alice's `count` messages to Bob in an SQLite store on disk, and a cluster whose
    /// reports reach Alice's outbox (each test makes its own receipts' queue).
    struct Fixture {
        dir: PathBuf,
        store: Arc<dyn MessageStore>,
        ids: Vec<i64>,
        alice: i64,
        bob: i64,
        outbox: Arc<Outbox>,
        cluster: Arc<Cluster>,
    }

    impl Fixture {
        async fn new(name: &str, count: usize) -> Self {
            let dir = std::env::temp_dir().join(format!("sb-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("sqlite://{}?mode=rwc", dir.join("chat.db").display());
            let store = switchboard_store::open(&url).await.unwrap();
            let now = Timestamp::now();
            let alice = store.create_user("alice", None, "x", now).await.unwrap().id;
            let bob = store.create_user("bob", None, "x", now).await.unwrap().id;
            let mut ids = Vec::new();
            for i in 0..count {
                let content = format!("m{i}");
                let new = NewMessage {
                    sender: alice,
                    target: Target::User(bob),
                    content: &content,
                    message_type: "text",
                    client_msg_id: None,
                    at: now,
                };
                ids.push(store.insert_message(new).await.unwrap().message.id);
            }
            let hub = Arc::new(Hub::default());
            let outbox = Arc::new(Outbox::new(16));
            hub.register(alice, "alice", outbox.clone());
            let engine = Engine::embedded();
            let cluster = Arc::new(Cluster::new(hub, &engine, "local".into()));
            Fixture {
                dir,
                store,
                ids,
                alice,
                bob,
                outbox,
                cluster,
            }
        }

        fn receipt(&self, id: i64) -> Arc<Delivered> {
            Arc::new(Delivered {
                id,
                sender: self.alice,
                receiver: self.bob,
                client_msg_id: None,
            })
        }

        /// The `message_delivered` reports Alice got, waiting up to 5 s for `count`.
        async fn reports(&self, count: usize) -> Vec<serde_json::Value> {
            let mut reported = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while reported.len() < count && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let mut got = Vec::new();
                self.outbox.drain(&mut got);
                for out in got {
                    if let Out::Frame(text) = out {
                        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                        assert_eq!(v["type"], "message_delivered");
                        reported.push(v["data"].clone());
                    }
                }
            }
            reported
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A full queue makes the next receipt wait; once the task runs, every receipt is
    /// stored and reported: none lost, none doubled (one message written to two devices).
    #[tokio::test]
    async fn a_full_queue_makes_the_producer_wait_and_loses_nothing() {
        let f = Fixture::new("receipts-full", 3).await;
        let ids = &f.ids;
        let (receipts, pending) = Receipts::new(3);

        receipts.delivered(f.receipt(ids[0])).await;
        // Bob's second device wrote it too.
        receipts.delivered(f.receipt(ids[0])).await;
        receipts.delivered(f.receipt(ids[1])).await;
        let third = receipts.delivered(f.receipt(ids[2]));
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), third.as_mut())
                .await
                .is_err(),
            "the third receipt waits while the queue is full"
        );

        pending.start(f.store.clone(), f.cluster.clone());
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .expect("room once the task runs");
        let mut reported: Vec<i64> = f
            .reports(3)
            .await
            .iter()
            .map(|d| d["messageId"].as_i64().unwrap())
            .collect();
        reported.sort_unstable();
        assert_eq!(&reported, ids, "every sender report, once");
        for id in ids {
            let m = f.store.message(*id).await.unwrap().unwrap();
            assert_eq!(m.status.as_str(), "delivered", "message {id}");
        }
    }

    /// Closing (a clean stop) marks and reports every receipt already queued before the
    /// task ends, so none is left `sent` when the store closes next.
    #[tokio::test]
    async fn closing_marks_every_queued_receipt_first() {
        let f = Fixture::new("receipts-close", 3).await;
        let (receipts, pending) = Receipts::new(16);
        for id in &f.ids {
            receipts.delivered(f.receipt(*id)).await;
        }
        let marking = pending.start(f.store.clone(), f.cluster.clone());
        tokio::time::timeout(Duration::from_secs(5), marking.close())
            .await
            .expect("the task ends");
        for id in &f.ids {
            let m = f.store.message(*id).await.unwrap().unwrap();
            assert_eq!(m.status.as_str(), "delivered", "message {id}");
        }
        assert_eq!(f.reports(3).await.len(), 3, "every sender report");
        // Closed: a later receipt is refused at once rather than left waiting in a queue.
        tokio::time::timeout(
            Duration::from_secs(1),
            receipts.delivered(f.receipt(f.ids[0])),
        )
        .await
        .expect("refused at once");
    }

    /// A receipt queued while the first of a batch lingers joins its batch: one mark, so
    /// one `deliveredAt`, although it came 5 ms after the first. Both are stored and
    /// reported.
    #[tokio::test]
    async fn receipts_within_the_linger_are_marked_together() {
        let f = Fixture::new("receipts-linger", 2).await;
        let (receipts, pending) = Receipts::new(16);
        pending.start(f.store.clone(), f.cluster.clone());

        receipts.delivered(f.receipt(f.ids[0])).await;
        // Let the task take the first receipt: without the linger it marks it at once.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        // Blocks this (the only) runtime thread: the task cannot take the first receipt
        // away meanwhile, and a mark of the first alone would be over 5 ms older.
        std::thread::sleep(Duration::from_millis(5));
        receipts.delivered(f.receipt(f.ids[1])).await;

        let reported = f.reports(2).await;
        assert_eq!(reported.len(), 2, "both reported: {reported:?}");
        assert_eq!(
            reported[0]["deliveredAt"], reported[1]["deliveredAt"],
            "one mark for both"
        );
        let first = f.store.message(f.ids[0]).await.unwrap().unwrap();
        let second = f.store.message(f.ids[1]).await.unwrap().unwrap();
        assert_eq!(first.status.as_str(), "delivered");
        assert_eq!(second.status.as_str(), "delivered");
        assert_eq!(first.delivered_at, second.delivered_at);
    }
}
