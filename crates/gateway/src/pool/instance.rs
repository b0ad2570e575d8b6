//! One platform instance: its queue, its worker process, and the sessions it serves.
//!
//! The instance task takes jobs from the queue (at most `concurrency` in flight), starts
//! the worker process when there is work and none is running, writes jobs to it, and turns
//! what comes back into sealed replies on each session's channel. It watches heartbeats and
//! kills a silent worker. When a worker dies, every job it held is answered with the
//! reason; a stateless instance starts a fresh process for the next job, a persistent one
//! (whose connection died with it) ends and tells its sessions.
//!
//! A persistent instance holds its key's cluster-wide lease (see [`super`]); on a
//! distributed engine whatever it shows all its sessions also goes, once, on its
//! `instance:{queue}` channel for the sessions attached on other nodes.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard_engine::Delivery;
use switchboard_engine::seal::random_id;
use switchboard_platform::frame::{FromWorker, ToWorker};
use switchboard_protocol::{Manifest, context, error_reply};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::process::{Process, exit_text};
use super::{PoolShared, Target, lock};
use crate::wire::{BusMsg, InstanceMsg, JobEnvelope, instance_channel};

/// A job written to the worker and not yet answered.
struct InFlight {
    tag: u64,
    session: String,
    activity: Value,
}

enum Control {
    Cancel(String),
    Stop,
    /// Stop and tell every attached session why (the instance cannot go on here).
    Lost(String),
}

/// A queue name unique to one instance lifetime of `key`.
pub(crate) fn unique_queue(key: &str) -> String {
    format!("{key}/{}", random_id::<4>())
}

/// The `error` activity every attached session gets when the instance fails.
pub(crate) fn error_activity(platform: &str, actor: Option<String>, error: &str) -> Value {
    json!({
        "@context": context::canonical(platform),
        "type": "error",
        "actor": {"id": actor.unwrap_or_else(|| platform.to_owned()), "type": "service"},
        "error": error,
    })
}

pub(crate) struct Instance {
    pub key: String,
    /// Unique per instance lifetime, so a successor with the same key never shares jobs
    /// with a predecessor that is shutting down; except a stateless platform's on a
    /// distributed engine, which is the instance key itself: one queue that every node's
    /// instance of the platform serves.
    queue: String,
    shared_queue: bool,
    /// A persistent instance's lease holder string (`"<node> <queue>"`).
    lease: Option<String>,
    /// The keys it holds the lease of (its own; more or others after a re-key), kept here
    /// so teardown releases them even after the pool has forgotten the instance.
    leased: Mutex<Vec<String>>,
    /// Where it shows its sessions on other nodes what it shows all its sessions (a
    /// persistent instance on a distributed engine).
    channel: Option<String>,
    /// Its sessions were told why it ended (so teardown does not tell them again).
    told: AtomicBool,
    manifest: Arc<Manifest>,
    actor: Mutex<Option<String>>,
    sessions: Mutex<HashSet<String>>,
    last_active: Mutex<Instant>,
    inflight: Mutex<HashMap<String, InFlight>>,
    control: mpsc::UnboundedSender<Control>,
    stopping: AtomicBool,
    /// Serves its platform until shutdown, however idle (a remote worker node's instance).
    pinned: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Instance {
    /// Start the instance for `target`; a persistent one with the `(queue, holder)` of the
    /// lease this node took for it.
    pub fn start(
        target: &Target,
        shared: Arc<PoolShared>,
        lease: Option<(String, String)>,
    ) -> Arc<Self> {
        let (control, control_rx) = mpsc::unbounded_channel();
        let shared_queue = shared.engine.distributed && !target.manifest.persist;
        let (queue, lease) = match lease {
            Some((queue, holder)) => (queue, Some(holder)),
            None if shared_queue => (target.key.clone(), None),
            None => (unique_queue(&target.key), None),
        };
        let channel =
            (shared.engine.distributed && lease.is_some()).then(|| instance_channel(&queue));
        let inst = Arc::new(Instance {
            key: target.key.clone(),
            queue,
            shared_queue,
            leased: Mutex::new(if lease.is_some() {
                vec![target.key.clone()]
            } else {
                Vec::new()
            }),
            lease,
            channel,
            told: AtomicBool::new(false),
            manifest: target.manifest.clone(),
            actor: Mutex::new(target.actor.clone()),
            sessions: Mutex::default(),
            last_active: Mutex::new(Instant::now()),
            inflight: Mutex::default(),
            control,
            stopping: AtomicBool::new(false),
            pinned: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        let span = tracing::info_span!("instance", key = %inst.key);
        let task = tokio::spawn(run(inst.clone(), shared, control_rx).instrument(span));
        *lock(&inst.task) = Some(task);
        inst
    }

    pub fn queue_name(&self) -> &str {
        &self.queue
    }

    pub fn platform(&self) -> &'static str {
        self.manifest.name
    }

    /// Holds a cluster-wide lease (a persistent instance).
    pub fn is_leased(&self) -> bool {
        self.lease.is_some()
    }

    pub fn holder(&self) -> Option<&str> {
        self.lease.as_deref()
    }

    pub fn leased_keys(&self) -> Vec<String> {
        lock(&self.leased).clone()
    }

    /// Stop, telling every attached session `error`.
    pub fn lose(&self, error: String) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.control.send(Control::Lost(error));
    }

    pub fn attach(&self, session: &str) {
        lock(&self.sessions).insert(session.to_owned());
    }

    pub fn detach(&self, session: &str) {
        lock(&self.sessions).remove(session);
    }

    pub fn touch(&self) {
        *lock(&self.last_active) = Instant::now();
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    pub fn pin(&self) {
        self.pinned.store(true, Ordering::Release);
    }

    /// No work in flight, nobody attached (persistent) and untouched for `timeout`.
    pub fn is_idle(&self, timeout: Duration) -> bool {
        !self.is_stopping()
            && !self.pinned.load(Ordering::Acquire)
            && lock(&self.inflight).is_empty()
            && (!self.manifest.persist || lock(&self.sessions).is_empty())
            && lock(&self.last_active).elapsed() > timeout
    }

    pub fn cancel(&self, job_id: &str) {
        let _ = self.control.send(Control::Cancel(job_id.to_owned()));
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.control.send(Control::Stop);
    }

    /// Wait up to `timeout` for the instance task (and so its process) to finish.
    pub async fn stopped(&self, timeout: Duration) {
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(timeout, task).await;
        }
    }

    fn sessions(&self) -> Vec<String> {
        lock(&self.sessions).iter().cloned().collect()
    }
}

/// Everything the instance task works with.
struct Ctx {
    inst: Arc<Instance>,
    shared: Arc<PoolShared>,
}

impl Ctx {
    fn platform(&self) -> &'static str {
        self.inst.manifest.name
    }

