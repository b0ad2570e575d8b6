//! This node's live connections and the routing of frames to them.
//!
//! Each connection has an [`Outbox`]: a short queue plus a wake-up, drained by the
//! connection's own task (one task per connection, no per-connection channel buffers).
//! Frames are serialised once and shared (`Utf8Bytes` is reference-counted), so a room
//! fan-out costs one allocation, not one per member.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::receipts::Delivered;

/// What a connection's task is asked to do.
#[derive(Clone)]
pub(crate) enum Out {
    Frame(Utf8Bytes),
    /// A `new_message` frame; the id lets a connection drop one it already sent from the
    /// offline backlog. A direct message carries its receipt, which the connection queues
    /// once it has written the frame (see `receipts`).
    Message(i64, Utf8Bytes, Option<Arc<Delivered>>),
    /// Close the connection with this code and reason.
    Close(u16, &'static str),
}

pub(crate) struct Outbox {
    queue: Mutex<VecDeque<Out>>,
    notify: Notify,
    limit: usize,
    overflowed: AtomicBool,
}

impl Outbox {
    pub(crate) fn new(limit: usize) -> Self {
        Outbox {
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            limit,
            overflowed: AtomicBool::new(false),
        }
    }

    /// Queue `out`; `false` when the connection is too far behind (it is then closed by its
    /// task, which sees [`Outbox::overflowed`]).
    pub(crate) fn push(&self, out: Out) -> bool {
        let mut q = lock(&self.queue);
        let ok = q.len() < self.limit;
        if ok {
            q.push_back(out);
        } else {
            self.overflowed.store(true, Ordering::Relaxed);
        }
        drop(q);
        self.notify.notify_one();
        ok
    }

    /// Move everything queued into `into`.
    pub(crate) fn drain(&self, into: &mut Vec<Out>) {
        into.extend(lock(&self.queue).drain(..));
    }

    pub(crate) async fn ready(&self) {
        self.notify.notified().await
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }
}

struct UserConns {
    username: String,
    conns: Vec<(u64, Arc<Outbox>)>,
}

#[derive(Default)]
pub(crate) struct Hub {
    users: Mutex<HashMap<i64, UserConns>>,
    /// Connections that asked for presence (`get_online_users`) and get `user_online` /
    /// `user_offline` from then on.
    watchers: Mutex<HashMap<u64, Arc<Outbox>>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    /// Add a connection of `user`; returns its id (unique on this node).
    pub(crate) fn register(&self, user: i64, username: &str, outbox: Arc<Outbox>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        lock(&self.users)
            .entry(user)
            .or_insert_with(|| UserConns {
                username: username.to_owned(),
                conns: Vec::with_capacity(1),
            })
            .conns
            .push((id, outbox));
        id
    }

    pub(crate) fn unregister(&self, user: i64, conn: u64) {
        let mut users = lock(&self.users);
        if let Some(u) = users.get_mut(&user) {
            u.conns.retain(|(id, _)| *id != conn);
            if u.conns.is_empty() {
                users.remove(&user);
            }
        }
        drop(users);
        lock(&self.watchers).remove(&conn);
    }

    /// Queue `out` on every connection of `users` (a room's members, or one user) but
    /// `except`; returns how many took it. The user map is locked once for the whole list
    /// (a room fan-out is hundreds of users), not once per user.
    pub(crate) fn send_to_users(&self, users: &[i64], out: &Out, except: Option<u64>) -> usize {
        let map = lock(&self.users);
        users
            .iter()
            .filter_map(|user| map.get(user))
            .flat_map(|u| &u.conns)
            .filter(|(id, _)| Some(*id) != except)
            .filter(|(_, outbox)| outbox.push(out.clone()))
            .count()
    }

    /// Close every connection of this node (they missed frames; see `cluster`).
    pub(crate) fn close_all(&self, code: u16, reason: &'static str) {
        let out = Out::Close(code, reason);
        for user in lock(&self.users).values() {
            for (_, outbox) in &user.conns {
                outbox.push(out.clone());
            }
        }
    }

    pub(crate) fn watch_presence(&self, conn: u64, outbox: Arc<Outbox>) {
        lock(&self.watchers).insert(conn, outbox);
    }

    pub(crate) fn presence_event(&self, frame: Utf8Bytes) {
        let out = Out::Frame(frame);
        for outbox in lock(&self.watchers).values() {
            outbox.push(out.clone());
        }
    }

    /// Usernames of users connected here (for `online_users` without a store round trip).
    pub(crate) fn username(&self, user: i64) -> Option<String> {
        lock(&self.users).get(&user).map(|u| u.username.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &Out) -> String {
        match out {
            Out::Frame(t) | Out::Message(_, t, _) => t.to_string(),
            Out::Close(code, _) => format!("close {code}"),
        }
    }

    #[test]
    fn routes_to_every_device_but_the_origin_and_overflows_loudly() {
        let hub = Hub::default();
        let a1 = Arc::new(Outbox::new(2));
        let a2 = Arc::new(Outbox::new(2));
        let c1 = hub.register(1, "alice", a1.clone());
        let _c2 = hub.register(1, "alice", a2.clone());
        assert_eq!(
            hub.send_to_users(&[1], &Out::Frame("x".into()), Some(c1)),
            1
        );
        assert_eq!(hub.send_to_users(&[2], &Out::Frame("x".into()), None), 0);
        let mut got = Vec::new();
        a2.drain(&mut got);
        assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["x"]);
        a1.drain(&mut got);
        assert_eq!(got.len(), 1, "the origin got nothing");

        assert!(a1.push(Out::Frame("1".into())) && a1.push(Out::Frame("2".into())));
        assert!(!a1.overflowed());
        assert!(!a1.push(Out::Frame("3".into())), "full");
        assert!(a1.overflowed());

        hub.unregister(1, c1);
        assert_eq!(hub.send_to_users(&[1], &Out::Frame("y".into()), None), 1);
        assert_eq!(hub.username(1).as_deref(), Some("alice"));
    }
}
