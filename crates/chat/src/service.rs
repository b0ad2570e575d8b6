//! The chat operations both transports share: accounts, sending and routing messages,
//! receipts, typing and presence. REST handlers and WebSocket sessions call these.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::json;
use switchboard_store::{Inserted, Message, NewMessage, StoreError, Target, Timestamp, User};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::error::ChatError;
use crate::frame_writer::FrameWriter;
use crate::hub::Out;
use crate::protocol::{FORGED_SENDER, NOT_MEMBER, SendRequest, TO_YOURSELF, frame};
use crate::receipts::Delivered;
use crate::{Chat, auth};

/// The authenticated user of a request or connection.
#[derive(Debug, Clone)]
pub(crate) struct Me {
    pub id: i64,
    pub username: String,
}

const MAX_PASSWORD: usize = 1024;

/// Most message ids one read-receipt frame lists: about 11 KB of JSON, a frame any client
/// takes, however many messages one mark reads.
const IDS_PER_FRAME: usize = 1000;

fn valid_username(name: &str) -> bool {
    (3..=32).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

pub(crate) async fn register(
    chat: &Chat,
    username: &str,
    password: &str,
    email: Option<&str>,
) -> Result<User, ChatError> {
    if !valid_username(username) {
        return Err(ChatError::bad_request(
            "username must be 3 to 32 letters, digits, '_', '-' or '.'",
        ));
    }
    if password.chars().count() < 8 || password.len() > MAX_PASSWORD {
        return Err(ChatError::bad_request(
            "password must be at least 8 characters (and at most 1024 bytes)",
        ));
    }
    if let Some(email) = email
        && (email.len() > 254 || !email.contains('@'))
    {
        return Err(ChatError::bad_request("email is not a valid address"));
    }
    let hash = auth::hash_password(password.to_owned()).await?;
    Ok(chat
        .inner
        .store
        .create_user(username, email, &hash, Timestamp::now())
        .await?)
}

/// The user if the password matches; `None` otherwise (unknown user or wrong password).
pub(crate) async fn login(
    chat: &Chat,
    username: &str,
    password: &str,
) -> Result<Option<User>, ChatError> {
    if password.len() > MAX_PASSWORD {
        return Ok(None);
    }
    let Some(account) = chat.inner.store.account_by_name(username).await? else {
        // Spend the same time as a wrong password, so timing does not reveal which
        // usernames exist.
        auth::verify_password(password.to_owned(), auth::decoy_hash().await).await;
        return Ok(None);
    };
    let ok = auth::verify_password(password.to_owned(), account.password_hash).await;
    Ok(ok.then_some(account.user))
}

/// A message [`Chat::send`] stored, with the room's members it was checked against
/// (`None` for a direct message): they are the ones it is delivered to.
pub(crate) struct Sent {
    pub inserted: Inserted,
    members: Option<Arc<[i64]>>,
}

/// A message as recipients get it: the stored row plus the sender's name.
fn incoming(message: &Message, sender_username: &str) -> Utf8Bytes {
    let text = message.content.len()
        + message.message_type.len()
        + message.client_msg_id.as_ref().map_or(0, String::len)
        + sender_username.len();
    FrameWriter::new("new_message", text)
        .message(message)
        .text("senderUsername", sender_username)
        .finish()
}

fn new_message<'a>(me: &Me, req: &'a SendRequest, at: Timestamp) -> NewMessage<'a> {
    NewMessage {
        sender: me.id,
        target: req.target,
        content: &req.content,
        message_type: &req.message_type,
        client_msg_id: req.client_msg_id.as_deref(),
        at,
    }
}

fn insert_error(e: switchboard_store::StoreError) -> ChatError {
    match e {
        switchboard_store::StoreError::NotFound("user") => {
            ChatError::not_found("Receiver not found")
        }
        other => other.into(),
    }
}

fn log_stored(me: &Me, inserted: &Inserted) {
    tracing::debug!(
        message = inserted.message.id,
        sender = me.id,
        duplicate = inserted.duplicate,
        "message stored"
    );
}

