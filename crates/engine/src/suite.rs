//! The behaviour every engine backend must show, written once and run by each backend's
//! tests (as Centrifuge does for its brokers). Names are randomised so a shared Redis can
//! run the suite concurrently; waits are short and real so it also runs against a network
//! backend. Each function panics with a message naming the broken behaviour.

use std::time::Duration;

use bytes::Bytes;

use crate::broker::{Recv, SUBSCRIBER_BUFFER};
use crate::queue::RetryPolicy;
use crate::registry::Located;
use crate::seal::random_id;
use crate::{Broker, CredentialStore, JobQueue, Leases, NackOutcome, Registry};

fn unique(prefix: &str) -> String {
    format!("suite:{prefix}:{}", random_id::<6>())
}

async fn recv_within(sub: &mut crate::Subscription, ms: u64) -> Option<Recv> {
    tokio::time::timeout(Duration::from_millis(ms), sub.recv())
        .await
        .ok()
}

/// Broker: fan-out, ordering, channel isolation, unsubscribe on drop, lagging subscribers.
pub async fn broker(b: &dyn Broker) {
    let ch = unique("ch");
    let other = unique("other");

    assert_eq!(
        b.publish(&ch, Bytes::from_static(b"nobody")).await.unwrap(),
        0,
        "publish with no subscriber must reach nobody"
    );

    let mut s1 = b.subscribe(&ch).await.unwrap();
    let mut s2 = b.subscribe(&ch).await.unwrap();
    let mut s3 = b.subscribe(&other).await.unwrap();

    for i in 0..10u8 {
        b.publish(&ch, Bytes::from(vec![i])).await.unwrap();
    }
    for sub in [&mut s1, &mut s2] {
        for i in 0..10u8 {
            assert_eq!(
                recv_within(sub, 2000).await,
                Some(Recv::Message(Bytes::from(vec![i]))),
                "every subscriber gets every message, in publish order"
            );
        }
    }
    assert!(
        recv_within(&mut s3, 50).await.is_none(),
        "a message must not leak to another channel"
    );

    drop(s2);
    b.publish(&ch, Bytes::from_static(b"after drop"))
        .await
        .unwrap();
    assert_eq!(
        recv_within(&mut s1, 2000).await,
        Some(Recv::Message(Bytes::from_static(b"after drop")))
    );

    // A subscriber that never reads is cut off with Lagged rather than skipped silently,
    // while a subscriber of the same channel that keeps reading is not held up by it.
    let slow_ch = unique("slow");
    let mut slow = b.subscribe(&slow_ch).await.unwrap();
    let mut reader = b.subscribe(&slow_ch).await.unwrap();
    let total = u16::try_from(SUBSCRIBER_BUFFER + 10).expect("buffer fits u16");
    let numbered = |i: u16| Bytes::copy_from_slice(&i.to_be_bytes());
    // Why the reader: a network backend delivers some time after `publish` returns (on a
    // Redis Cluster each message still has to cross the cluster bus), so `slow` cannot be
    // read right after publishing: it would drain messages as they arrive, keep up, and
    // rightly never lag. Every subscriber of a channel is offered each message together,
    // so once the reader has the last one, `slow` has been offered all of them. The reader
    // reads in chunks, so it never falls a buffer behind itself.
    for chunk in (0..total).collect::<Vec<_>>().chunks(100) {
        for &i in chunk {
            b.publish(&slow_ch, numbered(i)).await.unwrap();
        }
        for &i in chunk {
            // Generous: only a failing run waits it out, and a starved machine can hold
            // up a Redis Cluster's bus for seconds.
            assert_eq!(
                recv_within(&mut reader, 10_000).await,
                Some(Recv::Message(numbered(i))),
                "a reading subscriber gets every message in order, next to a lagging one"
            );
        }
    }
    let mut got = 0;
    loop {
        // Everything is already in `slow`'s buffer: no wait for the network here.
        match recv_within(&mut slow, 2000).await {
            Some(Recv::Message(m)) => {
                assert_eq!(
                    m,
                    numbered(got),
                    "a lagging subscriber keeps the first messages, in order"
                );
                got += 1;
            }
            Some(Recv::Lagged) => break,
            other => panic!(
                "a lagging subscriber must end with Lagged, got {other:?} after {got} messages"
            ),
        }
    }
    assert!(
        usize::from(got) <= SUBSCRIBER_BUFFER,
        "lagging subscriber buffered {got} messages"
    );
}

