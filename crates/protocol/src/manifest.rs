//! What a platform declares about itself.

use serde_json::Value;

/// A platform's static description. The server builds validation and the schema registry
/// from it without starting the platform.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Short id: `dummy`, `irc`, … (also the last path segment of its context URL).
    pub name: &'static str,
    pub version: &'static str,
    /// Verbs (`type` values) the platform handles.
    pub verbs: Vec<&'static str>,
    /// JSON Schema every message for this platform must satisfy (besides the envelope).
    pub messages: Value,
    /// JSON Schema for its `credentials` activities; `{}` when it takes none.
    pub credentials: Value,
    /// Verbs that need the session's stored credentials (e.g. `connect`).
    pub require_credentials: Vec<&'static str>,
    /// Keeps a connection per actor (irc, xmpp) rather than one shared stateless worker.
    pub persist: bool,
    /// Jobs one worker runs at once (persistent platforms use 1 to keep order).
    pub concurrency: usize,
}

impl Manifest {
    /// The `types` list of the schema registry: `credentials` first, then the verbs.
    pub fn types(&self) -> Vec<&'static str> {
        std::iter::once("credentials")
            .chain(self.verbs.iter().copied())
            .collect()
    }
}