impl Chat {
    /// `Ok` if `user` belongs to `room`; otherwise why not.
    pub(crate) async fn require_member(&self, user: i64, room: i64) -> Result<(), ChatError> {
        if self.inner.store.is_member(room, user).await? {
            Ok(())
        } else {
            Err(self.not_member(room).await)
        }
    }

    /// The error for a caller who is not a member: the room is missing (404) or not theirs
    /// (403).
    async fn not_member(&self, room: i64) -> ChatError {
        match self.inner.store.room(room).await {
            Ok(None) => ChatError::not_found("Room not found"),
            Ok(Some(_)) => ChatError::forbidden(NOT_MEMBER),
            Err(e) => e.into(),
        }
    }

    /// Check and persist a message. Nothing is stored when it is refused.
    pub(crate) async fn send(&self, me: &Me, req: &SendRequest) -> Result<Sent, ChatError> {
        self.send_many(me, std::slice::from_ref(req))
            .await
            .pop()
            .unwrap_or_else(|| Err(ChatError::internal()))
    }

    /// [`Chat::send`] for a burst of one connection's messages, in order: one store call
    /// for all of them (one commit hand-off instead of one per message); one outcome per
    /// request. A refused request stores nothing and does not stop the others.
    pub(crate) async fn send_many(
        &self,
        me: &Me,
        reqs: &[SendRequest],
    ) -> Vec<Result<Sent, ChatError>> {
        let mut outcomes: Vec<Option<Result<Sent, ChatError>>> = Vec::with_capacity(reqs.len());
        // Rooms already checked in this burst, with their members: one lookup per room.
        let mut rooms = Vec::new();
        let mut accepted = Vec::with_capacity(reqs.len());
        for (i, req) in reqs.iter().enumerate() {
            match self.check_send(me, req, &mut rooms).await {
                Ok(members) => {
                    accepted.push((i, members));
                    outcomes.push(None);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        let at = Timestamp::now();
        let new = accepted
            .iter()
            .map(|&(i, _)| new_message(me, &reqs[i], at))
            .collect();
        let stored = self.inner.store.insert_messages(new).await;
        for ((i, members), result) in accepted.into_iter().zip(stored) {
            let result = result.map_err(insert_error).map(|inserted| {
                log_stored(me, &inserted);
                Sent { inserted, members }
            });
            outcomes[i] = Some(result);
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(ChatError::internal())))
            .collect()
    }

    /// Everything about a send that is checked before the store: the sender, the size, the
    /// receiver not being the sender, room membership. A room's members are read once (from
    /// `rooms`, the ones already read for this burst, or the store) and returned: the check
    /// and the delivery use the same list.
    async fn check_send(
        &self,
        me: &Me,
        req: &SendRequest,
        rooms: &mut Vec<(i64, Arc<[i64]>)>,
    ) -> Result<Option<Arc<[i64]>>, ChatError> {
        if req.sender_id.is_some_and(|s| s != me.id) {
            return Err(ChatError::forbidden(FORGED_SENDER));
        }
        if req.content.len() > self.inner.config.max_message_bytes {
            return Err(ChatError::bad_request(format!(
                "Message content is too long: at most {} bytes",
                self.inner.config.max_message_bytes
            )));
        }
        match req.target {
            Target::User(to) if to == me.id => Err(ChatError::bad_request(TO_YOURSELF)),
            Target::User(_) => Ok(None), // an unknown receiver fails the insert (foreign key)
            Target::Room(room) => {
                if let Some((_, members)) = rooms.iter().find(|(r, _)| *r == room) {
                    return Ok(Some(members.clone()));
                }
                let members: Arc<[i64]> = self.inner.store.room_members(room).await?.into();
                if !members.contains(&me.id) {
                    return Err(self.not_member(room).await);
                }
                rooms.push((room, members.clone()));
                Ok(Some(members))
            }
        }
    }

    /// Route a stored message to its recipients' connections (and the sender's other
    /// devices for rooms); `origin` is the sending connection, which gets `message_sent`
    /// instead.
    pub(crate) async fn deliver(&self, me: &Me, sent: &Sent, origin: Option<u64>) {
        let cluster = &self.inner.cluster;
        let message = &sent.inserted.message;
        let receiver;
        // A direct message carries its receipt; a room message goes to the members it was
        // checked against, but not back to the sending connection.
        let (users, except, receipt) = match message.target() {
            Target::User(to) => {
                receiver = [to];
                let receipt = Delivered {
                    id: message.id,
                    sender: me.id,
                    receiver: to,
                    client_msg_id: message.client_msg_id.clone(),
                };
                (&receiver[..], None, Some(Arc::new(receipt)))
            }
            Target::Room(_) => (sent.members.as_deref().unwrap_or_default(), origin, None),
        };
        let text = incoming(message, &me.username);
        cluster
            .send(users, &Out::Message(message.id, text, receipt), except)
            .await;
    }

    /// The next page of direct messages that arrived while `me` had no connection, oldest
    /// first, as `new_message` frames.
    pub(crate) async fn backlog_page(
        &self,
        me: &Me,
        limit: u32,
    ) -> Result<Vec<(Message, Utf8Bytes)>, ChatError> {
        let store = &self.inner.store;
        let page = store.undelivered(me.id, limit).await?;
        let mut names: HashMap<i64, String> = HashMap::new();
        let mut out = Vec::with_capacity(page.len());
        for m in page {
            let name = match names.entry(m.sender_id) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let user = store.user(m.sender_id).await?;
                    e.insert(user.map(|u| u.username).unwrap_or_default())
                }
            };
            let text = incoming(&m, name);
            out.push((m, text));
        }
        Ok(out)
    }

