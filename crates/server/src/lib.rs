//! Switchboard's network face: one axum server carrying the Socket.IO transport at
//! `/sockethub` (see [`socketio`]), the HTTP endpoints (`GET /health`) and whatever other
//! routes the binary merges in (the native chat's `/api` and `/ws`).

mod http;
pub mod socketio;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use switchboard_gateway::Gateway;
use tokio::net::TcpListener;
use tower_http::cors::CorsLayer;

/// Transport settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Socket.IO path (Sockethub: `/sockethub`).
    pub path: String,
    /// The gateway's payload limit; the transport allows a margin above it so oversize
    /// activities reach the gateway and get a clear error instead of a dropped connection.
    pub max_payload: usize,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            path: "/sockethub".into(),
            max_payload: 256 * 1024,
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
        }
    }
}

/// Serve until `shutdown` resolves, then close every connection and return. `routes` are
/// served alongside (an empty `Router` for none).
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    config: ServerConfig,
    routes: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (sockethub, io) = socketio::routes(gateway.clone(), &config);
    let app = Router::new()
        .merge(http::routes(gateway))
        .merge(sockethub)
        .merge(routes)
        .layer(axum::middleware::map_request(http::own_request_head))
        .layer(CorsLayer::permissive());
    let closing = io.clone();
    // Replies are small and latency-bound: never hold them back for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        // Stop accepting at once; close the live Socket.IO connections alongside, since
        // axum waits for every connection to end.
        tracing::info!("shutting down: closing client connections");
        tokio::spawn(async move { closing.close(Duration::from_secs(10)).await });
    })
    .await?;
    // Upgraded connections are not axum's: wait (bounded) until every session is closed.
    io.close(Duration::from_secs(10)).await;
    Ok(())
}
