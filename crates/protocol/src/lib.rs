//! The Sockethub 5 protocol as Switchboard speaks it, with no I/O.
//!
//! - [`context`]: the three `@context` URLs every activity carries, and canonical stamping.
//! - [`Manifest`]: what a platform declares (verbs, JSON schemas, persistence).
//! - [`normalize`]: the first checks on raw input and the expansion of string shorthands,
//!   including the legacy `context: "<platform>"` form of Sockethub 3/4 clients.
//! - [`Validator`]: base envelope schema + each platform's schemas, with errors worded as
//!   Sockethub words them (`[dummy] /type: must be equal to one of the allowed values`).
//! - [`registry`]: the payload of the `schemas` event and its fingerprint.
//! - [`ProtocolError`]: every client-visible validation message, in one place.

pub mod context;
mod envelope;
mod error;
mod error_text;
mod manifest;
pub mod normalize;
pub mod registry;
mod validator;

pub use error::ProtocolError;
pub use manifest::Manifest;
pub use validator::{Validated, Validator};

/// Attach an error to what the client sent, the way every failure reply is built: the
/// original input (an object, or `{}` when it was not one) plus a string `error`.
pub fn error_reply(original: &serde_json::Value, error: &str) -> serde_json::Value {
    let mut reply = match original {
        serde_json::Value::Object(map) => serde_json::Value::Object(map.clone()),
        _ => serde_json::Value::Object(Default::default()),
    };
    reply["error"] = serde_json::Value::String(error.to_owned());
    reply
}
