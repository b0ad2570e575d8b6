//! Every validation failure a client can see, worded as Sockethub 5 words it so existing
//! clients that match on the text keep working.

/// A request the protocol layer refuses. `Display` is the exact client-facing text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message received is not an object.")]
    NotAnObject,
    #[error("activity stream must contain an @context array.")]
    NoContext,
    #[error("activity stream must contain a type property.")]
    NoType,
    #[error("activity stream must contain an actor property.")]
    NoActor,
    #[error(
        "platform context URL not registered with this Sockethub instance. No platform @context values were provided."
    )]
    NoPlatformContext,
    #[error("platform context URL not registered with this Sockethub instance. Multiple platform @context values were provided: {}.", .0.join(", "))]
    MultiplePlatformContexts(Vec<String>),
    #[error(
        "platform context URL not registered with this Sockethub instance. Unregistered platform @context value: {0}"
    )]
    UnregisteredContext(String),
    #[error("credential activity streams must have credentials set as type")]
    CredentialsType,
    #[error("platform type {verb} not supported by {platform} platform. (types: {})", .types.join(", "))]
    UnsupportedType {
        verb: String,
        platform: String,
        types: Vec<String>,
    },
    /// A JSON-Schema failure, already formatted (`[dummy] /type: must be …`).
    #[error("{0}")]
    Schema(String),
    #[error("activity stream exceeds the maximum size of {limit} bytes.")]
    TooLarge { limit: usize },
}