    async fn publish(&self, session: &str, msg: &BusMsg) {
        self.shared.publish(session, msg).await;
    }

    /// Show `msg` to the instance's sessions on other nodes (if it has a channel).
    async fn to_remotes(&self, msg: &InstanceMsg) {
        let Some(channel) = &self.inst.channel else {
            return;
        };
        let sealed = self.shared.keys.seal_instance(channel, msg);
        if let Err(e) = self.shared.engine.broker.publish(channel, sealed).await {
            tracing::error!(error = %e, "cannot publish to the instance's remote sessions");
        }
    }

    async fn ack(&self, tag: u64) {
        if let Err(e) = self.shared.engine.queue.ack(&self.inst.queue, tag).await {
            tracing::warn!(error = %e, "ack failed");
        }
    }

    /// The reply a client sees for a finished job, `@context` re-stamped.
    fn reply(&self, activity: &Value, result: Option<Value>, error: Option<String>) -> Value {
        let mut reply = match (error, result) {
            (Some(e), _) => error_reply(activity, &e),
            (None, Some(v)) if v.is_object() => v,
            _ => activity.clone(),
        };
        context::stamp(&mut reply, self.platform());
        reply
    }

    /// Answer one job to its requester, and (persistent platforms) show the result to the
    /// other sessions sharing the connection.
    async fn answer(&self, job: &str, session: &str, reply: Value) {
        self.inst.touch();
        if self.inst.manifest.persist {
            for other in self.inst.sessions() {
                if other != session {
                    let push = BusMsg::Push {
                        activity: reply.clone(),
                    };
                    self.publish(&other, &push).await;
                }
            }
            let push = InstanceMsg::Push {
                activity: reply.clone(),
                except: Some(session.to_owned()),
            };
            self.to_remotes(&push).await;
        }
        let msg = BusMsg::Result {
            job: job.to_owned(),
            reply,
        };
        self.publish(session, &msg).await;
    }