    /// Mark a backlog page (written to `me`'s socket) delivered and tell the senders.
    pub(crate) async fn backlog_delivered(
        &self,
        me: &Me,
        page: &[(Message, Utf8Bytes)],
    ) -> Result<(), ChatError> {
        let ids: Vec<i64> = page.iter().map(|(m, _)| m.id).collect();
        let at = Timestamp::now();
        let changed = self.inner.store.mark_delivered(&ids, at).await?;
        for (m, _) in page
            .iter()
            .filter(|(m, _)| changed.binary_search(&m.id).is_ok())
        {
            crate::receipts::report(
                &self.inner.cluster,
                &Delivered {
                    id: m.id,
                    sender: m.sender_id,
                    receiver: me.id,
                    client_msg_id: m.client_msg_id.clone(),
                },
                at,
            )
            .await;
        }
        Ok(())
    }

    /// Mark direct messages from `sender` read: returns `mark_read_success` data; the
    /// sender's connections get `messages_read`.
    ///
    /// One mark can take a whole history of unread messages, and a frame listing them all
    /// could outgrow what a connection writes in one frame (it was closed, and neither
    /// side heard why). So each frame lists at most [`IDS_PER_FRAME`] ids, and both carry
    /// `lastReadId`, the newest message read: the sender gets every id, in as many
    /// `messages_read` frames as it takes; the reader gets one `mark_read_success` with
    /// the `count` and, past the bound, the newest ids only.
    ///
    /// A mark the store cut short (it goes in slices, and a later one failed) is reported
    /// for what it did, with the error returned beside it: the reader learns that the
    /// newer messages are still unread, and a new mark takes them.
    pub(crate) async fn mark_read_from(
        &self,
        me: &Me,
        sender: i64,
    ) -> Result<(serde_json::Value, Option<ChatError>), ChatError> {
        let at = Timestamp::now();
        let (ids, cut_short) = match self.inner.store.mark_read(me.id, sender, at).await {
            Ok(ids) => (ids, None),
            Err(StoreError::ReadCutShort { read, cause }) => {
                tracing::error!(%cause, marked = read.len(), sender, "read mark cut short");
                let e = ChatError::internal_with(format!(
                    "Could not mark every message read: {} were, newer ones are still unread. \
                     Please try again.",
                    read.len()
                ));
                (read, Some(e))
            }
            Err(e) => return Err(e.into()),
        };
        let last = ids.last().copied();
        for chunk in ids.chunks(IDS_PER_FRAME) {
            let data = json!({
                "readerId": me.id, "messageIds": chunk, "lastReadId": last, "readAt": at
            });
            let out = Out::Frame(frame("messages_read", data));
            self.inner.cluster.send(&[sender], &out, None).await;
        }
        let newest = &ids[ids.len().saturating_sub(IDS_PER_FRAME)..];
        let data = json!({
            "senderId": sender, "messageIds": newest, "count": ids.len(),
            "lastReadId": last, "readAt": at
        });
        Ok((data, cut_short))
    }

