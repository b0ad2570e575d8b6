//! The worker process loop: `switchboard platform <name>` ends up here.
//!
//! Reads [`ToWorker`] frames from stdin, runs jobs on the platform (at most
//! `manifest.concurrency` at once, in arrival order), writes results, events and heartbeats
//! to stdout through one writer task. A job that finishes the moment it starts is answered
//! by the reading loop itself; only one that waits gets a task of its own. When stdin
//! closes the server is gone, so the worker shuts the platform down and exits: a worker
//! never outlives its server.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::unix::pipe;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;

use crate::frame::{self, FromWorker, ToWorker};
use crate::{Job, Platform, WorkerContext};

/// Errors that end a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("pipe to server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("server closed the pipe before sending Init")]
    NoInit,
}

/// Run platform `P` against the server on stdin/stdout until the server goes away or asks
/// the worker to stop.
pub async fn run<P: Platform>() -> Result<(), WorkerError> {
    let (stdin, stdout) = stdio_pipes()?;
    let mut input = frame::reader::<_, ToWorker>(stdin);
    let (instance, heartbeat_ms, settings) = match input.next().await {
        Some(Ok(ToWorker::Init {
            instance,
            heartbeat_ms,
            settings,
        })) => (instance, heartbeat_ms, settings),
        Some(Err(e)) => return Err(e.into()),
        _ => return Err(WorkerError::NoInit),
    };
    let manifest = P::manifest();
    let span = tracing::info_span!("worker", platform = manifest.name, %instance);
    let _enter = span.enter();

    let (out_tx, writer) = frame::spawn_writer::<_, FromWorker>(stdout, 256);
    let ctx = WorkerContext {
        instance,
        settings,
        out: out_tx.clone(),
    };
    let platform = Arc::new(P::new(ctx));
    let _ = out_tx.send(FromWorker::Ready).await;
    let heartbeat = tokio::spawn(heartbeats(
        out_tx.clone(),
        Duration::from_millis(heartbeat_ms.max(10)),
    ));

    let slots = Arc::new(Semaphore::new(manifest.concurrency.max(1)));
    let running: Arc<Mutex<HashMap<String, AbortHandle>>> = Arc::default();

    while let Some(msg) = input.next().await {
        match msg? {
            ToWorker::Job {
                id,
                session,
                activity,
                credentials,
            } => {
                let job = Job {
                    id: id.clone(),
                    session,
                    activity,
                    credentials,
                };
                // Acquired here, in arrival order, so a persistent platform (one slot) sees
                // its jobs strictly in the order the client sent them.
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    break;
                };
                let platform = platform.clone();
                let job_id = id.clone();
                let mut handling = Box::pin(async move {
                    let result = platform.handle(job).await;
                    drop(permit);
                    result_frame(job_id, result)
                });
                // Most jobs of a stateless platform (dummy's echo) finish without waiting on
                // anything: answer those here, without a task of their own. The rest go on
                // in a task, so that a slow job holds up neither reading nor cancelling.
                let first = std::future::poll_fn(|cx| Poll::Ready(handling.as_mut().poll(cx)));
                if let Poll::Ready(frame) = first.await {
                    let _ = out_tx.send(frame).await;
                    continue;
                }
                let out = out_tx.clone();
                let running_done = running.clone();
                let done_id = id.clone();
                let task = tokio::spawn(async move {
                    let frame = handling.await;
                    remove(&running_done, &done_id);
                    let _ = out.send(frame).await;
                });
                insert(&running, id, task.abort_handle());
            }
            ToWorker::Cancel { id } => {
                if let Some(handle) = remove(&running, &id) {
                    tracing::debug!(job = %id, "job cancelled by server");
                    handle.abort();
                }
            }
            ToWorker::Shutdown => break,
            ToWorker::Init { .. } => tracing::warn!("ignoring a second Init frame"),
        }
    }

    platform.shutdown().await;
    heartbeat.abort();
    drop(out_tx);
    drop(platform);
    // Results already queued still reach the server before the process exits.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    Ok(())
}

/// stdin and stdout as non-blocking pipes on the runtime's reactor. (tokio's own
/// `stdin()`/`stdout()` go through the blocking thread pool, a thread hop per read and write,
/// which would dominate a job's round trip.)
fn stdio_pipes() -> std::io::Result<(pipe::Receiver, pipe::Sender)> {
    let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
    let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
    Ok((
        pipe::Receiver::from_owned_fd(stdin)?,
        pipe::Sender::from_owned_fd(stdout)?,
    ))
}

/// The frame that answers job `id`.
fn result_frame(id: String, result: Result<Option<Value>, crate::PlatformError>) -> FromWorker {
    match result {
        Ok(result) => FromWorker::Result {
            id,
            result,
            error: None,
        },
        Err(e) => FromWorker::Result {
            id,
            result: None,
            error: Some(e.0),
        },
    }
}

fn insert(map: &Mutex<HashMap<String, AbortHandle>>, id: String, h: AbortHandle) {
    map.lock().unwrap_or_else(|p| p.into_inner()).insert(id, h);
}

fn remove(map: &Mutex<HashMap<String, AbortHandle>>, id: &str) -> Option<AbortHandle> {
    map.lock().unwrap_or_else(|p| p.into_inner()).remove(id)
}

async fn heartbeats(out: mpsc::Sender<FromWorker>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if out.send(FromWorker::Heartbeat).await.is_err() {
            return;
        }
    }
}

/// Exposed for platform tests that want a context without a process.
pub fn test_context(settings: Value) -> (WorkerContext, mpsc::Receiver<FromWorker>) {
    let (tx, rx) = mpsc::channel(64);
    (
        WorkerContext {
            instance: "test".into(),
            settings,
            out: tx,
        },
        rx,
    )
}