/// JobQueue: FIFO, exclusivity of reservations, ack, retry with backoff, dead letters,
/// waiting consumers woken by a push, removal.
pub async fn queue(q: &dyn JobQueue, policy: RetryPolicy) {
    let name = unique("q");
    assert!(
        q.reserve(&name, Duration::from_millis(20))
            .await
            .unwrap()
            .is_none(),
        "an empty queue reserves nothing"
    );

    q.push(&name, "a", Bytes::from_static(b"A")).await.unwrap();
    q.push(&name, "b", Bytes::from_static(b"B")).await.unwrap();
    assert_eq!(q.len(&name).await.unwrap(), 2);

    let a = q
        .reserve(&name, Duration::ZERO)
        .await
        .unwrap()
        .expect("job a");
    assert_eq!(
        (a.job_id.as_str(), &a.payload[..], a.attempt),
        ("a", &b"A"[..], 1)
    );
    let b = q
        .reserve(&name, Duration::ZERO)
        .await
        .unwrap()
        .expect("job b");
    assert_eq!(b.job_id, "b", "jobs come out in push order");
    assert!(
        q.reserve(&name, Duration::from_millis(20))
            .await
            .unwrap()
            .is_none(),
        "a reserved job is not handed out twice"
    );

    q.ack(&name, a.tag).await.unwrap();
    assert!(q.ack(&name, a.tag).await.is_err(), "double ack is an error");

    // Retry: b comes back after its backoff with the attempt counted.
    let outcome = q.nack(&name, b.tag).await.unwrap();
    assert_eq!(
        outcome,
        NackOutcome::Retrying {
            after: policy.backoff(1)
        }
    );
    let again = q
        .reserve(&name, policy.backoff(1) + Duration::from_secs(2))
        .await
        .unwrap()
        .expect("a nacked job is retried");
    assert_eq!((again.job_id.as_str(), again.attempt), ("b", 2));

    // Out of attempts → dead letters, not an endless loop.
    let mut d = again;
    loop {
        match q.nack(&name, d.tag).await.unwrap() {
            NackOutcome::DeadLettered => break,
            NackOutcome::Retrying { after } => {
                d = q
                    .reserve(&name, after + Duration::from_secs(2))
                    .await
                    .unwrap()
                    .expect("retried job");
            }
        }
    }
    assert_eq!(
        d.attempt, policy.max_attempts,
        "dead-lettered after max attempts"
    );
    let dead = q.dead_letters(&name).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job_id, "b");

    // A waiting consumer is woken by a push.
    let pushed = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        q.push(&name, "c", Bytes::from_static(b"C")).await.unwrap();
    };
    let (got, ()) = tokio::join!(q.reserve(&name, Duration::from_secs(5)), pushed);
    assert_eq!(got.unwrap().expect("woken by push").job_id, "c");

    // Removing a queue reports the jobs its requesters are still waiting on.
    q.push(&name, "d", Bytes::from_static(b"D")).await.unwrap();
    let mut gone: Vec<String> = q
        .remove(&name)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.job_id)
        .collect();
    gone.sort();
    assert_eq!(gone, vec!["c".to_owned(), "d".to_owned()]);
    assert_eq!(q.len(&name).await.unwrap(), 0);
}

