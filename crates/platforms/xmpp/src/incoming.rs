//! Incoming stanzas as the ActivityStreams pushes Sockethub's xmpp platform sends (same
//! types and keys, so its clients read them unchanged), plus a few keys it lacks: MUC
//! `role`/`affiliation`/`newNick`, roster items, connection status. `@context` is stamped
//! by the gateway.

use serde_json::{Map, Value, json};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::delay::Delay;
use tokio_xmpp::parsers::disco::DiscoInfoResult;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::message_correct::Replace;
use tokio_xmpp::parsers::muc::user::{MucUser, Status};
use tokio_xmpp::parsers::presence::{Presence, Show, Type as PresenceType};
use tokio_xmpp::parsers::roster::{Ask, Roster};
use tokio_xmpp::parsers::stanza_id::StanzaId;

use crate::stanza::kebab;

fn jid_text(j: &Option<Jid>) -> String {
    j.as_ref().map(Jid::to_string).unwrap_or_default()
}

fn payload<T: TryFrom<tokio_xmpp::minidom::Element>>(
    payloads: &[tokio_xmpp::minidom::Element],
) -> Option<T> {
    payloads.iter().find_map(|p| T::try_from(p.clone()).ok())
}

/// A chat or groupchat message with a body → `send`; others (chat states, receipts,
/// subjects) are not pushed, as in Sockethub.
pub fn message(m: &Message) -> Option<Value> {
    let (_, body) = m.get_best_body(vec![])?;
    let from = jid_text(&m.from);
    let mut object = Map::new();
    object.insert("type".into(), "message".into());
    object.insert(
        "id".into(),
        m.id.as_ref()
            .map(|id| Value::from(id.0.clone()))
            .unwrap_or(Value::Null),
    );
    object.insert("content".into(), body.clone().into());
    if let Some(sid) = payload::<StanzaId>(&m.payloads) {
        object.insert("xmpp:stanza-id".into(), sid.id.into());
    }
    if let Some(replace) = payload::<Replace>(&m.payloads) {
        object.insert("xmpp:replace".into(), json!({"id": replace.id.0}));
    }
    let mut activity = if m.type_ == MessageType::Groupchat {
        let (room, nick) = match &m.from {
            Some(j) => (
                j.to_bare().to_string(),
                j.resource().map(|r| r.to_string()).unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        json!({
            "type": "send",
            "actor": {"type": "person", "id": from, "name": nick},
            "target": {"type": "room", "id": room},
            "object": object,
        })
    } else {
        json!({
            "type": "send",
            "actor": {"type": "person", "id": from},
            "target": {"type": "person", "id": jid_text(&m.to)},
            "object": object,
        })
    };
    if let Some(delay) = payload::<Delay>(&m.payloads) {
        activity["published"] = delay
            .stamp
            .0
            .naive_utc()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
            .into();
    }
    Some(activity)
}

fn show_text(p: &Presence) -> &'static str {
    match (&p.type_, &p.show) {
        (PresenceType::Unavailable, _) => "offline",
        (_, Some(Show::Away)) => "away",
        (_, Some(Show::Chat)) => "chat",
        (_, Some(Show::Dnd)) => "dnd",
        (_, Some(Show::Xa)) => "xa",
        (_, None) => "online",
    }
}

/// A contact's or a room occupant's presence → `update` with a `presence` object.
/// `room` says whether it came from a room this connection is in.
pub fn presence_update(p: &Presence, room: bool) -> Value {
    let from = jid_text(&p.from);
    let mut object = Map::new();
    object.insert("type".into(), "presence".into());
    object.insert("presence".into(), show_text(p).into());
    if let Some(status) = p.statuses.values().next() {
        object.insert("content".into(), status.clone().into());
    }
    let mut actor = json!({"type": if room { "room" } else { "person" }, "id": from});
    if let Some(r) = p.from.as_ref().and_then(Jid::resource) {
        actor["name"] = r.to_string().into();
    }
    if room && let Some(x) = payload::<MucUser>(&p.payloads) {
        if let Some(item) = x.items.first() {
            object.insert("role".into(), kebab(&item.role).into());
            object.insert("affiliation".into(), kebab(&item.affiliation).into());
            if let Some(jid) = &item.jid {
                object.insert("jid".into(), jid.to_string().into());
            }
            if x.status.contains(&Status::NewNick)
                && let Some(nick) = &item.nick
            {
                object.insert("newNick".into(), nick.clone().into());
            }
        }
        let codes: Vec<Value> = x
            .status
            .iter()
            .filter_map(|s| {
                Element::from(s.clone())
                    .attr("code")
                    .map(|c| c.to_owned().into())
            })
            .collect();
        if !codes.is_empty() {
            object.insert("statusCodes".into(), codes.into());
        }
    }
    let mut activity = json!({"type": "update", "actor": actor, "object": object});
    if let Some(to) = &p.to {
        activity["target"] = json!({"type": "person", "id": to.to_string()});
    }
    activity
}

/// Subscription presences → the friend verbs, seen from the contact's side.
pub fn subscription(p: &Presence, actor: &Value) -> Option<Value> {
    let verb = match p.type_ {
        PresenceType::Subscribe => "request-friend",
        PresenceType::Subscribed => "make-friend",
        PresenceType::Unsubscribe | PresenceType::Unsubscribed => "remove-friend",
        _ => return None,
    };
    let from = p
        .from
        .as_ref()
        .map(|j| j.to_bare().to_string())
        .unwrap_or_default();
    let mut activity = json!({
        "type": verb,
        "actor": {"type": "person", "id": from},
        "target": actor,
    });
    if matches!(p.type_, PresenceType::Unsubscribed) {
        activity["object"] = json!({"type": "presence", "presence": "unsubscribed"});
    }
    Some(activity)
}

/// A roster push: one `update` per changed contact, with its subscription state.
pub fn roster(r: &Roster, actor: &Value) -> Vec<Value> {
    r.items
        .iter()
        .map(|item| {
            let mut contact = json!({"type": "person", "id": item.jid.to_string()});
            if let Some(name) = &item.name {
                contact["name"] = name.clone().into();
            }
            let mut object = json!({
                "type": "contact",
                "subscription": kebab(&item.subscription),
            });
            if item.ask == Ask::Subscribe {
                object["ask"] = "subscribe".into();
            }
            json!({"type": "update", "actor": contact, "target": actor, "object": object})
        })
        .collect()
}

/// A stanza error nobody was waiting for (Sockethub's shape: the verb it relates to, the
/// sender as a room, and the error text).
pub fn error(verb: &str, from: &Option<Jid>, to: &Option<Jid>, text: String) -> Value {
    json!({
        "type": verb,
        "actor": {"type": "room", "id": jid_text(from)},
        "target": {"type": "person", "id": jid_text(to)},
        "error": text,
    })
}

/// `query` attendance answer: the occupants' nicknames.
pub fn attendance(room: &str, actor: &Value, members: Vec<String>) -> Value {
    json!({
        "type": "query",
        "actor": {"type": "room", "id": room},
        "target": actor,
        "object": {"type": "attendance", "members": members},
    })
}

/// `query` room-info answer: identities, features and the `muc#roominfo_*` /
/// `muc#roomconfig_*` form fields grouped the way Sockethub groups them.
pub fn room_info(jid: &str, actor: &Value, info: &DiscoInfoResult) -> Value {
    let identities: Vec<Value> = info
        .identities
        .iter()
        .map(|i| {
            let mut v = json!({"category": i.category, "type": i.type_});
            if let Some(name) = &i.name {
                v["name"] = name.clone().into();
            }
            v
        })
        .collect();
    let name = info
        .identities
        .iter()
        .find_map(|i| i.name.clone())
        .unwrap_or_else(|| jid.to_owned());
    let mut object = json!({
        "type": "room-info",
        "features": info.features.iter().collect::<Vec<_>>(),
    });
    if !identities.is_empty() {
        object["identities"] = identities.into();
    }
    for form in &info.extensions {
        for field in &form.fields {
            let Some(var) = field.var.as_deref() else {
                continue;
            };
            if var == "FORM_TYPE" {
                continue;
            }
            let (section, key) = match var.strip_prefix("muc#") {
                Some(rest) => match rest.split_once('_') {
                    Some((s @ ("roominfo" | "roomconfig"), k)) => (s, k),
                    _ => ("custom", var),
                },
                None => ("custom", var),
            };
            let value: Value = match field.values.as_slice() {
                [one] => one.clone().into(),
                many => many.to_vec().into(),
            };
            object[section][key] = value;
        }
    }
    json!({
        "type": "query",
        "actor": {"type": "room", "id": jid, "name": name},
        "target": actor,
        "object": object,
    })
}

/// The connection's state, for every attached session: `status` is `reconnecting`,
/// `online` (after a reconnect) or `failed`.
pub fn connection_status(actor: &Value, status: &str, error: Option<String>) -> Value {
    let mut activity = json!({
        "type": "connect",
        "actor": actor,
        "object": {"type": "connect", "status": status},
    });
    if let Some(e) = error {
        activity["error"] = e.into();
        activity["object"]["condition"] = "network".into();
    }
    activity
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: TryFrom<Element>>(xml: &str) -> T
    where
        T::Error: std::fmt::Debug,
    {
        T::try_from(xml.parse::<Element>().expect("xml")).expect("stanza")
    }

    #[test]
    fn groupchat_with_correction_delay_and_stanza_id() {
        let m: Message = parse(
            "<message xmlns='jabber:client' type='groupchat' id='m2' \
             from='room@muc.example/Bob' to='alice@example/web'>\
             <body>fixed</body>\
             <replace xmlns='urn:xmpp:message-correct:0' id='m1'/>\
             <delay xmlns='urn:xmpp:delay' stamp='2026-11-22T10:00:00+01:00'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='s1' by='room@muc.example'/>\
             </message>",
        );
        assert_eq!(
            message(&m).unwrap(),
            json!({
                "type": "send",
                "actor": {"type": "person", "id": "room@muc.example/Bob", "name": "Bob"},
                "target": {"type": "room", "id": "room@muc.example"},
                "object": {"type": "message", "id": "m2", "content": "fixed",
                           "xmpp:stanza-id": "s1", "xmpp:replace": {"id": "m1"}},
                "published": "2026-11-22T09:00:00.000Z",
            })
        );
        let m: Message = parse(
            "<message xmlns='jabber:client' type='chat' from='a@example/x'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert_eq!(message(&m), None, "no body, no push");
    }

    #[test]
    fn muc_nick_change_and_subscriptions() {
        let p: Presence = parse(
            "<presence xmlns='jabber:client' type='unavailable' from='room@muc.example/Bob' \
             to='alice@example/web'><x xmlns='http://jabber.org/protocol/muc#user'>\
             <item affiliation='member' role='participant' nick='Robert'/>\
             <status code='303'/></x></presence>",
        );
        let a = presence_update(&p, true);
        assert_eq!(
            a["actor"],
            json!({"type": "room", "id": "room@muc.example/Bob", "name": "Bob"})
        );
        assert_eq!(a["object"]["presence"], "offline");
        assert_eq!(a["object"]["newNick"], "Robert");
        assert_eq!(a["object"]["role"], "participant");
        assert_eq!(a["object"]["affiliation"], "member");
        assert_eq!(a["object"]["statusCodes"], json!(["303"]));

        let me = json!({"type": "person", "id": "alice@example"});
        let p: Presence =
            parse("<presence xmlns='jabber:client' type='subscribe' from='bob@example/x'/>");
        assert_eq!(
            subscription(&p, &me).unwrap(),
            json!({"type": "request-friend", "actor": {"type": "person", "id": "bob@example"}, "target": me})
        );
        let p: Presence = parse(
            "<presence xmlns='jabber:client' from='bob@example/x'><show>dnd</show>\
             <status>busy</status></presence>",
        );
        assert_eq!(subscription(&p, &me), None);
        let a = presence_update(&p, false);
        assert_eq!(
            a["object"],
            json!({"type": "presence", "presence": "dnd", "content": "busy"})
        );
    }
}
