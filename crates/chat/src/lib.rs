//! Switchboard's native chat: accounts, the REST API under `/api` ([`rest`]) and the
//! `/ws?token=<JWT>` WebSocket protocol ([`ws`]), on one [`Chat`] service.
//!
//! Every message is persisted in the [`MessageStore`] before its sender hears
//! `message_sent`; it is then routed to the recipients' live connections through this
//! node's [`hub`]. Direct messages move sent → delivered → read, each step persisted and
//! reported to the sender; a message to a user with no connection waits in the store and
//! is delivered, in order, when they connect. Presence (which users are connected, on
//! which node) lives in the engine's [`Registry`]; frames for users on other nodes travel
//! on the engine's [`Broker`](switchboard_engine::Broker) ([`cluster`]).

mod auth;
mod cluster;
mod config;
mod error;
mod frame_writer;
mod hub;
mod limits;
mod live;
mod openapi;
mod protocol;
mod receipts;
pub mod rest;
mod service;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use switchboard_engine::{Engine, Registry};
use switchboard_store::MessageStore;
use tokio_util::sync::CancellationToken;

pub use auth::{Claims, KeyError};
pub use config::{ChatConfig, JwtKeys};
pub use error::ChatError;

use auth::Auth;
use cluster::Cluster;
use hub::Hub;

/// The chat service. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Chat {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn MessageStore>,
    registry: Arc<dyn Registry>,
    auth: Auth,
    hub: Arc<Hub>,
    cluster: Arc<Cluster>,
    /// Where connections queue the receipts of the direct messages they wrote.
    receipts: receipts::Receipts,
    /// The task marking them ([`Chat::close`] drains it).
    marking: receipts::Running,
    config: ChatConfig,
    /// `/ws` connections per client address (see [`limits`]).
    per_ip: Arc<limits::PerIp>,
    /// `/ws` sessions not yet ended ([`Chat::close`] waits for them).
    live: live::Live,
    shutdown: CancellationToken,
}

/// Why the chat service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot open the message store: {0}")]
    Store(#[from] switchboard_store::StoreError),
    #[error("cannot subscribe to this node's chat channels on the engine's broker")]
    Broker,
}

/// How long [`Chat::open`] waits for the node's chat channels to be subscribed.
const SUBSCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Chat {
    /// Open the store named by `config.database_url` (PostgreSQL for `postgres://` and
    /// `postgresql://`, SQLite otherwise) and start the service.
    /// `engine` carries presence (its registry) and the frames for other nodes (its
    /// broker); returns once this node's chat channels are subscribed.
    pub async fn open(config: ChatConfig, engine: &Engine) -> Result<Chat, StartError> {
        let store = switchboard_store::open(&config.database_url).await?;
        let (chat, subscribed) = Chat::start(config, store, engine)?;
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribed).await {
            Ok(Ok(())) => Ok(chat),
            _ => {
                chat.shutdown();
                Err(StartError::Broker)
            }
        }
    }

    /// Start the service on the given store and engine. Needs a Tokio runtime. Frames
    /// from other nodes arrive once the node's channels are subscribed, moments later.
    pub fn new(
        config: ChatConfig,
        store: Arc<dyn MessageStore>,
        engine: &Engine,
    ) -> Result<Chat, StartError> {
        Ok(Chat::start(config, store, engine)?.0)
    }

    fn start(
        config: ChatConfig,
        store: Arc<dyn MessageStore>,
        engine: &Engine,
    ) -> Result<(Chat, tokio::sync::oneshot::Receiver<()>), StartError> {
        let auth = Auth::new(&config.jwt, config.token_ttl)?;
        let hub = Arc::new(Hub::default());
        let (receipts, pending) = receipts::Receipts::new(config.receipts_queue);
        let cluster = Arc::new(Cluster::new(hub.clone(), engine, config.node.clone()));
        let marking = pending.start(store.clone(), cluster.clone());
        let shutdown = CancellationToken::new();
        let subscribed = cluster.listen(store.clone(), shutdown.clone());
        let inner = Arc::new(Inner {
            store,
            registry: engine.registry.clone(),
            auth,
            hub,
            cluster,
            receipts,
            marking,
            per_ip: limits::PerIp::new(config.max_connections_per_ip),
            config,
            live: live::Live::default(),
            shutdown,
        });
        Ok((Chat { inner }, subscribed))
    }

    /// `/api/…` and `/ws`, ready to merge into the server's router.
    pub fn router(&self) -> Router {
        Router::new()
            .nest("/api", rest::routes())
            .route("/ws", axum::routing::get(ws::upgrade))
            .with_state(self.clone())
    }

    /// Store backend name, for the banner.
    pub fn store_name(&self) -> &'static str {
        self.inner.store.name()
    }

    /// Close every WebSocket connection (code 1001) and stop accepting new ones.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
        // Each connection hears it through its outbox: an idle connection then waits on
        // one wake-up rather than two.
        self.inner.hub.close_all(1001, "Server shutting down");
    }

    /// A clean stop, after [`Chat::shutdown`]: wait (`within` at most, in all) until every
    /// `/ws` session has ended, each recording its user's `lastSeen` and presence, and the
    /// delivered receipts they queued are marked; then close the store.
    pub async fn close(&self, within: Duration) {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + within;
        if tokio::time::timeout_at(deadline, inner.live.none_left())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = inner.live.count(),
                "chat sessions still ending; closing the store without them"
            );
        }
        if tokio::time::timeout_at(deadline, inner.marking.close())
            .await
            .is_err()
        {
            tracing::warn!("delivered receipts still being marked; closing the store");
        }
        inner.store.close().await;
    }

    /// Sign a token for an existing user (the `user add` command prints one).
    pub fn issue_token(&self, user_id: i64, username: &str) -> Result<String, ChatError> {
        self.inner.auth.issue(user_id, username)
    }

    /// Create an account (as `POST /api/auth/register` does).
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        email: Option<&str>,
    ) -> Result<switchboard_store::User, ChatError> {
        service::register(self, username, password, email).await
    }
}