/// CredentialStore: put/get, per-session isolation, replace, TTL expiry, delete_session.
pub async fn credentials(s: &dyn CredentialStore) {
    let a = unique("session-a");
    let b = unique("session-b");
    let long = Duration::from_secs(600);

    s.put(&a, "irc:alice", Bytes::from_static(b"sealed-1"), long)
        .await
        .unwrap();
    assert_eq!(
        s.get(&a, "irc:alice").await.unwrap(),
        Some(Bytes::from_static(b"sealed-1"))
    );
    assert_eq!(
        s.get(&b, "irc:alice").await.unwrap(),
        None,
        "another session must not see the blob"
    );

    s.put(&a, "irc:alice", Bytes::from_static(b"sealed-2"), long)
        .await
        .unwrap();
    assert_eq!(
        s.get(&a, "irc:alice").await.unwrap(),
        Some(Bytes::from_static(b"sealed-2")),
        "put replaces"
    );

    s.put(
        &a,
        "short",
        Bytes::from_static(b"x"),
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        s.get(&a, "short").await.unwrap(),
        None,
        "entries expire after their TTL"
    );

    s.put(&b, "xmpp:bob", Bytes::from_static(b"y"), long)
        .await
        .unwrap();
    assert!(s.delete_session(&a).await.unwrap() >= 1);
    assert_eq!(
        s.get(&a, "irc:alice").await.unwrap(),
        None,
        "delete_session forgets all"
    );
    assert_eq!(
        s.get(&b, "xmpp:bob").await.unwrap(),
        Some(Bytes::from_static(b"y")),
        "deleting one session leaves the others"
    );
    s.delete_session(&b).await.unwrap();
}

/// Registry: first/last connection transitions, several devices and nodes, idempotence.
pub async fn registry(r: &dyn Registry) {
    let alice = unique("alice");
    let bob = unique("bob");
    assert!(!r.is_online(&alice).await.unwrap());
    assert!(
        r.connect(&alice, "c1", "n1").await.unwrap(),
        "the first connection brings a user online"
    );
    assert!(
        !r.connect(&alice, "c2", "n2").await.unwrap(),
        "a second device is not a new arrival"
    );
    assert!(
        !r.connect(&alice, "c2", "n2").await.unwrap(),
        "recording a connection twice is harmless"
    );
    assert_eq!(
        r.connections(&alice).await.unwrap(),
        vec![
            ("c1".to_owned(), "n1".to_owned()),
            ("c2".to_owned(), "n2".to_owned())
        ],
        "connections with their nodes, oldest first"
    );
    assert!(r.is_online(&alice).await.unwrap());
    assert!(!r.is_online(&bob).await.unwrap());
    r.connect(&bob, "c3", "n2").await.unwrap();
    let asked = [alice.clone(), bob.clone(), unique("nobody")];
    let Located::At { version, nodes } = r.locate(&asked, None).await.unwrap() else {
        panic!("with no version known, locate answers where the users are");
    };
    assert_eq!(
        nodes.into_iter().collect::<Vec<_>>(),
        vec![
            ("n1".to_owned(), vec![alice.clone()]),
            ("n2".to_owned(), vec![alice.clone(), bob.clone()]),
        ],
        "each node with the users it holds; users without connections nowhere"
    );
    assert_eq!(
        r.locate(&asked, Some(version)).await.unwrap(),
        Located::Unchanged,
        "nothing moved since that answer"
    );
    r.connect(&alice, "c2", "n2").await.unwrap();
    assert_eq!(
        r.locate(&asked, Some(version)).await.unwrap(),
        Located::Unchanged,
        "a connection recorded twice moves nothing"
    );
    // Any connection, of anyone, anywhere, makes a kept answer stale: the registry
    // does not know which answers it concerns.
    let carol = unique("carol");
    r.connect(&carol, "c4", "n3").await.unwrap();
    let Located::At {
        version: after_connect,
        nodes,
    } = r.locate(&asked, Some(version)).await.unwrap()
    else {
        panic!("a connection came since that version");
    };
    assert_ne!(after_connect, version);
    assert_eq!(nodes.len(), 2, "carol was not asked about");
    r.disconnect(&carol, "c4").await.unwrap();
    assert!(
        matches!(
            r.locate(&asked, Some(after_connect)).await.unwrap(),
            Located::At { version: v, .. } if v != after_connect && v != version
        ),
        "a connection going is a change too, and versions are not reused"
    );
    assert!(r.disconnect(&bob, "c3").await.unwrap());
    let online = r.online_users().await.unwrap();
    assert!(online.contains(&alice) && !online.contains(&bob));

    assert!(
        !r.disconnect(&alice, "c1").await.unwrap(),
        "still on another device"
    );
    assert!(
        !r.disconnect(&alice, "nope").await.unwrap(),
        "unknown connections change nothing"
    );
    assert!(!r.disconnect(&bob, "c1").await.unwrap());
    assert!(
        r.disconnect(&alice, "c2").await.unwrap(),
        "the last connection takes the user offline"
    );
    assert!(!r.disconnect(&alice, "c2").await.unwrap(), "and only once");
    assert!(!r.is_online(&alice).await.unwrap());
    assert!(r.connections(&alice).await.unwrap().is_empty());
    assert!(!r.online_users().await.unwrap().contains(&alice));
}

