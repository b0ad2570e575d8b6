//! One logged-in XMPP connection and the task that drives it.
//!
//! tokio-xmpp's [`StanzaStream`] owns the socket: it binds the resource, keeps the stream
//! alive, and asks our reconnector for a new login when the connection drops. One task
//! (`drive`) owns the stream: it writes what jobs hand it, turns incoming stanzas into
//! pushes, answers the server's IQs, and completes the waits jobs registered in [`Shared`]
//! (IQ replies by id, message errors and room reflections by id, MUC self-presence by
//! room). Jobs never touch the stream, so a slow job never stalls incoming traffic.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use switchboard_platform::WorkerContext;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, FullJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType};
use tokio_xmpp::parsers::disco::{DiscoInfoQuery, DiscoInfoResult, Identity};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::muc::Muc;
use tokio_xmpp::parsers::muc::muc::History;
use tokio_xmpp::parsers::muc::user::{MucUser, Status};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::ping::Ping;
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::roster::Roster;
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::stanzastream::{Event, StanzaStream, StreamEvent};

use crate::connector::Connector;
use crate::credentials::Credentials;
use crate::incoming;

const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const MUC_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
use crate::login::{self, RetryFailed};
use crate::stanza::{error_text, new_id};

/// How long a job waits for the server's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// A room this connection is in (or joining, or leaving).
struct Room {
    nick: String,
    /// Nicknames present, from the room's presences.
    occupants: BTreeSet<String>,
    /// A job waiting for the room's self-presence: joined (`true` when the room was just
    /// created and is locked), left, or refused with the server's reason.
    waiter: Option<oneshot::Sender<Result<bool, String>>>,
}

type Waiters<T> = Mutex<HashMap<String, oneshot::Sender<T>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State shared by the jobs and the driving task.
struct Shared {
    ctx: WorkerContext,
    /// The actor pushes are addressed to (`{id, type}` of the connecting activity).
    actor: Value,
    /// Our account's bare JID.
    own: BareJid,
    iqs: Waiters<Iq>,
    /// Sent messages waiting for an error bounce or (groupchat) the room's reflection.
    messages: Waiters<Result<(), String>>,
    rooms: Mutex<HashMap<BareJid, Room>>,
    /// Our last broadcast presence, sent again after a reconnect.
    presence: Mutex<Option<Presence>>,
    online: AtomicBool,
}

impl Shared {
    fn fail_waiters(&self) {
        // Dropping the senders answers every waiting job with "connection lost".
        lock(&self.iqs).clear();
        lock(&self.messages).clear();
        for room in lock(&self.rooms).values_mut() {
            room.waiter = None;
        }
    }
}

pub struct Connection {
    shared: Arc<Shared>,
    out: mpsc::Sender<Stanza>,
    stopped: Arc<AtomicBool>,
    task: Mutex<Option<JoinHandle<()>>>,
    pub bound: FullJid,
}

