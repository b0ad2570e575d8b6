//! The pool of platform instances.
//!
//! An *instance* is one platform worker process and the queue that feeds it. Stateless
//! platforms (dummy, feeds) have one shared instance each; persistent ones (irc, xmpp) have
//! one per (platform, actor, credential scope), so sessions presenting the same secret
//! credentials share a connection and anonymous sessions never do. The pool creates
//! instances on demand, enforces the cap, stops idle ones, and stops all at shutdown.
//!
//! A persistent instance is one per key for the whole cluster, not per node: its key is a
//! [`Leases`](switchboard_engine::Leases) name whose holder is `"<node> <queue>"`. The node
//! that takes the lease runs the worker and renews the lease every third of its TTL. A node
//! that finds the lease held keeps a [`Remote`] instead: it pushes its sessions' jobs on the
//! owner's queue (whose replies come back on each session's own channel, as on one node)
//! and hands what the owner publishes on `instance:{queue}` (incoming traffic, results
//! shown to the other sessions, fatal errors) to its sessions. While it has sessions
//! attached it refreshes a `<key>:used` mark, so the owner never reaps an instance a session
//! elsewhere still uses. If the owner dies its lease expires; the remote nodes notice on
//! their next heartbeat, tell their sessions (as a crashed worker's sessions are told) and
//! answer the jobs left in its queue, and the next job for the key, from any node, starts
//! the instance there.
//!
//! Credentials cross nodes only inside jobs, which are sealed (AES-256-GCM, the cluster's
//! shared secret): each job carries its session's credentials, so the owner's worker
//! connects with the credentials of whichever session's job started it, exactly as on one
//! node. Nothing is stored for the owner in plaintext, and sessions' own credential
//! stores stay sealed with their own keys.

mod instance;
mod process;
mod remote;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_engine::Engine;
use switchboard_engine::seal::random_id;
use switchboard_protocol::Manifest;

use crate::config::GatewayConfig;
use crate::keys::Keys;
use crate::wire::{BusMsg, JobEnvelope, session_channel};
pub(crate) use instance::Instance;
use remote::Remote;

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
    #[error("cannot reach the cluster to find the {platform} platform instance")]
    Cluster { platform: String },
}

/// The holder string every node with sessions on a remote instance refreshes its
/// `<key>:used` mark with (one shared holder, so any of them keeps the mark alive).
const IN_USE: &str = "in-use";

/// The lease name that says sessions somewhere still use instance `key`.
fn used_mark(key: &str) -> String {
    format!("{key}:used")
}

pub(crate) struct PoolShared {
    pub config: Arc<GatewayConfig>,
    pub engine: Engine,
    pub keys: Keys,
    /// This node's name in lease holders (random per start).
    pub node: String,
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    /// Persistent instances another node runs, by key, for this node's sessions.
    remotes: Mutex<HashMap<String, Arc<Remote>>>,
    /// One placement (lease look-up, start or follow) at a time on this node: it is rare,
    /// and two sessions arriving together for one key must not both start it.
    placing: tokio::sync::Mutex<()>,
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

    fn forget_remote(&self, remote: &Arc<Remote>) {
        lock(&self.remotes).retain(|_, cur| !Arc::ptr_eq(cur, remote));
    }

    fn rekey_remote(&self, remote: &Arc<Remote>, keys: Vec<String>) {
        let mut map = lock(&self.remotes);
        map.retain(|_, cur| !Arc::ptr_eq(cur, remote));
        for key in keys {
            map.insert(key, remote.clone());
        }
    }

    /// Publish `msg` on `session`'s channel, sealed for it.
    pub(crate) async fn publish(&self, session: &str, msg: &BusMsg) {
        let sealed = self.keys.seal_bus(session, msg);
        if let Err(e) = self
            .engine
            .broker
            .publish(&session_channel(session), sealed)
            .await
        {
            tracing::error!(error = %e, %session, "cannot publish to session");
        }
    }
}

impl Pool {
    pub fn new(config: Arc<GatewayConfig>, engine: Engine, keys: Keys) -> Self {
        let shared = Arc::new(PoolShared {
            config,
            engine,
            keys,
            node: random_id::<6>(),
            instances: Mutex::new(HashMap::new()),
            remotes: Mutex::new(HashMap::new()),
            placing: tokio::sync::Mutex::new(()),
            closing: AtomicBool::new(false),
        });
        tokio::spawn(reap(Arc::downgrade(&shared)));
        tokio::spawn(heartbeat(Arc::downgrade(&shared)));
        Pool { shared }
    }

