//! The one error type every store backend returns.

/// What can go wrong in a store. Callers turn these into client-facing messages; the text
/// never contains message content or password hashes.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique value (a username) is already taken.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A referenced row (a room, a user) does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(String),
    /// A read mark failed part-way (it goes in slices): the messages in `read` (oldest
    /// first) are marked read, the newer ones are still unread.
    #[error("read mark cut short after {} messages: {cause}", read.len())]
    ReadCutShort { read: Vec<i64>, cause: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(format!("migration failed: {e}"))
    }
}
