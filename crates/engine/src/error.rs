//! The one error type every engine backend returns.

/// What can go wrong talking to an engine backend. Callers turn these into client-facing
/// messages; the text never contains payloads or secrets.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The backend could not be reached or refused the operation (Redis down, …).
    #[error("engine backend unavailable: {0}")]
    Unavailable(String),
    /// A sealed blob failed authentication: wrong key or tampered bytes.
    #[error("sealed data could not be opened")]
    Unseal,
    /// The delivery being acknowledged is not (or no longer) reserved.
    #[error("unknown delivery {0}")]
    UnknownDelivery(u64),
}
