//! The protocol gateway, independent of any transport.
//!
//! A transport (Socket.IO at `/sockethub`, later plain WebSocket) opens a [`Session`] per
//! connection and hands it the client's events; the session answers each with exactly one
//! reply and streams [`Push`]es (incoming platform traffic, server errors) back.
//!
//! ```text
//! event ─▶ pipeline (size → normalise → platform → envelope → platform schema → credentials)
//!            │ credentials: sealed with the session's key into the CredentialStore
//!            ▼ message: a job, sealed, pushed on the JobQueue of its platform instance
//!        pool::Instance ─pipe─▶ `switchboard platform <name>` worker process
//!            │ results and incoming events, sealed, published on `session:{id}`
//!            ▼
//!        Session listener ─▶ the pending request's reply, or a Push
//! ```

mod config;
mod gateway;
mod keys;
mod order;
pub mod pipeline;
mod pool;
mod rate;
mod session;
mod wire;

pub use config::{GatewayConfig, WorkerCommand};
pub use gateway::{Gateway, GatewayError, Refusal};
pub use order::Ticket;
pub use session::{Push, Pusher, RATE_LIMITED, Session, server_error};
