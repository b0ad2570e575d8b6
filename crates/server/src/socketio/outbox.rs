//! What the gateway session pushes to its connection, waiting for the connection task.
//!
//! The session's listener calls the [`Pusher`] from its own task and must never block, so
//! pushes go into a queue the connection drains when woken. A `VecDeque` behind a mutex
//! allocates only while something is queued: an idle connection holds no buffer (a tokio
//! channel would keep a 32-slot block per connection).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use switchboard_gateway::{Push, Pusher};
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<VecDeque<Push>>,
    ready: Notify,
    closed: AtomicBool,
}

impl Outbox {
    /// The session's end of the queue.
    pub(crate) fn pusher(self: &Arc<Self>) -> Pusher {
        let outbox = self.clone();
        Arc::new(move |push| outbox.push(push))
    }

    fn push(&self, push: Push) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.push_back(push);
        drop(queue);
        self.ready.notify_one();
    }

    /// Wait until something was pushed (cancel-safe).
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Everything queued so far, oldest first; the queue's storage is given back.
    pub(crate) fn take(&self) -> VecDeque<Push> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Drop whatever arrives from now on (the connection is gone).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn pushes_wake_the_reader_in_order_and_stop_after_close() {
        let outbox = Arc::new(Outbox::default());
        let push = outbox.pusher();
        push(Push::Message(json!(1)));
        push(Push::Error(json!(2)));
        // The permit stored by the first push wakes a reader that arrives later.
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.ready())
            .await
            .expect("woken");
        let got: Vec<_> = outbox.take().into_iter().collect();
        assert_eq!(got, [Push::Message(json!(1)), Push::Error(json!(2))]);
        assert!(outbox.take().is_empty());
        outbox.close();
        push(Push::Message(json!(3)));
        assert!(outbox.take().is_empty(), "nothing queued after close");
    }
}
