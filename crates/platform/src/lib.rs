//! The platform runtime.
//!
//! A *platform* (dummy, irc, xmpp, feeds, metadata) is a small crate that implements
//! [`Platform`]: a [`Manifest`](switchboard_protocol::Manifest) (name, verbs, JSON schemas,
//! whether it keeps a connection) and a `handle` function for jobs. Platforms never run
//! inside the server: `switchboard platform <name>` runs one in its own process through
//! [`worker::run`], talking to the server over stdin/stdout with the [`frame`] protocol.
//! A platform that crashes, hangs or leaks takes only its own process down. [`entry`] is
//! how a worker binary starts (arguments, logging, runtime).

pub mod entry;
pub mod frame;
mod platform;
#[cfg(feature = "tls")]
pub mod tls;
pub mod worker;

pub use platform::{Job, Platform, PlatformError, WorkerContext};
