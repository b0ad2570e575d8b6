//! Small helpers shared by the outgoing and incoming sides: stanza ids, error texts as a
//! user reads them, and the XMPP names of enum values.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::stanza_error::StanzaError;

/// A fresh stanza id: a per-process random prefix and a counter, so ids never repeat
/// across reconnects and never reveal anything.
pub fn new_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("sb{:x}{:x}", nanos as u64, std::process::id())
    });
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `NotAuthorized` → `not-authorized`: the wire name of a unit enum variant from its
/// `Debug` form (the parsers' condition enums have no `Display`).
pub fn kebab(value: &impl std::fmt::Debug) -> String {
    let debug = format!("{value:?}");
    let name = debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or_default();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A stanza error as the client sees it: `condition: server text`, or the condition alone.
pub fn error_text(e: &StanzaError) -> String {
    let condition = condition_name(e);
    match e.texts.values().next() {
        Some(text) if !text.is_empty() => format!("{condition}: {text}"),
        _ => condition,
    }
}

/// The defined condition's element name, read from the serialised error.
fn condition_name(e: &StanzaError) -> String {
    let element: Element = e.clone().into();
    element
        .children()
        .find(|c| c.name() != "text")
        .map(|c| c.name().to_owned())
        .unwrap_or_else(|| kebab(&e.defined_condition))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType};

    #[test]
    fn error_texts() {
        let e = StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::Conflict,
            "en",
            "Nickname in use",
        );
        assert_eq!(error_text(&e), "conflict: Nickname in use");
        let mut e = StanzaError::new(ErrorType::Auth, DefinedCondition::NotAuthorized, "en", "");
        e.texts.clear();
        assert_eq!(error_text(&e), "not-authorized");
        assert_eq!(kebab(&DefinedCondition::ItemNotFound), "item-not-found");
        assert_ne!(new_id(), new_id());
    }
}