    /// Queue `job` for the instance `target` names, starting the instance if needed.
    pub async fn submit(&self, target: &Target, job: &JobEnvelope) -> Result<(), SubmitError> {
        let queue = match self.route(target, &job.session)? {
            Some(queue) => queue,
            None => self.place(target, &job.session).await?,
        };
        let sealed = self.shared.keys.seal_job(job);
        self.shared
            .engine
            .queue
            .push(&queue, &job.id, sealed)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, job = %job.id, "queue push failed");
                SubmitError::Queue
            })
    }

    /// The queue of the live instance serving `target` (attaching `session` to it), from
    /// what this node already knows: its own instances, persistent instances it follows on
    /// other nodes, and stateless instances, which it starts right here. `None`: a
    /// persistent instance this node has not placed yet.
    fn route(&self, target: &Target, session: &str) -> Result<Option<String>, SubmitError> {
        let persist = target.manifest.persist;
        {
            let mut map = lock(&self.shared.instances);
            if self.shared.closing.load(Ordering::Acquire) {
                return Err(SubmitError::ShuttingDown);
            }
            match map.get(&target.key) {
                Some(inst) if !inst.is_stopping() => {
                    if persist {
                        inst.attach(session);
                    }
                    inst.touch();
                    return Ok(Some(inst.queue_name().to_owned()));
                }
                _ if !persist => {
                    self.check_cap(&map, target)?;
                    let inst = Instance::start(target, self.shared.clone(), None);
                    map.insert(target.key.clone(), inst.clone());
                    return Ok(Some(inst.queue_name().to_owned()));
                }
                _ => {}
            }
        }
        Ok(lock(&self.shared.remotes).get(&target.key).map(|r| {
            r.attach(session);
            r.queue.clone()
        }))
    }

    fn check_cap(
        &self,
        map: &HashMap<String, Arc<Instance>>,
        target: &Target,
    ) -> Result<(), SubmitError> {
        let live = map.values().filter(|i| !i.is_stopping()).count();
        if live >= self.shared.config.max_instances {
            return Err(SubmitError::Limit {
                max: self.shared.config.max_instances,
                platform: target.manifest.name.to_owned(),
            });
        }
        Ok(())
    }

    /// Find or start the cluster's one instance for persistent `target`: take its lease and
    /// start it here, or follow the node that holds it. Returns the instance's queue.
    async fn place(&self, target: &Target, session: &str) -> Result<String, SubmitError> {
        let _turn = self.shared.placing.lock().await;
        if let Some(queue) = self.route(target, session)? {
            return Ok(queue);
        }
        self.check_cap(&lock(&self.shared.instances), target)?;
        let s = &self.shared;
        let cluster = |e: switchboard_engine::EngineError| {
            tracing::error!(error = %e, instance = %target.key, "cannot place platform instance");
            SubmitError::Cluster {
                platform: target.manifest.name.to_owned(),
            }
        };
        let queue = instance::unique_queue(&target.key);
        let holder = format!("{} {queue}", s.node);
        let leases = &s.engine.leases;
        let mut held = leases
            .acquire(&target.key, &holder, s.config.lease_ttl)
            .await
            .map_err(cluster)?;
        if held != holder && held.split(' ').next() == Some(s.node.as_str()) {
            // A lease of this node's own that outlived its instance (its release failed):
            // this node knows it is not running, so take it back now rather than wait.
            leases.release(&target.key, &held).await.map_err(cluster)?;
            held = leases
                .acquire(&target.key, &holder, s.config.lease_ttl)
                .await
                .map_err(cluster)?;
        }
        if held == holder {
            let started = {
                let mut map = lock(&s.instances);
                (!s.closing.load(Ordering::Acquire)).then(|| {
                    let inst = Instance::start(target, s.clone(), Some((queue, holder.clone())));
                    map.insert(target.key.clone(), inst.clone());
                    inst
                })
            };
            let Some(inst) = started else {
                let _ = leases.release(&target.key, &holder).await;
                return Err(SubmitError::ShuttingDown);
            };
            inst.attach(session);
            inst.touch();
            return Ok(inst.queue_name().to_owned());
        }
        let remote = Remote::follow(s, target, held).await.map_err(cluster)?;
        remote.attach(session);
        lock(&s.remotes).insert(target.key.clone(), remote.clone());
        if let Err(e) = leases
            .acquire(&used_mark(&target.key), IN_USE, s.config.lease_ttl)
            .await
        {
            tracing::warn!(error = %e, "cannot mark a remote instance used");
        }
        tracing::info!(instance = %target.key, owner = %remote.holder, "following a platform instance on another node");
        Ok(remote.queue.clone())
    }

    /// Serve `target`'s queue until shutdown, idle or not (a remote worker node).
    pub fn pin(&self, target: &Target) -> Result<(), SubmitError> {
        let mut map = lock(&self.shared.instances);
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(SubmitError::ShuttingDown);
        }
        let inst = Instance::start(target, self.shared.clone(), None);
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
        // A remote instance nobody here uses any more is let go; its `used` mark expires.
        lock(&self.shared.remotes).retain(|_, r| {
            r.detach(session);
            !r.is_unused()
        });
    }

    /// Live instances (worker processes running or ready to start).
    pub fn len(&self) -> usize {
        lock(&self.shared.instances).len()
    }

    /// Stop every instance and wait (bounded) for their processes to exit.
    pub async fn shutdown(&self) {
        self.shared.closing.store(true, Ordering::Release);
        lock(&self.shared.remotes).clear();
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

/// Stop instances that have been idle longer than the configured timeout (and, for a
/// shared persistent one, that no other node's session still uses).
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
            if inst.is_leased() && s.engine.distributed && used_elsewhere(&s, &inst).await {
                inst.touch();
                continue;
            }
            tracing::info!(instance = %inst.key, "stopping idle platform instance");
            inst.stop();
            s.forget(&inst);
        }
    }
}

