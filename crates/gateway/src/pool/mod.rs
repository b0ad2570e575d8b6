//! The pool of platform instances.
//!
//! An *instance* is one platform worker process and the queue that feeds it. Stateless
//! platforms (dummy, feeds) have one shared instance each; persistent ones (irc, xmpp) have
//! one per (platform, actor, credential scope), so sessions presenting the same secret
//! credentials share a connection and anonymous sessions never do. The pool creates
//! instances on demand, enforces the cap, stops idle ones, and stops all at shutdown.

mod instance;
mod process;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_engine::Engine;
use switchboard_protocol::Manifest;

use crate::config::GatewayConfig;
use crate::keys::Keys;
use crate::wire::JobEnvelope;
pub(crate) use instance::Instance;

/// Where a job goes: the instance key and the platform's manifest.
pub(crate) struct Target {
    pub key: String,
    pub manifest: Arc<Manifest>,
    /// The actor a persistent instance acts for (names it in fatal errors).
    pub actor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    #[error("platform instance limit reached ({max}); cannot start new {platform} instance")]
    Limit { max: usize, platform: String },
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("failed to add job to queue")]
    Queue,
}

pub(crate) struct PoolShared {
    pub config: Arc<GatewayConfig>,
    pub engine: Engine,
    pub keys: Keys,
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    closing: AtomicBool,
}

#[derive(Clone)]
pub(crate) struct Pool {
    shared: Arc<PoolShared>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PoolShared {
    /// Forget `inst` under whatever key it is registered (a re-keyed instance has moved).
    pub(crate) fn forget(&self, inst: &Arc<Instance>) {
        lock(&self.instances).retain(|_, cur| !Arc::ptr_eq(cur, inst));
    }

    /// Register `inst` under `keys` instead of its current ones: its connection now acts
    /// as another actor (see [`FromWorker::Rekey`](switchboard_platform::frame::FromWorker)).
    pub(crate) fn rekey(&self, inst: &Arc<Instance>, keys: Vec<String>) {
        let mut map = lock(&self.instances);
        map.retain(|_, cur| !Arc::ptr_eq(cur, inst));
        for key in keys {
            map.insert(key, inst.clone());
        }
    }
}

impl Pool {
    pub fn new(config: Arc<GatewayConfig>, engine: Engine, keys: Keys) -> Self {
        let shared = Arc::new(PoolShared {
            config,
            engine,
            keys,
            instances: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
        });
        tokio::spawn(reap(Arc::downgrade(&shared)));
        Pool { shared }
    }

    /// Queue `job` for the instance `target` names, starting the instance if needed.
    pub async fn submit(&self, target: &Target, job: &JobEnvelope) -> Result<(), SubmitError> {
        let inst = {
            let mut map = lock(&self.shared.instances);
            if self.shared.closing.load(Ordering::Acquire) {
                return Err(SubmitError::ShuttingDown);
            }
            match map.get(&target.key) {
                Some(inst) if !inst.is_stopping() => inst.clone(),
                _ => {
                    let live = map.values().filter(|i| !i.is_stopping()).count();
                    if live >= self.shared.config.max_instances {
                        return Err(SubmitError::Limit {
                            max: self.shared.config.max_instances,
                            platform: target.manifest.name.to_owned(),
                        });
                    }
                    let inst = Instance::start(target, self.shared.clone());
                    map.insert(target.key.clone(), inst.clone());
                    inst
                }
            }
        };
        if target.manifest.persist {
            inst.attach(&job.session);
        }
        inst.touch();
        let sealed = self.shared.keys.seal_job(job);
        self.shared
            .engine
            .queue
            .push(inst.queue_name(), &job.id, sealed)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, job = %job.id, "queue push failed");
                SubmitError::Queue
            })
    }

    /// Serve `target`'s queue until shutdown, idle or not (a remote worker node).
    pub fn pin(&self, target: &Target) -> Result<(), SubmitError> {
        let mut map = lock(&self.shared.instances);
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let inst = Instance::start(target, self.shared.clone());
        inst.pin();
        map.insert(target.key.clone(), inst);
        Ok(())
    }

    /// The requester gave up on `job_id`: stop the worker's work on it.
    pub fn cancel(&self, key: &str, job_id: &str) {
        if let Some(inst) = lock(&self.shared.instances).get(key) {
            inst.cancel(job_id);
        }
    }

    /// A session ended: it no longer receives any instance's events.
    pub fn detach(&self, session: &str) {
        for inst in lock(&self.shared.instances).values() {
            inst.detach(session);
        }
    }

    /// Live instances (worker processes running or ready to start).
    pub fn len(&self) -> usize {
        lock(&self.shared.instances).len()
    }

    /// Stop every instance and wait (bounded) for their processes to exit.
    pub async fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::Release);
        let all: Vec<Arc<Instance>> = lock(&self.shared.instances)
            .drain()
            .map(|(_, i)| i)
            .collect();
        for inst in &all {
            inst.stop();
        }
        for inst in all {
            inst.stopped(Duration::from_secs(5)).await;
        }
    }
}

/// Stop instances that have been idle longer than the configured timeout.
async fn reap(shared: std::sync::Weak<PoolShared>) {
    let period = {
        let Some(s) = shared.upgrade() else { return };
        (s.config.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    };
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        let idle: Vec<Arc<Instance>> = lock(&s.instances)
            .values()
            .filter(|i| i.is_idle(s.config.idle_timeout))
            .cloned()
            .collect();
        for inst in idle {
            tracing::info!(instance = %inst.key, "stopping idle platform instance");
            inst.stop();
            s.forget(&inst);
        }
    }
}
