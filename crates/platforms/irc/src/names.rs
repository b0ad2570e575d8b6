//! Names and ids: what a valid nick or channel is, and the one id form used in every
//! activity, incoming and outgoing: `nick@server` for people, `#channel@server` for rooms
//! (the channel name is also kept as `name`). Every field that ends up on an IRC line goes
//! through a check here first, so CR, LF or NUL can never start an extra command.

use serde_json::{Value, json};
use switchboard_platform::PlatformError;

/// Longest nick accepted before asking the server (which may allow less: it says so).
const MAX_NICK: usize = 64;
/// Longest channel name (RFC 2812 allows 50).
const MAX_CHANNEL: usize = 50;

pub fn person(nick: &str, server: &str) -> Value {
    json!({"type": "person", "id": format!("{nick}@{server}"), "name": nick})
}

pub fn room(channel: &str, server: &str) -> Value {
    json!({"type": "room", "id": format!("{channel}@{server}"), "name": channel})
}

pub fn service(server: &str) -> Value {
    json!({"type": "service", "id": server, "name": server})
}

/// Whether `name` is a channel (by its sigil).
pub fn is_channel(name: &str) -> bool {
    name.starts_with(['#', '&', '+', '!'])
}

/// Refuse a free-text field that would break out of its IRC line.
pub fn single_line(field: &str, value: &str) -> Result<(), PlatformError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(PlatformError::new(format!(
            "{field} must not contain line breaks or NUL characters"
        )));
    }
    Ok(())
}

/// RFC 2812 nickname characters (the length limit is the server's to enforce).
pub fn check_nick(nick: &str) -> Result<(), PlatformError> {
    let special = |c: char| "[]\\`_^{|}".contains(c);
    let mut chars = nick.chars();
    let valid = match chars.next() {
        Some(first) => {
            (first.is_ascii_alphabetic() || special(first))
                && chars.all(|c| c.is_ascii_alphanumeric() || special(c) || c == '-')
                && nick.len() <= MAX_NICK
        }
        None => false,
    };
    if valid {
        Ok(())
    } else {
        Err(PlatformError::new(format!(
            "invalid nick {nick:?}: a letter or one of []\\`_^{{|}} first, then letters, digits, those or '-'"
        )))
    }
}

/// A channel name: a sigil, then no space, comma, BEL, CR, LF or NUL.
pub fn check_channel(channel: &str) -> Result<(), PlatformError> {
    let valid = is_channel(channel)
        && channel.len() > 1
        && channel.len() <= MAX_CHANNEL
        && !channel.contains([' ', ',', '\x07', '\r', '\n', '\0']);
    if valid {
        Ok(())
    } else {
        Err(PlatformError::new(format!(
            "invalid channel name {channel:?}: it starts with #, &, + or ! and has no spaces, commas or control characters"
        )))
    }
}

/// Where an activity points on IRC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Channel(String),
    Nick(String),
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Channel(c) | Target::Nick(c) => c,
        }
    }
}

/// Read `target.id` (`#chan@server` or `nick@server`) of an activity, checking the server
/// is this connection's and the name is valid.
pub fn target(activity: &Value, server: &str) -> Result<Target, PlatformError> {
    let id = activity
        .pointer("/target/id")
        .and_then(Value::as_str)
        .ok_or_else(|| PlatformError::new("target.id is required"))?;
    let (name, host) = id.rsplit_once('@').ok_or_else(|| {
        PlatformError::new(format!(
            "target id {id:?} must be #channel@{server} or nick@{server}"
        ))
    })?;
    if !host.eq_ignore_ascii_case(server) {
        return Err(PlatformError::new(format!(
            "target {id:?} is not on this connection's server {server}"
        )));
    }
    if is_channel(name) {
        check_channel(name)?;
        Ok(Target::Channel(name.to_owned()))
    } else {
        check_nick(name)?;
        Ok(Target::Nick(name.to_owned()))
    }
}

/// A channel target, refusing people.
pub fn channel_target(activity: &Value, server: &str) -> Result<String, PlatformError> {
    match target(activity, server)? {
        Target::Channel(c) => Ok(c),
        Target::Nick(n) => Err(PlatformError::new(format!(
            "target {n}@{server} is a person; this needs a room (#channel@{server})"
        ))),
    }
}

/// IRC's case-insensitive comparison of nicks and channels (rfc1459 casemapping).
pub fn irc_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.chars()
            .zip(b.chars())
            .all(|(x, y)| fold_char(x) == fold_char(y))
}

/// `name` case-folded, as a map key.
pub fn fold(name: &str) -> String {
    name.chars().map(fold_char).collect()
}

fn fold_char(c: char) -> char {
    match c {
        '[' => '{',
        ']' => '}',
        '\\' => '|',
        '~' => '^',
        c => c.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_targets() {
        let a = json!({"target": room("#rust", "irc.example")});
        assert_eq!(a["target"]["id"], "#rust@irc.example");
        assert_eq!(
            target(&a, "irc.example").unwrap(),
            Target::Channel("#rust".into())
        );
        let p = json!({"target": person("ann", "irc.example")});
        assert_eq!(
            target(&p, "IRC.example").unwrap(),
            Target::Nick("ann".into())
        );
        assert!(target(&a, "other.example").is_err());
        assert!(target(&json!({"target": {"id": "#rust"}}), "irc.example").is_err());
    }

    #[test]
    fn control_characters_never_pass() {
        for bad in ["#a\r\nQUIT", "#a b", "#a,#b", "#", "rust", "#a\0"] {
            assert!(check_channel(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "1abc", "a b", "a\r\nQUIT :x", "a\0", "a:b", "#chan"] {
            assert!(check_nick(bad).is_err(), "{bad:?}");
        }
        check_nick("[ann]_-9").unwrap();
        check_channel("#rust-lang.fr").unwrap();
        assert!(single_line("topic", "a\nb").is_err());
        single_line("topic", "fine").unwrap();
    }

    #[test]
    fn casemapping() {
        assert!(irc_eq("#Rust[x]", "#rust{X}"));
        assert!(!irc_eq("#rust", "#rusty"));
    }
}