    /// Answer every job in flight with `error` (its worker is gone).
    async fn fail_inflight(&self, error: &str) {
        let jobs: Vec<(String, InFlight)> = lock(&self.inst.inflight).drain().collect();
        for (id, f) in jobs {
            tracing::warn!(job = %id, %error, "job failed with its worker");
            self.ack(f.tag).await;
            let reply = self.reply(&f.activity, None, Some(error.to_owned()));
            self.answer(&id, &f.session, reply).await;
        }
    }

    /// Tell every attached session that the instance hit a fatal error.
    async fn broadcast_error(&self, error: &str) {
        self.inst.told.store(true, Ordering::Release);
        let actor = lock(&self.inst.actor).clone();
        let activity = error_activity(self.platform(), actor, error);
        for session in self.inst.sessions() {
            let push = BusMsg::Push {
                activity: activity.clone(),
            };
            self.publish(&session, &push).await;
        }
        let push = InstanceMsg::Push {
            activity,
            except: None,
        };
        self.to_remotes(&push).await;
    }

    async fn on_frame(
        &self,
        frame: FromWorker,
        last_beat: &mut Instant,
        fatal: &mut Option<String>,
    ) {
        match frame {
            FromWorker::Ready | FromWorker::Heartbeat => *last_beat = Instant::now(),
            FromWorker::Result { id, result, error } => {
                *last_beat = Instant::now();
                let Some(f) = lock(&self.inst.inflight).remove(&id) else {
                    tracing::debug!(job = %id, "result for a job no longer waited on");
                    return;
                };
                let reply = self.reply(&f.activity, result, error);
                tracing::debug!(job = %id, session = %f.session, "job answered");
                // Ack and answer together: a networked engine sends both on one connection,
                // in this order, for one round trip instead of two on this task's hot path.
                tokio::join!(self.ack(f.tag), self.answer(&id, &f.session, reply));
            }
            FromWorker::Event {
                mut activity,
                session,
            } => {
                context::stamp(&mut activity, self.platform());
                let targets = match &session {
                    Some(s) => vec![s.clone()],
                    None => self.inst.sessions(),
                };
                for s in targets {
                    let push = BusMsg::Push {
                        activity: activity.clone(),
                    };
                    self.publish(&s, &push).await;
                }
                if session.is_none() {
                    let push = InstanceMsg::Push {
                        activity,
                        except: None,
                    };
                    self.to_remotes(&push).await;
                }
            }
            FromWorker::Rekey { actor, credentials } if self.inst.manifest.persist => {
                tracing::info!("platform instance re-keyed to a new actor");
                // The sessions here, and the requester of the job that did it wherever it
                // is: told directly, before its reply, so its next request as the new actor
                // finds its credentials (a remote node's copy via the channel comes later).
                let mut sessions = self.inst.sessions();
                let requesters: Vec<String> = lock(&self.inst.inflight)
                    .values()
                    .map(|f| f.session.clone())
                    .collect();
                for r in requesters {
                    if !sessions.contains(&r) {
                        sessions.push(r);
                    }
                }
                let keys = &self.shared.keys;
                let mut new_keys: Vec<String> = sessions
                    .iter()
                    .map(|s| keys.instance(self.platform(), &actor, s, Some(&credentials)))
                    .collect();
                if self.inst.channel.is_some() {
                    // Sessions on other nodes reach it by the key of the credentials alone
                    // (they hold a secret, or the connection would not be shared).
                    new_keys.push(keys.instance(self.platform(), &actor, "", Some(&credentials)));
                }
                new_keys.sort();
                new_keys.dedup();
                let new_keys = self.lease_keys(new_keys).await;
                // With nobody attached there is no new key to reach it by; it stays
                // registered (and so reaped when idle) under the old one.
                if !new_keys.is_empty() {
                    self.shared.rekey(&self.inst, new_keys);
                }
                *lock(&self.inst.actor) = Some(actor.clone());
                let rekey = InstanceMsg::Rekey {
                    actor: actor.clone(),
                    credentials: credentials.clone(),
                };
                self.to_remotes(&rekey).await;
                for session in sessions {
                    let msg = BusMsg::Rekey {
                        platform: self.platform().to_owned(),
                        actor: actor.clone(),
                        credentials: credentials.clone(),
                    };
                    self.publish(&session, &msg).await;
                }
            }
            FromWorker::Rekey { .. } => tracing::warn!("ignoring a re-key from a stateless worker"),
            FromWorker::Fatal { error } => {
                tracing::error!(%error, "worker reported a fatal error");
                self.broadcast_error(&error).await;
                *fatal = Some(error);
            }
        }
    }