impl Connection {
    /// Log in and bind; `Err` is the reason, for the `connect` job's answer.
    pub async fn open(
        creds: Credentials,
        tls: Arc<tokio_rustls::rustls::ClientConfig>,
        ctx: WorkerContext,
        actor: Value,
    ) -> Result<Connection, String> {
        let connector = Connector {
            host: creds.host.clone(),
            port: creds.port,
            direct_tls: creds.direct_tls,
            tls,
        };
        let first = login::login(&connector, &creds.jid, &creds.password).await?;
        let stopped = Arc::new(AtomicBool::new(false));
        let (retry_tx, retry_rx) = mpsc::unbounded_channel();
        let stream = StanzaStream::new(
            login::reconnector(
                connector,
                creds.jid.clone(),
                creds.password.clone(),
                first,
                stopped.clone(),
                retry_tx,
            ),
            16,
        );
        let shared = Arc::new(Shared {
            ctx,
            actor,
            own: creds.jid.to_bare(),
            iqs: Mutex::default(),
            messages: Mutex::default(),
            rooms: Mutex::default(),
            presence: Mutex::new(Some(Presence::available())),
            online: AtomicBool::new(false),
        });
        let (out_tx, out_rx) = mpsc::channel(64);
        let (bound_tx, bound_rx) = oneshot::channel();
        let task = tokio::spawn(drive(stream, out_rx, retry_rx, shared.clone(), bound_tx));
        let bound = match tokio::time::timeout(REPLY_TIMEOUT, bound_rx).await {
            Ok(Ok(jid)) => jid,
            _ => {
                stopped.store(true, Ordering::Release);
                task.abort();
                return Err("the server did not bind a resource".into());
            }
        };
        let conn = Connection {
            shared,
            out: out_tx,
            stopped,
            task: Mutex::new(Some(task)),
            bound,
        };
        // Ask for the roster so the server sends roster pushes to this resource (RFC 6121
        // §2.1.6); the list itself is not pushed.
        let _ = conn
            .iq(Iq::from_get(
                new_id(),
                Roster {
                    ver: None,
                    items: vec![],
                },
            ))
            .await;
        Ok(conn)
    }

    pub fn is_online(&self) -> bool {
        self.shared.online.load(Ordering::Acquire)
    }

    pub fn actor(&self) -> &Value {
        &self.shared.actor
    }

    async fn send(&self, stanza: impl Into<Stanza>) -> Result<(), String> {
        self.out
            .send(stanza.into())
            .await
            .map_err(|_| "not connected".to_owned())
    }