    /// Move `me`'s read marker in a room: returns `mark_read_success` data; the other
    /// members' connections get `messages_read`.
    pub(crate) async fn mark_room_read(
        &self,
        me: &Me,
        room: i64,
        origin: Option<u64>,
    ) -> Result<serde_json::Value, ChatError> {
        let store = &self.inner.store;
        let Some(last) = store.mark_room_read(room, me.id).await? else {
            return Err(self.not_member(room).await);
        };
        let at = Timestamp::now();
        let data = json!({ "roomId": room, "readerId": me.id, "lastReadId": last, "readAt": at });
        let members = store.room_members(room).await?;
        let others: Vec<i64> = members.into_iter().filter(|m| *m != me.id).collect();
        let out = Out::Frame(frame("messages_read", data));
        self.inner.cluster.send(&others, &out, origin).await;
        Ok(json!({ "roomId": room, "lastReadId": last, "readAt": at }))
    }

    /// Forward a typing indicator (never stored).
    pub(crate) async fn typing(
        &self,
        me: &Me,
        target: Target,
        typing: bool,
    ) -> Result<(), ChatError> {
        let cluster = &self.inner.cluster;
        match target {
            Target::User(to) => {
                if to == me.id {
                    return Err(ChatError::bad_request(TO_YOURSELF));
                }
                let data = json!({ "userId": me.id, "username": me.username, "receiverId": to, "isTyping": typing });
                let out = Out::Frame(frame("typing_indicator", data));
                cluster.send(&[to], &out, None).await;
            }
            Target::Room(room) => {
                let store = &self.inner.store;
                let members = store.room_members(room).await?;
                if !members.contains(&me.id) {
                    return Err(self.not_member(room).await);
                }
                let others: Vec<i64> = members.into_iter().filter(|m| *m != me.id).collect();
                let data = json!({ "userId": me.id, "username": me.username, "roomId": room, "isTyping": typing });
                let out = Out::Frame(frame("typing_indicator", data));
                cluster.send(&others, &out, None).await;
            }
        }
        Ok(())
    }

    /// Ids of every connected user.
    pub(crate) async fn online_ids(&self) -> HashSet<i64> {
        match self.inner.registry.online_users().await {
            Ok(users) => users.iter().filter_map(|u| u.parse().ok()).collect(),
            Err(e) => {
                tracing::error!(error = %e, "registry unavailable");
                HashSet::new()
            }
        }
    }

    /// `online_users` data: every connected user with their name.
    pub(crate) async fn online_users(&self) -> serde_json::Value {
        let mut ids: Vec<i64> = self.online_ids().await.into_iter().collect();
        ids.sort_unstable();
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            let name = match self.inner.hub.username(id) {
                Some(name) => Some(name),
                None => self
                    .inner
                    .store
                    .user(id)
                    .await
                    .ok()
                    .flatten()
                    .map(|u| u.username),
            };
            if let Some(username) = name {
                users.push(json!({ "id": id, "username": username }));
            }
        }
        json!({ "users": users, "count": users.len() })
    }
}