    /// Take the leases of the keys a re-keyed instance moves to, and give up the old ones;
    /// returns the new keys it now holds (one another instance holds stays that one's).
    async fn lease_keys(&self, new_keys: Vec<String>) -> Vec<String> {
        let Some(holder) = self.inst.holder() else {
            return new_keys;
        };
        let leases = &self.shared.engine.leases;
        let ttl = self.shared.config.lease_ttl;
        let mut held = Vec::with_capacity(new_keys.len());
        for key in new_keys {
            match leases.acquire(&key, holder, ttl).await {
                Ok(h) if h == holder => held.push(key),
                Ok(_) => {
                    tracing::warn!(instance = %key, "re-keyed onto a key another instance holds")
                }
                Err(e) => tracing::warn!(error = %e, instance = %key, "cannot lease the new key"),
            }
        }
        if !held.is_empty() {
            let old = std::mem::replace(&mut *lock(&self.inst.leased), held.clone());
            for key in old {
                if !held.contains(&key) {
                    let _ = leases.release(&key, holder).await;
                }
            }
        }
        held
    }

    /// Give up the cluster-wide leases on every key this instance is registered under.
    async fn release_leases(&self) {
        let Some(holder) = self.inst.holder() else {
            return;
        };
        let keys = std::mem::take(&mut *lock(&self.inst.leased));
        for key in keys {
            if let Err(e) = self.shared.engine.leases.release(&key, holder).await {
                // It expires by itself; until then another node would follow a dead queue.
                tracing::warn!(error = %e, instance = %key, "cannot release instance lease");
            }
        }
    }

    /// Answer a job that never reached a worker.
    async fn refuse(&self, d: &Delivery, job: &JobEnvelope, error: &str) {
        self.ack(d.tag).await;
        let reply = self.reply(&job.activity, None, Some(error.to_owned()));
        self.answer(&job.id, &job.session, reply).await;
    }
}

/// The next frame from the worker, or never when there is none.
async fn next_frame(proc: &mut Option<Process>) -> Option<std::io::Result<FromWorker>> {
    match proc {
        Some(p) => p.frames.next().await,
        None => std::future::pending().await,
    }
}