    /// Send an IQ and wait for its result payload, or the error's text.
    pub async fn iq(&self, iq: Iq) -> Result<Option<Element>, String> {
        let id = iq.id().to_owned();
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.iqs).insert(id.clone(), tx);
        self.send(iq).await?;
        let answer = answer(rx, "the server").await;
        lock(&self.shared.iqs).remove(&id);
        match answer? {
            Iq::Result { payload, .. } => Ok(payload),
            Iq::Error { error, .. } => Err(error_text(&error)),
            _ => Err("unexpected answer from the server".into()),
        }
    }

    /// Send stanzas that get no reply of their own, then wait until the server has
    /// processed them: an error bounce for `watch` (a message id) fails the job, the
    /// server's answer to a ping that follows them (stanzas are handled in order) passes it.
    pub async fn send_checked(
        &self,
        stanzas: Vec<Stanza>,
        watch: Option<String>,
    ) -> Result<(), String> {
        let bounce = watch.map(|id| {
            let (tx, rx) = oneshot::channel();
            lock(&self.shared.messages).insert(id.clone(), tx);
            (id, rx)
        });
        for s in stanzas {
            self.send(s).await?;
        }
        let domain = Jid::from(self.bound.to_bare().domain().to_owned());
        let barrier = self.iq(Iq::from_get(new_id(), Ping).with_to(domain)).await;
        if let Some((id, mut rx)) = bounce {
            lock(&self.shared.messages).remove(&id);
            if let Ok(Err(e)) = rx.try_recv() {
                return Err(e);
            }
        }
        match barrier {
            // A server without XEP-0199 still answered, so it processed what came before.
            Ok(_) => Ok(()),
            Err(e)
                if e.starts_with("service-unavailable")
                    || e.starts_with("feature-not-implemented") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Send a groupchat message and wait for the room to reflect it (accepted) or bounce it.
    pub async fn send_groupchat(&self, message: Message, id: String) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.messages).insert(id.clone(), tx);
        self.send(message).await?;
        let answer = answer(rx, "the room").await;
        lock(&self.shared.messages).remove(&id);
        answer?
    }

    /// Enter a room as `nick`; `Ok(true)` when the room was created by this join (and is
    /// locked until configured).
    pub async fn join(&self, room: BareJid, nick: String) -> Result<bool, String> {
        let to = room
            .with_resource_str(&nick)
            .map_err(|e| format!("invalid nickname {nick:?}: {e}"))?;
        let rx = self.expect_self_presence(&room, Some(nick))?;
        let mut presence = lock(&self.shared.presence)
            .clone()
            .unwrap_or_else(Presence::available);
        presence.to = Some(to.into());
        presence.payloads.push(Muc::new().into());
        self.send(presence).await?;
        self.await_room(&room, rx, true).await
    }

    /// Leave a room this connection is in.
    pub async fn leave(&self, room: BareJid) -> Result<(), String> {
        let rx = self.expect_self_presence(&room, None)?;
        let nick = lock(&self.shared.rooms)
            .get(&room)
            .map(|r| r.nick.clone())
            .unwrap_or_default();
        let to = room
            .with_resource_str(&nick)
            .map_err(|e| format!("invalid nickname {nick:?}: {e}"))?;
        self.send(Presence::unavailable().with_to(to)).await?;
        self.await_room(&room, rx, false).await.map(|_| ())
    }

    /// Register the wait for our own presence from `room`. Joining adds the room; leaving
    /// needs it to be there.
    fn expect_self_presence(
        &self,
        room: &BareJid,
        join_as: Option<String>,
    ) -> Result<oneshot::Receiver<Result<bool, String>>, String> {
        let (tx, rx) = oneshot::channel();
        let mut rooms = lock(&self.shared.rooms);
        match (rooms.get_mut(room), join_as) {
            (Some(r), Some(nick)) => {
                r.nick = nick;
                r.waiter = Some(tx);
            }
            (None, Some(nick)) => {
                rooms.insert(
                    room.clone(),
                    Room {
                        nick,
                        occupants: BTreeSet::new(),
                        waiter: Some(tx),
                    },
                );
            }
            (Some(r), None) => r.waiter = Some(tx),
            (None, None) => return Err(format!("not in room {room}")),
        }
        Ok(rx)
    }

    async fn await_room(
        &self,
        room: &BareJid,
        rx: oneshot::Receiver<Result<bool, String>>,
        joining: bool,
    ) -> Result<bool, String> {
        let result = answer(rx, "the room").await.and_then(|r| r);
        if joining && result.is_err() {
            lock(&self.shared.rooms).remove(room);
        }
        result
    }

    /// The nicknames in a room this connection is in.
    pub fn occupants(&self, room: &BareJid) -> Option<Vec<String>> {
        lock(&self.shared.rooms)
            .get(room)
            .map(|r| r.occupants.iter().cloned().collect())
    }

    /// Remember the presence to re-send after a reconnect, and send it to every room too.
    pub fn set_presence(&self, presence: &Presence) -> Vec<Stanza> {
        *lock(&self.shared.presence) = match presence.type_ {
            PresenceType::Unavailable => None,
            _ => Some(presence.clone()),
        };
        let mut out = vec![Stanza::from(presence.clone())];
        for (room, r) in lock(&self.shared.rooms).iter() {
            if let Ok(to) = room.with_resource_str(&r.nick) {
                let mut p = presence.clone();
                p.to = Some(to.into());
                out.push(p.into());
            }
        }
        out
    }

    /// Say goodbye and close the stream.
    pub async fn close(self) {
        self.stopped.store(true, Ordering::Release);
        self.shared.online.store(false, Ordering::Release);
        let _ = self.send(Presence::unavailable()).await;
        let task = lock(&self.task).take();
        // Dropping the connection closes the job channel, which ends `drive`; `drive`
        // closes the stream (`</stream:stream>`).
        drop(self);
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// What the driving task sent back for a wait, or why nothing came.
async fn answer<T>(rx: oneshot::Receiver<T>, who: &str) -> Result<T, String> {
    match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(format!("connection lost before {who} answered")),
        Err(_) => Err(format!(
            "{who} did not answer within {} s",
            REPLY_TIMEOUT.as_secs()
        )),
    }
}

