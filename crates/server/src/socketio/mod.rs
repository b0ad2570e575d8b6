//! The Socket.IO server at `/sockethub`: Engine.IO v4 and Socket.IO v5, as Sockethub 5
//! clients speak them (socket.io-client 4, @sockethub/client).
//!
//! - [`handler`]: the HTTP entry point — handshake, polling requests, WebSocket upgrades.
//! - [`connection`]: one task per Engine.IO session owning its transport, heartbeat and
//!   socket; the whole per-connection cost.
//! - [`socket`]: namespace `/` and the Sockethub events on the gateway session.
//! - [`engine_packet`], [`socket_packet`]: the two wire codecs.
//! - [`outbox`]: gateway pushes waiting for the connection task.
//! - [`frames`]: the packets a wake-up produced, framed for one WebSocket write.
//! - [`websocket`]: the WebSocket handshake and buffer sizes.
//!
//! Written for memory: an idle WebSocket connection is one task of about 1 KB (its
//! connection included) and a 512-byte read buffer (see BENCHMARKS.md, "Gateway").

mod connection;
mod engine_packet;
mod frames;
mod handler;
mod outbox;
mod socket;
mod socket_packet;
mod websocket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::any;
use switchboard_gateway::Gateway;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::ServerConfig;
use connection::PollRequest;

/// Engine.IO settings, from [`ServerConfig`].
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Largest message (WebSocket) or polling body accepted.
    pub max_payload: usize,
    /// A client that has not connected to `/` by then is dropped (socket.io: 45 s).
    pub connect_timeout: Duration,
}

/// What every request handler and connection task shares.
pub(crate) struct Hub {
    gateway: Gateway,
    config: EngineConfig,
    /// Polling sessions by sid (WebSocket sessions need no lookup).
    polling: Mutex<HashMap<String, mpsc::Sender<PollRequest>>>,
    shutdown: CancellationToken,
    live: AtomicUsize,
    all_closed: Notify,
}

impl Hub {
    fn polling(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<PollRequest>>> {
        self.polling.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget_polling(&self, sid: &str) {
        self.polling().remove(sid);
    }

    /// A connection started (counted until it has closed its session).
    fn opened(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    fn closed(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_closed.notify_waiters();
        }
    }
}

/// Handle to the transport: closes every connection at shutdown.
#[derive(Clone)]
pub struct SocketIo {
    hub: Arc<Hub>,
}

impl SocketIo {
    /// Close every connection (their sessions too) and wait for them, at most `limit`.
    pub async fn close(&self, limit: Duration) {
        self.hub.shutdown.cancel();
        let hub = &self.hub;
        let all_closed = async {
            loop {
                let notified = hub.all_closed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if hub.live.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, all_closed).await.is_err() {
            tracing::warn!(
                left = hub.live.load(Ordering::Acquire),
                "connections still closing at shutdown"
            );
        }
    }
}

/// The routes at `config.path` (with and without the trailing slash clients add).
pub(crate) fn routes(gateway: Gateway, config: &ServerConfig) -> (Router, SocketIo) {
    // Room above the gateway's limit (see ServerConfig::max_payload), bounded.
    let transport_limit = config.max_payload.saturating_mul(4).max(64 * 1024);
    let hub = Arc::new(Hub {
        gateway,
        config: EngineConfig {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            max_payload: transport_limit,
            connect_timeout: Duration::from_secs(45),
        },
        polling: Mutex::default(),
        shutdown: CancellationToken::new(),
        live: AtomicUsize::new(0),
        all_closed: Notify::new(),
    });
    let path = config.path.trim_end_matches('/');
    let router = Router::new()
        .route(path, any(handler::handle))
        .route(&format!("{path}/"), any(handler::handle))
        .with_state(hub.clone());
    (router, SocketIo { hub })
}

#[cfg(test)]
mod tests;