async fn run(
    inst: Arc<Instance>,
    shared: Arc<PoolShared>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let cx = Ctx {
        inst: inst.clone(),
        shared: shared.clone(),
    };
    let config = shared.config.clone();
    let queue = shared.engine.queue.clone();
    let window = inst.manifest.concurrency.max(1);
    let mut proc: Option<Process> = None;
    let mut last_beat = Instant::now();
    let mut fatal: Option<String> = None;
    let mut watchdog = tokio::time::interval(config.heartbeat_interval);
    tracing::info!(platform = cx.platform(), "platform instance started");

    // One task does it all (queue, worker pipe, control, heartbeats): every hand-off
    // between tasks costs a wake-up, and this loop is on every request's path.
    loop {
        let room = lock(&inst.inflight).len() < window;
        tokio::select! {
            reserved = queue.reserve(&inst.queue, Duration::from_secs(5)), if room => {
                let delivery = match reserved {
                    Ok(Some(d)) => d,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "job queue unavailable; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let job = match shared.keys.open_job(&delivery.job_id, &delivery.payload) {
                    Ok(job) => job,
                    Err(e) => {
                        // Sealed under another key (a node with a different secret): nobody
                        // here can answer it, so it goes to the dead letters, not round again.
                        tracing::error!(job = %delivery.job_id, error = %e, "cannot open job");
                        let _ = queue.nack(&inst.queue, delivery.tag).await;
                        continue;
                    }
                };
                if proc.is_none() {
                    let init = ToWorker::Init {
                        instance: inst.key.clone(),
                        heartbeat_ms: config.heartbeat_interval.as_millis() as u64,
                        settings: config.worker_settings.clone(),
                    };
                    match Process::spawn(&config.worker_command, cx.platform(), init) {
                        Ok(p) => {
                            tracing::info!(pid = p.pid, "worker process started");
                            last_beat = Instant::now();
                            fatal = None;
                            proc = Some(p);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start worker process");
                            cx.refuse(&delivery, &job, &format!("failed to start {} platform worker", cx.platform())).await;
                            if inst.manifest.persist { break; }
                            continue;
                        }
                    }
                }
                let Some(p) = proc.as_ref() else { continue };
                tracing::debug!(job = %job.id, session = %job.session, "job sent to worker");
                lock(&inst.inflight).insert(job.id.clone(), InFlight {
                    tag: delivery.tag,
                    session: job.session.clone(),
                    activity: job.activity.clone(),
                });
                // If the worker is dying the send fails; its exit answers the job.
                let _ = p.input.send(ToWorker::Job {
                    id: job.id,
                    session: job.session,
                    activity: job.activity,
                    credentials: job.credentials,
                }).await;
            }
            item = next_frame(&mut proc) => match item {
                Some(Ok(frame)) => {
                    let was_fatal = matches!(frame, FromWorker::Fatal { .. });
                    cx.on_frame(frame, &mut last_beat, &mut fatal).await;
                    if was_fatal && let Some(p) = proc.as_mut() { p.kill(); }
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "bad frame from worker; killing it");
                    if let Some(p) = proc.as_mut() { p.kill(); }
                }
                None => {
                    // The worker closed its end: it is exiting (or was killed).
                    let Some(mut p) = proc.take() else { continue };
                    // A worker that reported a fatal error already told the sessions why.
                    let reported = fatal.take();
                    let text = match p.exit(Duration::from_secs(2)).await {
                        Ok(status) => {
                            tracing::warn!(%status, "worker process exited");
                            reported.clone().unwrap_or_else(|| exit_text(&status))
                        }
                        Err(e) => format!("Error: session thread closed unexpectedly: {e}"),
                    };
                    cx.fail_inflight(&text).await;
                    if inst.manifest.persist {
                        if reported.is_none() {
                            cx.broadcast_error(&text).await;
                        }
                        break;
                    }
                }
            },
            Some(control) = control.recv() => match control {
                Control::Cancel(id) => {
                    let gone = lock(&inst.inflight).remove(&id);
                    if let Some(f) = gone {
                        cx.ack(f.tag).await;
                        if let Some(p) = proc.as_ref() {
                            let _ = p.input.try_send(ToWorker::Cancel { id });
                        }
                    }
                }
                Control::Stop => break,
                Control::Lost(error) => {
                    cx.broadcast_error(&error).await;
                    break;
                }
            },
            _ = watchdog.tick() => {
                if let Some(p) = proc.as_mut()
                    && last_beat.elapsed() > config.heartbeat_timeout
                {
                    tracing::warn!(pid = p.pid, "worker missed its heartbeats; killing it");
                    p.kill();
                }
            }
        }
    }

    // Teardown: no new jobs, the lease given up (a successor may start at once: it gets a
    // queue of its own), the worker asked to stop (then killed), everyone answered.
    inst.stopping.store(true, Ordering::Release);
    cx.release_leases().await;
    shared.forget(&inst);
    if let Some(mut p) = proc.take() {
        let _ = p.input.try_send(ToWorker::Shutdown);
        if let Err(e) = p.exit(Duration::from_secs(2)).await {
            tracing::warn!(error = %e, "cannot reap worker");
        }
    }
    cx.fail_inflight(&format!("{} platform instance stopped", cx.platform()))
        .await;
    if inst.shared_queue {
        // Other nodes (or this node's next instance) serve what is still queued.
        if let Err(e) = queue.release(&inst.queue).await {
            tracing::warn!(error = %e, "cannot release the shared queue");
        }
        tracing::info!("platform instance stopped");
        return;
    }
    match queue.remove(&inst.queue).await {
        Ok(left) => {
            for d in left {
                if let Ok(job) = shared.keys.open_job(&d.job_id, &d.payload) {
                    let reply = cx.reply(
                        &job.activity,
                        None,
                        Some(format!(
                            "{} platform instance stopped before the job ran",
                            cx.platform()
                        )),
                    );
                    cx.answer(&job.id, &job.session, reply).await;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot drain queue of stopped instance"),
    }
    if inst.channel.is_some() {
        if !inst.told.load(Ordering::Acquire) {
            // Its sessions here are leaving with the node (or were none: reaped); those
            // elsewhere hear that the connection is gone.
            let error = format!("{} platform instance stopped", cx.platform());
            let actor = lock(&inst.actor).clone();
            let push = InstanceMsg::Push {
                activity: error_activity(cx.platform(), actor, &error),
                except: None,
            };
            cx.to_remotes(&push).await;
        }
        cx.to_remotes(&InstanceMsg::End).await;
    }
    tracing::info!("platform instance stopped");
}