/// The text of the stanza error among `payloads`, or `fallback`.
fn payload_error(payloads: &[Element], fallback: &str) -> String {
    payloads
        .iter()
        .find_map(|p| StanzaError::try_from(p.clone()).ok())
        .map(|e| error_text(&e))
        .unwrap_or_else(|| fallback.into())
}

/// The task that owns the stream.
async fn drive(
    mut stream: StanzaStream,
    mut out: mpsc::Receiver<Stanza>,
    mut retries: mpsc::UnboundedReceiver<RetryFailed>,
    shared: Arc<Shared>,
    bound_tx: oneshot::Sender<FullJid>,
) {
    let mut bound_tx = Some(bound_tx);
    loop {
        tokio::select! {
            stanza = out.recv() => match stanza {
                Some(s) => { stream.send(Box::new(s)).await; }
                None => break,
            },
            event = stream.next() => match event {
                Some(Event::Stanza(s)) => {
                    for reply in on_stanza(s, &shared).await {
                        stream.send(Box::new(reply)).await;
                    }
                }
                Some(Event::Stream(StreamEvent::Reset { bound_jid, .. })) => {
                    shared.online.store(true, Ordering::Release);
                    let presence = lock(&shared.presence).clone();
                    if let Some(p) = presence {
                        stream.send(Box::new(p.into())).await;
                    }
                    match bound_tx.take() {
                        Some(tx) => {
                            let full = bound_jid.try_into_full().unwrap_or_else(|bare| {
                                // RFC 6120 §7.6.2.1: the server binds a full JID; fall back
                                // to a generated resource name if one ever does not.
                                bare.with_resource_str("switchboard").unwrap_or_else(|_| unreachable_full())
                            });
                            let _ = tx.send(full);
                        }
                        None => {
                            tracing::info!(jid = %bound_jid, "reconnected");
                            for s in rejoin(&shared) {
                                stream.send(Box::new(s)).await;
                            }
                            shared.ctx.emit(incoming::connection_status(&shared.actor, "online", None)).await;
                        }
                    }
                }
                Some(Event::Stream(StreamEvent::Suspended)) => {
                    shared.online.store(false, Ordering::Release);
                    shared.fail_waiters();
                    tracing::warn!(jid = %shared.own, "connection lost; reconnecting");
                    shared.ctx.emit(incoming::connection_status(
                        &shared.actor,
                        "reconnecting",
                        Some("Connection lost. Attempting automatic reconnection...".into()),
                    )).await;
                }
                Some(Event::Stream(StreamEvent::Resumed)) => {
                    shared.online.store(true, Ordering::Release);
                    shared.ctx.emit(incoming::connection_status(&shared.actor, "online", None)).await;
                }
                None => break,
            },
            Some(failed) = retries.recv() => {
                shared.ctx.emit(incoming::connection_status(
                    &shared.actor,
                    "reconnecting",
                    Some(format!(
                        "Reconnection failed: {}. Retrying in {} s",
                        failed.error,
                        failed.retry_in.as_secs()
                    )),
                )).await;
            }
        }
    }
    shared.online.store(false, Ordering::Release);
    shared.fail_waiters();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.close()).await;
}

fn unreachable_full() -> FullJid {
    // Only reached if "switchboard" were not a valid resource, which it is.
    FullJid::new("switchboard@invalid/switchboard").expect("a valid literal JID")
}

/// Presences that put us back in every room after a reconnect, without replaying history.
fn rejoin(shared: &Shared) -> Vec<Stanza> {
    let base = lock(&shared.presence)
        .clone()
        .unwrap_or_else(Presence::available);
    lock(&shared.rooms)
        .iter()
        .filter_map(|(room, r)| {
            let to = room.with_resource_str(&r.nick).ok()?;
            let mut p = base.clone();
            p.to = Some(to.into());
            p.payloads.push(
                Muc::new()
                    .with_history(History::new().with_maxstanzas(0))
                    .into(),
            );
            Some(p.into())
        })
        .collect()
}

