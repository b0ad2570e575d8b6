//! `switchboard serve`: build the engine and gateway, bind, print the banner, serve until
//! SIGINT/SIGTERM, then stop every worker process before exiting. Also the listener-less
//! node of `switchboard platform <name> --redis-url …`.

use std::time::Duration;

use anyhow::{Context, Result};
use switchboard::platforms;
use switchboard_chat::Chat;
use switchboard_engine::Engine;
use switchboard_engine_redis::RedisOptions;
use switchboard_gateway::Gateway;
use tokio::net::TcpListener;

use crate::config::Settings;

/// The engine the settings choose: Redis (one server or a cluster) with `redis_url`,
/// embedded otherwise.
async fn engine(settings: &Settings) -> Result<Engine> {
    Ok(if settings.redis_url.is_empty() {
        Engine::embedded()
    } else {
        let options = RedisOptions {
            claim_idle: Duration::from_millis(settings.redis_claim_idle_ms),
            presence_ttl: Duration::from_millis(settings.redis_presence_ttl_ms),
            prefix: settings.redis_prefix.clone(),
            cluster: settings.redis_cluster,
            ..RedisOptions::new(settings.redis_url.clone())
        };
        switchboard_engine_redis::connect(options)
            .await
            .with_context(|| format!("cannot use Redis at {}", settings.redis_address()))?
    })
}

/// The gateway on `engine` with every compiled-in platform.
fn gateway(settings: &Settings, engine: Engine) -> Result<Gateway> {
    Ok(Gateway::new(
        settings.gateway()?,
        engine,
        platforms::manifests(),
        env!("CARGO_PKG_VERSION"),
    )?)
}

/// `switchboard platform <name> --redis-url …`: no listener, one pinned instance of the
/// platform serving the cluster's shared queue, until SIGINT/SIGTERM.
pub async fn run_remote_worker(settings: Settings, name: &str) -> Result<()> {
    let gateway = gateway(&settings, engine(&settings).await?)?;
    gateway.serve_platform(name)?;
    println!(
        "switchboard {} platform {name} worker serving {} (engine: {})",
        env!("CARGO_PKG_VERSION"),
        settings.redis_address(),
        gateway.engine_name()
    );
    shutdown_signal().await;
    gateway.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

pub async fn run(settings: Settings) -> Result<()> {
    let engine = engine(&settings).await?;
    let mut chat_config = settings.chat()?;
    if engine.distributed {
        // Nodes share the registry: each needs its own name so its connections (and its
        // death) are told apart from the others'.
        chat_config.node = format!("node-{}", switchboard_engine::seal::random_id::<6>());
    }
    let chat = Chat::open(chat_config, &engine).await.with_context(|| {
        format!(
            "cannot start chat on {}",
            switchboard_store::redacted_url(&settings.database_url)
        )
    })?;
    let gateway = gateway(&settings, engine)?;
    let listener = TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", settings.host, settings.port))?;
    let addr = listener.local_addr()?;
    // The first stdout line is the banner; scripts and tests read the address from it.
    println!(
        "switchboard {} listening on http://{addr} (socket.io path /sockethub; chat /ws and /api, store {}; engine: {}; platforms: {})",
        env!("CARGO_PKG_VERSION"),
        chat.store_name(),
        gateway.engine_name(),
        gateway.platform_names().join(", ")
    );
    tracing::info!(%addr, stages = ?gateway.stage_names(), "serving");

    switchboard_server::serve(
        listener,
        gateway.clone(),
        settings.server(),
        chat.router(),
        {
            let chat = chat.clone();
            async move {
                shutdown_signal().await;
                chat.shutdown();
            }
        },
    )
    .await?;
    // The sessions closed above record their users' `lastSeen` as they end; then the store
    // commits and closes, so the next start has nothing to recover.
    chat.close(Duration::from_secs(10)).await;
    gateway.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
