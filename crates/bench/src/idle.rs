//! Idle-connection memory benchmark: opens many Socket.IO connections that
//! only answer pings, and measures how much the server's RSS grows.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

use crate::report::IdleReport;
use crate::rss;
use crate::sio::{Client, Target};

/// Connections opened concurrently per batch.
const BATCH: usize = 100;
/// Limit for one connection's handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the server gets to settle before RSS is sampled.
const SETTLE: Duration = Duration::from_secs(1);
/// File descriptors the bench needs besides its sockets.
const SPARE_FDS: u64 = 32;

/// Parameters of one idle run.
pub struct IdleParams {
    pub connections: usize,
    pub hold: Duration,
    pub pid: u32,
    pub fd_limit: Option<u64>,
}

/// Opens the connections in batches, samples RSS after settling and at the
/// end of the hold, then closes everything.
pub async fn run(target: &Target, params: &IdleParams) -> Result<IdleReport> {
    let fd_limit_note = params
        .fd_limit
        .filter(|&limit| params.connections as u64 + SPARE_FDS > limit)
        .map(|limit| {
            format!(
                "open-file limit {limit} is too low for {} connections",
                params.connections
            )
        });
    if let Some(note) = &fd_limit_note {
        eprintln!("warning: {note}");
    }

    let rss_before_kb = rss::rss_kb(params.pid)?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut holders = JoinSet::new();
    let mut failed = 0usize;
    let mut first_error = None;

    let mut remaining = params.connections;
    while remaining > 0 {
        let batch = remaining.min(BATCH);
        remaining -= batch;
        let mut pending = JoinSet::new();
        for _ in 0..batch {
            let target = target.clone();
            pending.spawn(
                async move { timeout(CONNECT_TIMEOUT, Client::connect(&target, None)).await },
            );
        }
        while let Some(joined) = pending.join_next().await {
            match joined {
                Ok(Ok(Ok(client))) => {
                    holders.spawn(hold(client, shutdown_rx.clone(), Arc::clone(&dropped)));
                }
                Ok(Ok(Err(e))) => {
                    failed += 1;
                    first_error.get_or_insert(format!("{e:#}"));
                }
                Ok(Err(_elapsed)) => {
                    failed += 1;
                    first_error.get_or_insert("connect timed out".into());
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(format!("connect task: {e}"));
                }
            }
        }
    }
    let opened = holders.len();

    let settle = SETTLE.min(params.hold);
    sleep(settle).await;
    let rss_after_kb = rss::rss_kb(params.pid)?;
    sleep(params.hold.saturating_sub(settle)).await;
    let rss_end_kb = rss::rss_kb(params.pid)?;

    let _ = shutdown.send(true);
    let all_closed = async { while holders.join_next().await.is_some() {} };
    if timeout(Duration::from_secs(10), all_closed).await.is_err() {
        holders.abort_all();
    }

    let grown_bytes = rss_after_kb.saturating_sub(rss_before_kb) as f64 * 1024.0;
    Ok(IdleReport {
        mode: "idle",
        requested: params.connections,
        connections: opened,
        failed,
        dropped: dropped.load(Ordering::Relaxed),
        hold_s: params.hold.as_secs_f64(),
        rss_before_kb,
        rss_half_kb: None,
        settle: None,
        rss_after_kb,
        rss_end_kb,
        bytes_per_conn: if opened > 0 {
            grown_bytes / opened as f64
        } else {
            0.0
        },
        fd_limit: params.fd_limit,
        note: fd_limit_note.or(first_error),
    })
}

/// Keeps one connection alive (answering pings) until shutdown.
async fn hold(mut client: Client, mut shutdown: watch::Receiver<bool>, dropped: Arc<AtomicU64>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            incoming = client.next() => match incoming {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
        }
    }
    let _ = timeout(Duration::from_secs(2), client.close()).await;
}
