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
}