/// Handle one incoming stanza; returns replies to send.
async fn on_stanza(stanza: Stanza, shared: &Shared) -> Vec<Stanza> {
    match stanza {
        Stanza::Message(m) => {
            on_message(m, shared).await;
            vec![]
        }
        Stanza::Presence(p) => on_presence(p, shared).await,
        Stanza::Iq(iq) => on_iq(iq, shared).await,
    }
}

fn room_of(shared: &Shared, from: &Option<Jid>) -> Option<(BareJid, String)> {
    let from = from.as_ref()?;
    let bare = from.to_bare();
    let rooms = lock(&shared.rooms);
    rooms.get(&bare).map(|r| (bare, r.nick.clone()))
}

async fn on_message(m: Message, shared: &Shared) {
    let id = m.id.as_ref().map(|id| id.0.clone());
    if m.type_ == MessageType::Error {
        let text = payload_error(&m.payloads, "the message was refused");
        if let Some(tx) = id.and_then(|id| lock(&shared.messages).remove(&id)) {
            let _ = tx.send(Err(text));
            return;
        }
        shared
            .ctx
            .emit(incoming::error("message", &m.from, &m.to, text))
            .await;
        return;
    }
    if m.type_ == MessageType::Groupchat
        && let (Some(id), Some((_, nick))) = (&id, room_of(shared, &m.from))
        && m.from.as_ref().and_then(Jid::resource).map(|r| r.as_str()) == Some(nick.as_str())
        && let Some(tx) = lock(&shared.messages).remove(id)
    {
        // The room reflected our own message: the job gets its answer, and the sessions
        // sharing this connection get that answer, so it is not pushed twice.
        let _ = tx.send(Ok(()));
        return;
    }
    if let Some(activity) = incoming::message(&m) {
        shared.ctx.emit(activity).await;
    }
}

async fn on_presence(p: Presence, shared: &Shared) -> Vec<Stanza> {
    if let Some(activity) = incoming::subscription(&p, &shared.actor) {
        shared.ctx.emit(activity).await;
        return vec![];
    }
    match room_of(shared, &p.from) {
        Some((room, nick)) => return on_room_presence(p, room, nick, shared).await,
        None => match p.type_ {
            PresenceType::Error => {
                let text = payload_error(&p.payloads, "presence error");
                shared
                    .ctx
                    .emit(incoming::error("update", &p.from, &p.to, text))
                    .await;
            }
            PresenceType::None | PresenceType::Unavailable => {
                shared.ctx.emit(incoming::presence_update(&p, false)).await;
            }
            _ => {}
        },
    }
    vec![]
}

/// The owner's "accept the default configuration" form that unlocks a room this client
/// just created (XEP-0045 §10.1.2, instant room).
pub fn unlock_room(room: &BareJid) -> Iq {
    let submit = Element::from(DataForm::new(DataFormType::Submit, MUC_ROOMCONFIG, vec![]));
    Iq::Set {
        from: None,
        to: Some(room.clone().into()),
        id: new_id(),
        payload: Element::builder("query", MUC_OWNER).append(submit).build(),
    }
}