/// Leases: one holder at a time, renewal only by the holder, compare-and-release, expiry
/// hands the name to the next taker, a shared holder string keeps one lease alive.
pub async fn leases(l: &dyn Leases) {
    let name = unique("lease");
    let long = Duration::from_secs(600);
    assert_eq!(
        l.holder(&name).await.unwrap(),
        None,
        "nobody holds a new name"
    );
    assert_eq!(
        l.acquire(&name, "node-a", long).await.unwrap(),
        "node-a",
        "the first taker holds it"
    );
    assert_eq!(
        l.acquire(&name, "node-b", long).await.unwrap(),
        "node-a",
        "a second taker is told who holds it"
    );
    assert_eq!(
        l.acquire(&name, "node-a", long).await.unwrap(),
        "node-a",
        "acquiring again as the holder keeps it"
    );
    assert_eq!(l.holder(&name).await.unwrap().as_deref(), Some("node-a"));
    assert!(l.renew(&name, "node-a", long).await.unwrap());
    assert!(
        !l.renew(&name, "node-b", long).await.unwrap(),
        "only the holder renews"
    );
    assert!(
        !l.release(&name, "node-b",).await.unwrap(),
        "only the holder releases"
    );
    assert_eq!(l.holder(&name).await.unwrap().as_deref(), Some("node-a"));
    assert!(l.release(&name, "node-a").await.unwrap());
    assert!(!l.release(&name, "node-a").await.unwrap(), "released once");
    assert_eq!(l.holder(&name).await.unwrap(), None);
    assert_eq!(l.acquire(&name, "node-b", long).await.unwrap(), "node-b");

    // A holder that stops renewing loses the name to the next taker, and cannot renew or
    // release what is now someone else's.
    let short = Duration::from_millis(300);
    let other = unique("lease");
    assert_eq!(l.acquire(&other, "node-a", short).await.unwrap(), "node-a");
    assert!(l.renew(&other, "node-a", short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        l.acquire(&other, "node-b", short).await.unwrap(),
        "node-a",
        "a renewed lease has not expired yet"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        l.holder(&other).await.unwrap(),
        None,
        "an unrenewed lease expires"
    );
    assert!(
        !l.renew(&other, "node-a", short).await.unwrap(),
        "an expired lease cannot be renewed"
    );
    assert_eq!(
        l.acquire(&other, "node-b", long).await.unwrap(),
        "node-b",
        "an expired lease goes to the next taker"
    );
    assert!(
        !l.release(&other, "node-a").await.unwrap(),
        "the old holder cannot release the new holder's lease"
    );
    assert_eq!(l.holder(&other).await.unwrap().as_deref(), Some("node-b"));

    // Several users acquiring with one shared holder string keep one mark alive together.
    let mark = unique("mark");
    assert_eq!(l.acquire(&mark, "in-use", short).await.unwrap(), "in-use");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(l.acquire(&mark, "in-use", short).await.unwrap(), "in-use");
    }
    assert!(
        l.holder(&mark).await.unwrap().is_some(),
        "a refreshed mark lives on"
    );
    l.release(&name, "node-b").await.unwrap();
    l.release(&other, "node-b").await.unwrap();
    l.release(&mark, "in-use").await.unwrap();
}