/// Whether a session on another node still uses `inst` (or the cluster cannot say).
async fn used_elsewhere(s: &PoolShared, inst: &Arc<Instance>) -> bool {
    for key in inst.leased_keys() {
        match s.engine.leases.holder(&used_mark(&key)).await {
            Ok(None) => {}
            Ok(Some(_)) => return true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether an idle instance is used elsewhere; keeping it");
                return true;
            }
        }
    }
    false
}

/// Every third of the lease TTL: renew the leases of the persistent instances this node
/// runs (stopping one whose lease another node has taken: two logins must not coexist),
/// and check on the owners of the instances this node's sessions use elsewhere (telling
/// the sessions when an owner is gone) while keeping those instances marked used.
async fn heartbeat(shared: std::sync::Weak<PoolShared>) {
    let (ttl, period) = {
        let Some(s) = shared.upgrade() else { return };
        let ttl = s.config.lease_ttl;
        (ttl, (ttl / 3).max(Duration::from_millis(10)))
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        let leases = &s.engine.leases;
        let owned: Vec<(String, Arc<Instance>)> = lock(&s.instances)
            .iter()
            .filter(|(_, i)| i.is_leased() && !i.is_stopping())
            .map(|(k, i)| (k.clone(), i.clone()))
            .collect();
        for (key, inst) in owned {
            let Some(holder) = inst.holder() else {
                continue;
            };
            let kept = match leases.renew(&key, holder, ttl).await {
                Ok(true) => Ok(true),
                // Expired (Redis lost it, or this node stalled): take it again if free.
                Ok(false) => leases.acquire(&key, holder, ttl).await.map(|h| h == holder),
                Err(e) => Err(e),
            };
            match kept {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(instance = %key, "another node took over this platform instance; stopping it here");
                    inst.lose(format!(
                        "{} platform instance moved to another node",
                        inst.platform()
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, instance = %key, "cannot renew instance lease")
                }
            }
        }
        let followed: Vec<(String, Arc<Remote>)> = lock(&s.remotes)
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        for (key, remote) in followed {
            match leases.holder(&key).await {
                Ok(Some(h)) if h == remote.holder => {
                    if let Err(e) = leases.acquire(&used_mark(&key), IN_USE, ttl).await {
                        tracing::warn!(error = %e, "cannot mark a remote instance used");
                    }
                }
                Ok(_) => {
                    tracing::warn!(instance = %key, owner = %remote.holder, "the node running this platform instance is gone");
                    s.forget_remote(&remote);
                    remote.lost(&s).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, instance = %key, "cannot check instance owner")
                }
            }
        }
    }
}