async fn on_room_presence(
    p: Presence,
    room: BareJid,
    nick: String,
    shared: &Shared,
) -> Vec<Stanza> {
    let x = p
        .payloads
        .iter()
        .find_map(|e| MucUser::try_from(e.clone()).ok())
        .unwrap_or_default();
    let from_nick = p
        .from
        .as_ref()
        .and_then(Jid::resource)
        .map(|r| r.to_string());
    if p.type_ == PresenceType::Error {
        let text = payload_error(&p.payloads, "the room refused entry");
        let waiter = lock(&shared.rooms)
            .get_mut(&room)
            .and_then(|r| r.waiter.take());
        match waiter {
            Some(tx) => {
                let _ = tx.send(Err(text));
            }
            None => {
                shared
                    .ctx
                    .emit(incoming::error("join", &p.from, &p.to, text))
                    .await
            }
        }
        return vec![];
    }
    let new_nick = x
        .status
        .contains(&Status::NewNick)
        .then(|| x.items.first().and_then(|i| i.nick.clone()))
        .flatten();
    if let Some(n) = &from_nick
        && let Some(r) = lock(&shared.rooms).get_mut(&room)
    {
        if p.type_ == PresenceType::Unavailable {
            r.occupants.remove(n);
            r.occupants.extend(new_nick.clone());
        } else {
            r.occupants.insert(n.clone());
        }
    }
    let mut replies = vec![];
    let is_self = x.status.contains(&Status::SelfPresence) || from_nick.as_deref() == Some(&nick);
    if is_self {
        let created = x.status.contains(&Status::RoomHasBeenCreated);
        let mut rooms = lock(&shared.rooms);
        let waiter = rooms.get_mut(&room).and_then(|r| r.waiter.take());
        if p.type_ == PresenceType::Unavailable {
            match (&new_nick, rooms.get_mut(&room)) {
                (Some(new), Some(r)) => r.nick = new.clone(),
                _ => {
                    rooms.remove(&room);
                }
            }
        } else if let (Some(n), Some(r)) = (&from_nick, rooms.get_mut(&room)) {
            // The room may have changed the nickname we asked for.
            r.nick = n.clone();
        }
        drop(rooms);
        match waiter {
            Some(tx) => {
                let _ = tx.send(Ok(created));
            }
            // Rejoining after a reconnect re-created the room: unlock it here.
            None if created => replies.push(unlock_room(&room).into()),
            None => {}
        }
    }
    shared.ctx.emit(incoming::presence_update(&p, true)).await;
    replies
}

async fn on_iq(iq: Iq, shared: &Shared) -> Vec<Stanza> {
    match iq {
        Iq::Result { ref id, .. } | Iq::Error { ref id, .. } => {
            let waiter = lock(&shared.iqs).remove(id);
            if let Some(tx) = waiter {
                let _ = tx.send(iq);
            }
            vec![]
        }
        Iq::Set {
            from, id, payload, ..
        } => {
            // Roster pushes come from our own account (or carry no from).
            if shared.is_own(&from)
                && payload.is("query", ns::ROSTER)
                && let Ok(roster) = Roster::try_from(payload)
            {
                for activity in incoming::roster(&roster, &shared.actor) {
                    shared.ctx.emit(activity).await;
                }
                return vec![reply_result(from, id, None)];
            }
            vec![reply_error(from, id)]
        }
        Iq::Get {
            from, id, payload, ..
        } => {
            if payload.is("ping", ns::PING) {
                return vec![reply_result(from, id, None)];
            }
            if payload.is("query", ns::DISCO_INFO) && DiscoInfoQuery::try_from(payload).is_ok() {
                let info = DiscoInfoResult {
                    node: None,
                    identities: vec![Identity::new("client", "web", "en", "Switchboard")],
                    features: [ns::DISCO_INFO, ns::PING, ns::MUC, ns::MESSAGE_CORRECT]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    extensions: vec![],
                };
                return vec![reply_result(from, id, Some(info.into()))];
            }
            vec![reply_error(from, id)]
        }
    }
}

fn reply_result(to: Option<Jid>, id: String, payload: Option<Element>) -> Stanza {
    Iq::Result {
        from: None,
        to,
        id,
        payload,
    }
    .into()
}

fn reply_error(to: Option<Jid>, id: String) -> Stanza {
    Iq::Error {
        from: None,
        to,
        id,
        error: StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::ServiceUnavailable,
            "en",
            "not supported by this client",
        ),
        payload: None,
    }
    .into()
}

impl Shared {
    fn is_own(&self, from: &Option<Jid>) -> bool {
        from.as_ref().is_none_or(|f| f.to_bare() == self.own)
    }
}
