//! Keeping a session's events in the order the client sent them.
//!
//! Transports run each event's handler as its own task, so two events from one client can
//! race (a `credentials` and the `connect` right behind it). Each event therefore takes a
//! [`Ticket`] synchronously on arrival; the ordered part of its handling (validation, storing
//! credentials, queueing the job) waits for its turn, and the ticket's drop lets the next one
//! go. Waiting for the platform's reply happens after, concurrently. A ticket dropped unused
//! gives up its turn, so a lost handler can never wedge the session.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
struct State {
    issued: u64,
    /// The ticket whose turn it is.
    serving: u64,
    /// Tickets finished (or dropped) before their turn came.
    done_early: BTreeSet<u64>,
}

#[derive(Default)]
pub(crate) struct Turnstile {
    state: Mutex<State>,
    turn: Notify,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Turnstile {
    /// Take the next ticket (call in arrival order, before spawning).
    pub fn ticket(self: &Arc<Self>) -> Ticket {
        let mut s = lock(&self.state);
        let n = s.issued;
        s.issued += 1;
        Ticket {
            turnstile: self.clone(),
            number: n,
        }
    }

    fn finish(&self, n: u64) {
        let mut s = lock(&self.state);
        if n != s.serving {
            s.done_early.insert(n);
            return;
        }
        s.serving += 1;
        loop {
            let next = s.serving;
            if !s.done_early.remove(&next) {
                break;
            }
            s.serving += 1;
        }
        drop(s);
        self.turn.notify_waiters();
    }
}

/// A place in the session's queue of events; its drop ends its turn.
pub struct Ticket {
    turnstile: Arc<Turnstile>,
    number: u64,
}

impl Ticket {
    /// Wait until every earlier ticket has finished.
    pub async fn turn(&self) {
        loop {
            let notified = self.turnstile.turn.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.turnstile.state).serving == self.number {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.turnstile.finish(self.number);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_follow_ticket_order_even_if_tasks_run_reversed() {
        let t = Arc::new(Turnstile::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let tickets: Vec<Ticket> = (0..5).map(|_| t.ticket()).collect();
        let mut tasks = Vec::new();
        for (i, ticket) in tickets.into_iter().enumerate().rev() {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                ticket.turn().await;
                log.lock().unwrap().push(i);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_dropped_ticket_gives_up_its_turn() {
        let t = Arc::new(Turnstile::default());
        let first = t.ticket();
        let second = t.ticket();
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), second.turn())
            .await
            .expect("second ticket must get its turn");
    }
}
