//! Chat settings (the binary fills them from its configuration).

use std::time::Duration;

/// How tokens are signed and checked.
#[derive(Clone)]
pub enum JwtKeys {
    /// HS256 with a shared secret: this server issues and verifies tokens.
    Hs256(Vec<u8>),
    /// RS256 or EdDSA: tokens are verified with `public_pem`; this server issues them only
    /// when it also has `private_pem` (otherwise register and login answer 501 and tokens
    /// come from another issuer).
    Asymmetric {
        algorithm: jsonwebtoken::Algorithm,
        public_pem: Vec<u8>,
        private_pem: Option<Vec<u8>>,
    },
}

impl std::fmt::Debug for JwtKeys {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKeys::Hs256(_) => f.write_str("Hs256(..)"),
            JwtKeys::Asymmetric {
                algorithm,
                private_pem,
                ..
            } => write!(
                f,
                "Asymmetric({algorithm:?}, issuing: {})",
                private_pem.is_some()
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Where the store lives (`sqlite://path?mode=rwc`).
    pub database_url: String,
    pub jwt: JwtKeys,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// One connection per user: a new one closes the older with 4005.
    pub single_session: bool,
    /// Largest message content, in bytes (UTF-8).
    pub max_message_bytes: usize,
    /// WebSocket ping interval; a connection that has not answered the previous ping by the
    /// next one is closed.
    pub ping_interval: Duration,
    /// Frames queued for one connection before it is closed as too slow.
    pub max_queued_frames: usize,
    /// Client frames one connection may send per [`rate_window`](Self::rate_window)
    /// (0: no limit). Each frame over it is answered with an `error` frame and otherwise
    /// ignored; the connection stays open and the next window starts afresh.
    pub rate_limit: u32,
    pub rate_window: Duration,
    /// Simultaneous `/ws` connections per client IP address (0: no cap). The one over it
    /// is refused with HTTP 429 before the WebSocket handshake.
    pub max_connections_per_ip: usize,
    /// "Delivered" receipts waiting to be stored, at most; when full, the deliveries that
    /// make more wait for room (see `receipts`).
    pub receipts_queue: usize,
    /// Name of this node in the registry.
    pub node: String,
}

impl ChatConfig {
    /// Defaults with the given database and HS256 secret.
    pub fn new(database_url: impl Into<String>, secret: Vec<u8>) -> Self {
        ChatConfig {
            database_url: database_url.into(),
            jwt: JwtKeys::Hs256(secret),
            token_ttl: Duration::from_secs(24 * 3600),
            single_session: false,
            max_message_bytes: 8 * 1024,
            ping_interval: Duration::from_secs(30),
            max_queued_frames: 4096,
            rate_limit: 100,
            rate_window: Duration::from_secs(1),
            max_connections_per_ip: 256,
            receipts_queue: 8192,
            node: "local".into(),
        }
    }
}
