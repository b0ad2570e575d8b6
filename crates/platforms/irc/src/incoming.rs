//! Incoming IRC traffic as ActivityStreams: what sessions see of channel and private
//! messages, notices, actions, joins, parts, quits, kicks, nick and topic changes and
//! channel privileges. Ids follow [`crate::names`]; `published` is the IRCv3 `server-time`
//! of the line when the server sends one, else the time it was read; `id` is its `msgid`.

use chrono::{SecondsFormat, Utc};
use irc_proto::mode::{ChannelMode, Mode};
use irc_proto::{Command, Message, Prefix};
use serde_json::{Value, json};

use crate::names::{is_channel, person, room, service};

/// The value of tag `key` on `msg`.
pub fn tag<'a>(msg: &'a Message, key: &str) -> Option<&'a str> {
    msg.tags
        .as_ref()?
        .iter()
        .find(|t| t.0 == key)
        .and_then(|t| t.1.as_deref())
}

/// The nick a line comes from, if a user sent it.
pub fn source_nick(msg: &Message) -> Option<&str> {
    match &msg.prefix {
        Some(Prefix::Nickname(nick, _, _)) => Some(nick),
        _ => None,
    }
}

/// Stamp `published` and `id` from the line's tags.
pub fn stamp(msg: &Message, mut activity: Value) -> Value {
    let published = tag(msg, "time")
        .map(str::to_owned)
        .unwrap_or_else(|| Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true));
    activity["published"] = Value::String(published);
    if let Some(id) = tag(msg, "msgid") {
        activity["id"] = Value::String(id.to_owned());
    }
    activity
}

/// The text of a CTCP ACTION (`\x01ACTION text\x01`), if `text` is one.
fn action(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('\u{1}')?;
    let inner = inner.strip_suffix('\u{1}').unwrap_or(inner);
    inner
        .strip_prefix("ACTION")
        .map(|rest| rest.strip_prefix(' ').unwrap_or(rest))
}

/// The activity for one incoming line, or `None` for lines sessions do not see.
/// `server` names the connection in ids; `me` is our current nick.
pub fn activity(msg: &Message, server: &str, me: &str) -> Option<Value> {
    let from = source_nick(msg);
    let actor = || match from {
        Some(nick) => person(nick, server),
        None => service(server),
    };
    let place = |target: &str| {
        if is_channel(target) {
            room(target, server)
        } else {
            person(me, server)
        }
    };
    let a = match &msg.command {
        Command::PRIVMSG(target, text) => {
            let object = match action(text) {
                Some(act) => json!({"type": "me", "content": act}),
                // Other CTCP queries (VERSION, PING …) are not conversation.
                None if text.starts_with('\u{1}') => return None,
                None => json!({"type": "message", "content": text}),
            };
            json!({"type": "send", "actor": actor(), "target": place(target), "object": object})
        }
        Command::NOTICE(target, text) => json!({
            "type": "send",
            "actor": actor(),
            "target": place(target),
            "object": {"type": "notice", "content": text},
        }),
        Command::JOIN(channel, _, _) => {
            json!({"type": "join", "actor": actor(), "target": room(channel, server)})
        }
        Command::PART(channel, reason) => json!({
            "type": "leave",
            "actor": actor(),
            "target": room(channel, server),
            "object": {"type": "message", "content": reason.as_deref().unwrap_or("user has left the channel")},
        }),
        Command::QUIT(reason) => json!({
            "type": "leave",
            "actor": actor(),
            "target": service(server),
            "object": {"type": "message", "content": reason.as_deref().unwrap_or("user has quit")},
        }),
        Command::KICK(channel, nick, reason) => {
            let by = from.unwrap_or(server);
            let content = match reason {
                Some(r) if !r.is_empty() => format!("kicked by {by}: {r}"),
                _ => format!("kicked by {by}"),
            };
            json!({
                "type": "leave",
                "actor": person(nick, server),
                "target": room(channel, server),
                "object": {"type": "message", "content": content},
            })
        }
        Command::NICK(new) => json!({
            "type": "update",
            "actor": actor(),
            "target": person(new, server),
            "object": {"type": "address"},
        }),
        Command::TOPIC(channel, Some(topic)) => json!({
            "type": "update",
            "actor": actor(),
            "target": room(channel, server),
            "object": {"type": "topic", "content": topic},
        }),
        // RPL_TOPIC: the topic of a channel just joined.
        Command::Response(irc_proto::Response::RPL_TOPIC, args) if args.len() >= 3 => json!({
            "type": "update",
            "actor": service(server),
            "target": room(&args[1], server),
            "object": {"type": "topic", "content": args[2]},
        }),
        _ => return None,
    };
    Some(stamp(msg, a))
}

