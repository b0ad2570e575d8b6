//! The behaviour every [`MessageStore`] backend must show, written once and run by each
//! backend's tests. Usernames are randomised so the suite can run against a shared
//! database; each check panics with a message naming the broken behaviour.

use crate::{Conversation, MessageStore, NewMessage, Status, StoreError, Target, Timestamp};

fn unique(prefix: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}x{nanos}", std::process::id())
}

fn msg<'a>(
    sender: i64,
    target: Target,
    content: &'a str,
    client: Option<&'a str>,
) -> NewMessage<'a> {
    NewMessage {
        sender,
        target,
        content,
        message_type: "text",
        client_msg_id: client,
        at: Timestamp::now(),
    }
}

/// Accounts, rooms, messages, receipts, idempotency and history paging.
pub async fn message_store(s: &dyn MessageStore) {
    let now = Timestamp::now();

    // Accounts.
    let alice_name = unique("alice");
    let alice = s
        .create_user(&alice_name, Some("a@example.org"), "hash-a", now)
        .await
        .unwrap();
    let bob = s
        .create_user(&unique("bob"), None, "hash-b", now)
        .await
        .unwrap();
    let carol = s
        .create_user(&unique("carol"), None, "hash-c", now)
        .await
        .unwrap();
    assert!(alice.id != bob.id && bob.id != carol.id, "ids are distinct");
    assert!(
        matches!(
            s.create_user(&alice_name.to_uppercase(), None, "x", now)
                .await,
            Err(StoreError::Conflict(_))
        ),
        "usernames are unique regardless of case"
    );
    let account = s
        .account_by_name(&alice_name.to_uppercase())
        .await
        .unwrap()
        .expect("found by any case");
    assert_eq!(account.user, alice);
    assert_eq!(account.email.as_deref(), Some("a@example.org"));
    assert_eq!(account.password_hash, "hash-a");
    assert!(
        s.account_by_name(&unique("nobody"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.user(bob.id).await.unwrap().as_ref(), Some(&bob));
    assert!(s.user(i64::MAX).await.unwrap().is_none());
    let found = s.users(Some(&alice_name[2..]), 10).await.unwrap();
    assert_eq!(found, vec![alice.clone()], "search by part of the name");
    assert!(
        s.users(Some("%"), 10).await.unwrap().is_empty(),
        "LIKE wildcards are literal"
    );
    s.set_last_seen(bob.id, Timestamp(now.0 + 5)).await.unwrap();
    assert_eq!(
        s.user(bob.id).await.unwrap().unwrap().last_seen,
        Some(Timestamp(now.0 + 5))
    );

    // Direct messages: receipts.
    let ab = Target::User(bob.id);
    let m1 = s
        .insert_message(msg(alice.id, ab, "one", Some("c1")))
        .await
        .unwrap();
    assert!(!m1.duplicate);
    let m1 = m1.message;
    assert_eq!(
        (m1.sender_id, m1.receiver_id, m1.room_id),
        (alice.id, Some(bob.id), None)
    );
    assert_eq!((m1.content.as_str(), m1.status), ("one", Status::Sent));
    let again = s
        .insert_message(msg(alice.id, ab, "one again", Some("c1")))
        .await
        .unwrap();
    assert!(
        again.duplicate,
        "same clientMsgId from the same sender is a duplicate"
    );
    assert_eq!(
        again.message, m1,
        "the duplicate returns the stored original"
    );
    let other_sender = s
        .insert_message(msg(carol.id, ab, "carol's c1", Some("c1")))
        .await
        .unwrap();
    assert!(!other_sender.duplicate, "clientMsgIds are per sender");
    let m2 = s
        .insert_message(msg(alice.id, ab, "two", None))
        .await
        .unwrap()
        .message;
    let m3 = s
        .insert_message(msg(alice.id, ab, "three", None))
        .await
        .unwrap()
        .message;
    assert!(m1.id < m2.id && m2.id < m3.id, "ids grow in send order");

    let pending: Vec<i64> = s
        .undelivered(bob.id, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        pending,
        vec![m1.id, other_sender.message.id, m2.id, m3.id],
        "oldest first"
    );
    assert_eq!(
        s.mark_delivered(&[m1.id, m2.id], Timestamp(now.0 + 1))
            .await
            .unwrap(),
        vec![m1.id, m2.id]
    );
    assert!(
        s.mark_delivered(&[m1.id], now).await.unwrap().is_empty(),
        "delivered once"
    );
    let stored = s.message(m1.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.delivered_at),
        (Status::Delivered, Some(Timestamp(now.0 + 1)))
    );
    let pending: Vec<i64> = s
        .undelivered(bob.id, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(pending, vec![other_sender.message.id, m3.id]);

    assert_eq!(
        s.mark_read(bob.id, alice.id, Timestamp(now.0 + 2))
            .await
            .unwrap(),
        vec![m1.id, m2.id, m3.id]
    );
    assert!(
        s.mark_read(bob.id, alice.id, now).await.unwrap().is_empty(),
        "read once"
    );
    let stored = s.message(m3.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Read);
    assert_eq!(stored.read_at, Some(Timestamp(now.0 + 2)));
    assert!(stored.delivered_at.is_some(), "read implies delivered");
    assert_eq!(
        s.message(other_sender.message.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        Status::Sent,
        "only that sender's"
    );
    assert!(
        s.mark_delivered(&[m3.id], now).await.unwrap().is_empty(),
        "read is never demoted"
    );

    // History, both directions, newest first, paged by id.
    let reply = s
        .insert_message(msg(bob.id, Target::User(alice.id), "reply", None))
        .await
        .unwrap()
        .message;
    let page = s
        .history(Conversation::Direct(alice.id, bob.id), None, 2)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![reply.id, m3.id]
    );
    let page = s
        .history(Conversation::Direct(bob.id, alice.id), Some(m3.id), 10)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![m2.id, m1.id],
        "carol's message is not in it"
    );

    // Rooms.
    let room = s.create_room("general", alice.id, now).await.unwrap();
    assert_eq!(s.room(room.id).await.unwrap().as_ref(), Some(&room));
    assert!(
        s.is_member(room.id, alice.id).await.unwrap(),
        "the creator is a member"
    );
    assert!(s.join_room(room.id, bob.id, now).await.unwrap());
    assert!(
        !s.join_room(room.id, bob.id, now).await.unwrap(),
        "joining twice changes nothing"
    );
    assert!(matches!(
        s.join_room(i64::MAX, bob.id, now).await,
        Err(StoreError::NotFound(_))
    ));
    let mut expected = vec![alice.id, bob.id];
    expected.sort_unstable();
    assert_eq!(s.room_members(room.id).await.unwrap(), expected);
    assert!(
        s.room_members(i64::MAX).await.unwrap().is_empty(),
        "a missing room has no members (the chat answers 404 from that)"
    );
    assert!(!s.is_member(room.id, carol.id).await.unwrap());
    assert_eq!(s.rooms(Some(bob.id), 10).await.unwrap(), vec![room.clone()]);
    assert!(s.rooms(Some(carol.id), 10).await.unwrap().is_empty());
    assert!(s.rooms(None, 1000).await.unwrap().contains(&room));

    let r1 = s
        .insert_message(msg(alice.id, Target::Room(room.id), "hello room", None))
        .await
        .unwrap()
        .message;
    assert_eq!((r1.room_id, r1.receiver_id), (Some(room.id), None));
    assert!(
        s.undelivered(bob.id, 100)
            .await
            .unwrap()
            .iter()
            .all(|m| m.room_id.is_none()),
        "room messages are not direct backlog"
    );
    let r2 = s
        .insert_message(msg(bob.id, Target::Room(room.id), "hi", None))
        .await
        .unwrap()
        .message;
    let page = s
        .history(Conversation::Room(room.id), None, 10)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![r2.id, r1.id]
    );
    assert_eq!(
        s.mark_room_read(room.id, bob.id).await.unwrap(),
        Some(r2.id)
    );
    assert_eq!(
        s.mark_room_read(room.id, carol.id).await.unwrap(),
        None,
        "non-members have no marker"
    );
    assert!(s.leave_room(room.id, bob.id).await.unwrap());
    assert!(!s.leave_room(room.id, bob.id).await.unwrap());
    assert!(!s.is_member(room.id, bob.id).await.unwrap());

    // Read marks after the first: each takes what came since, delivered or not.
    let later: Vec<i64> = s
        .insert_messages((0..3).map(|_| msg(alice.id, ab, "later", None)).collect())
        .await
        .into_iter()
        .map(|r| r.unwrap().message.id)
        .collect();
    s.mark_delivered(&later[..1], now).await.unwrap();
    assert_eq!(s.mark_read(bob.id, alice.id, now).await.unwrap(), later);
    let last = s.insert_message(msg(alice.id, ab, "last", None)).await;
    let last = last.unwrap().message.id;
    assert_eq!(s.mark_read(bob.id, alice.id, now).await.unwrap(), [last]);
    assert_eq!(s.newest_message_id().await.unwrap(), last);
}

