//! Errors the chat service gives clients: each is an intentional message with an HTTP
//! status (REST) and the same text in a WebSocket `error` frame.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchboard_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatError {
    pub status: StatusCode,
    pub message: String,
}

impl ChatError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ChatError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Server error")
    }
    /// A server-side failure whose message tells the client what it left behind.
    pub fn internal_with(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ChatError::new(
                StatusCode::CONFLICT,
                format!("{} already taken", capital(what)),
            ),
            StoreError::NotFound(what) => {
                ChatError::not_found(format!("{} not found", capital(what)))
            }
            StoreError::Database(detail) => {
                tracing::error!(%detail, "store failed");
                ChatError::internal()
            }
            StoreError::ReadCutShort { read, cause } => {
                tracing::error!(%cause, marked = read.len(), "read mark cut short");
                ChatError::internal()
            }
        }
    }
}

fn capital(word: &str) -> String {
    let mut c = word.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl IntoResponse for ChatError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}