/// Privilege changes in a channel MODE line (`+o nick`, `-v nick` …), as role
/// relationships; other modes are not shown.
pub fn roles(msg: &Message, server: &str) -> Vec<Value> {
    let Command::ChannelMODE(channel, modes) = &msg.command else {
        return Vec::new();
    };
    let by = source_nick(msg).map_or_else(|| service(server), |n| person(n, server));
    modes
        .iter()
        .filter_map(|m| {
            let (verb, mode, nick) = match m {
                Mode::Plus(mode, Some(nick)) => ("add", mode, nick),
                Mode::Minus(mode, Some(nick)) => ("remove", mode, nick),
                _ => return None,
            };
            let role = match mode {
                ChannelMode::Founder => "owner",
                ChannelMode::Admin | ChannelMode::Oper => "admin",
                ChannelMode::Halfop | ChannelMode::Voice => "participant",
                _ => return None,
            };
            Some(stamp(
                msg,
                json!({
                    "type": verb,
                    "actor": by.clone(),
                    "target": person(nick, server),
                    "object": {
                        "type": "relationship",
                        "relationship": "role",
                        "subject": {"type": "presence", "role": role},
                        "object": room(channel, server),
                    },
                }),
            ))
        })
        .collect()
}

/// Members of a RPL_NAMREPLY line, without their privilege prefixes.
pub fn names(args: &[String]) -> impl Iterator<Item = &str> {
    args.last()
        .map(String::as_str)
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_start_matches(['~', '&', '@', '%', '+']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Message {
        line.parse().unwrap()
    }

    #[test]
    fn channel_and_private_messages() {
        let a = activity(&parse(":ann!a@h PRIVMSG #rust :hi there"), "irc.x", "me").unwrap();
        assert_eq!(a["type"], "send");
        assert_eq!(
            a["actor"],
            json!({"type":"person","id":"ann@irc.x","name":"ann"})
        );
        assert_eq!(
            a["target"],
            json!({"type":"room","id":"#rust@irc.x","name":"#rust"})
        );
        assert_eq!(a["object"], json!({"type":"message","content":"hi there"}));
        assert!(a["published"].is_string());

        let a = activity(
            &parse(":ann!a@h PRIVMSG me :\u{1}ACTION waves\u{1}"),
            "irc.x",
            "me",
        )
        .unwrap();
        assert_eq!(a["target"]["id"], "me@irc.x");
        assert_eq!(a["object"], json!({"type":"me","content":"waves"}));
        assert!(
            activity(
                &parse(":ann!a@h PRIVMSG me :\u{1}VERSION\u{1}"),
                "irc.x",
                "me"
            )
            .is_none()
        );

        let a = activity(&parse(":irc.x NOTICE me :welcome"), "irc.x", "me").unwrap();
        assert_eq!(a["actor"]["type"], "service");
        assert_eq!(a["object"]["type"], "notice");
    }

    #[test]
    fn server_time_and_msgid() {
        let m = parse("@time=2026-11-22T10:00:00.123Z;msgid=abc :ann!a@h PRIVMSG #r :x");
        let a = activity(&m, "irc.x", "me").unwrap();
        assert_eq!(a["published"], "2026-11-22T10:00:00.123Z");
        assert_eq!(a["id"], "abc");
    }

    #[test]
    fn membership_and_changes() {
        let a = activity(&parse(":ann!a@h JOIN #rust"), "s", "me").unwrap();
        assert_eq!(
            (a["type"].as_str(), a["target"]["id"].as_str()),
            (Some("join"), Some("#rust@s"))
        );
        let a = activity(&parse(":ann!a@h JOIN :#rust"), "s", "me").unwrap();
        assert_eq!(a["target"]["name"], "#rust");
        let a = activity(&parse(":op!a@h KICK #rust ann :spam"), "s", "me").unwrap();
        assert_eq!(a["actor"]["id"], "ann@s");
        assert_eq!(a["object"]["content"], "kicked by op: spam");
        let a = activity(&parse(":ann!a@h NICK :anna"), "s", "me").unwrap();
        assert_eq!(a["target"]["id"], "anna@s");
        let a = activity(&parse(":ann!a@h TOPIC #rust :new topic"), "s", "me").unwrap();
        assert_eq!(a["object"], json!({"type":"topic","content":"new topic"}));
        let a = activity(&parse(":ann!a@h QUIT :bye"), "s", "me").unwrap();
        assert_eq!(a["target"]["type"], "service");

        let r = roles(&parse(":op!a@h MODE #rust +ov ann bob"), "s");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0]["object"]["subject"]["role"], "admin");
        assert_eq!(r[1]["object"]["subject"]["role"], "participant");
        assert_eq!(r[0]["target"]["id"], "ann@s");
    }

    #[test]
    fn names_lose_their_prefixes() {
        let args: Vec<String> = ["me", "=", "#r", "@op +voice plain"]
            .map(String::from)
            .to_vec();
        assert_eq!(names(&args).collect::<Vec<_>>(), ["op", "voice", "plain"]);
    }
}