/// A batch of inserts answers each message as `insert_message` would, in order: a refused
/// one (unknown receiver) does not stop the others, a repeated `clientMsgId` is a duplicate
/// even within the batch, and ids grow in batch order.
pub async fn batched_inserts(s: &dyn MessageStore) {
    let now = Timestamp::now();
    let dana = s
        .create_user(&unique("dana"), None, "h", now)
        .await
        .unwrap();
    let eve = s.create_user(&unique("eve"), None, "h", now).await.unwrap();
    let to_eve = Target::User(eve.id);
    let key = unique("k");
    let out = s
        .insert_messages(vec![
            msg(dana.id, to_eve, "first", Some(&key)),
            msg(dana.id, Target::User(i64::MAX), "nobody", None),
            msg(dana.id, to_eve, "again", Some(&key)),
            msg(dana.id, to_eve, "second", None),
        ])
        .await;
    assert_eq!(out.len(), 4, "one outcome per message");
    let first = out[0].as_ref().expect("first stored");
    assert!(!first.duplicate);
    assert!(
        matches!(out[1], Err(StoreError::NotFound("user"))),
        "unknown receiver: {:?}",
        out[1].as_ref().map(|i| i.message.id)
    );
    let again = out[2].as_ref().expect("duplicate answered");
    assert!(again.duplicate, "same clientMsgId within one batch");
    assert_eq!(again.message.id, first.message.id);
    assert_eq!(again.message.content, "first", "the stored one is returned");
    let second = out[3].as_ref().expect("the rest still stored");
    assert!(second.message.id > first.message.id, "ids in batch order");
    let pending: Vec<String> = s
        .undelivered(eve.id, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(pending, ["first", "second"], "stored once each, in order");
    assert!(s.insert_messages(Vec::new()).await.is_empty());

    // A burst long enough to be written several rows per statement: every id answered
    // names its own message.
    let burst: Vec<String> = (0..21).map(|i| format!("burst {i}")).collect();
    let out = s
        .insert_messages(
            burst
                .iter()
                .map(|c| msg(dana.id, to_eve, c, None))
                .collect(),
        )
        .await;
    assert_eq!(out.len(), burst.len());
    let mut last = second.message.id;
    for (content, outcome) in burst.iter().zip(&out) {
        let m = &outcome.as_ref().expect("stored").message;
        assert!(m.id > last, "ids in batch order");
        last = m.id;
        let stored = s
            .message(m.id)
            .await
            .unwrap()
            .expect("the answered id exists");
        assert_eq!(&stored.content, content, "message {}", m.id);
        assert_eq!(stored, *m, "the answer is the stored row");
    }
}

/// Racing writers get the same answers on every backend: one winner per username
/// (regardless of case) and per (sender, clientMsgId), and cursor paging that returns
/// every message once. The operations are started together on one task; the backend's
/// pool runs them on separate connections, so the database sees them concurrently.
pub async fn concurrency(s: &dyn MessageStore) {
    use futures_util::future::join_all;

    const RACERS: usize = 12;
    let now = Timestamp::now();

    // One username, claimed in different cases at once.
    let name = unique("racer");
    let spellings: Vec<String> = (0..RACERS)
        .map(|i| {
            name.chars()
                .enumerate()
                .map(|(j, c)| {
                    if (i >> (j % 4)) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
        .collect();
    let results = join_all(
        spellings
            .iter()
            .map(|n| s.create_user(n, None, "hash", now)),
    )
    .await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one racer gets the name");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(StoreError::Conflict(_)))),
        "the others are told it is taken: {results:?}"
    );
    let sender = winners[0].clone();
    let receiver = s
        .create_user(&unique("target"), None, "hash", now)
        .await
        .unwrap();

    // One clientMsgId, sent many times at once (a client retrying on several links).
    let to = Target::User(receiver.id);
    let results = join_all(
        (0..RACERS).map(|i| s.insert_message(msg(sender.id, to, ["x", "y"][i % 2], Some("dup")))),
    )
    .await;
    let results: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("a duplicate is not an error"))
        .collect();
    assert_eq!(
        results.iter().filter(|r| !r.duplicate).count(),
        1,
        "exactly one insert stores the message"
    );
    let stored = &results.iter().find(|r| !r.duplicate).unwrap().message;
    assert!(
        results.iter().all(|r| r.message == *stored),
        "every racer gets the stored original"
    );
    let conversation = Conversation::Direct(sender.id, receiver.id);
    assert_eq!(
        s.history(conversation, None, 100).await.unwrap(),
        vec![stored.clone()],
        "stored once"
    );

    // Many messages at once, then read back page by page with the oldest id as cursor.
    let contents: Vec<String> = (0..30).map(|i| format!("burst {i}")).collect();
    let burst = join_all(
        contents
            .iter()
            .map(|c| s.insert_message(msg(receiver.id, Target::User(sender.id), c, None))),
    )
    .await;
    let mut expected: Vec<i64> = burst
        .into_iter()
        .map(|r| r.unwrap().message.id)
        .chain([stored.id])
        .collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = s.history(conversation, cursor, 7).await.unwrap();
        assert!(page.len() <= 7, "a page holds at most the limit");
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        paged.extend(page.iter().map(|m| m.id));
    }
    assert_eq!(paged, expected, "every message once, newest first");
}
