//! A persistent platform instance that another node runs, as this node's sessions use it.
//!
//! This node pushes its sessions' jobs on the owner's queue (the replies come back on each
//! session's own channel) and subscribes, once for all its sessions, to the owner's
//! `instance:{queue}` channel, handing each message on to the sessions attached here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use switchboard_engine::broker::Recv;
use switchboard_engine::{EngineError, Subscription};
use switchboard_protocol::{context, error_reply};
use tokio::task::JoinHandle;

use super::instance::error_activity;
use super::{PoolShared, Target, lock};
use crate::wire::{BusMsg, InstanceMsg, instance_channel};

pub(crate) struct Remote {
    /// The owner's lease holder string, `"<node> <queue>"`.
    pub holder: String,
    pub queue: String,
    platform: &'static str,
    actor: Option<String>,
    /// This node's sessions attached to it.
    sessions: Mutex<HashSet<String>>,
    lost: AtomicBool,
    follower: Mutex<Option<JoinHandle<()>>>,
}

impl Remote {
    /// Follow the instance `holder` runs for `target`: subscribed before this returns, so
    /// nothing it shows after the first job is pushed is missed.
    pub async fn follow(
        shared: &Arc<PoolShared>,
        target: &Target,
        holder: String,
    ) -> Result<Arc<Remote>, EngineError> {
        let queue = holder
            .split_once(' ')
            .map(|(_, q)| q.to_owned())
            .ok_or_else(|| {
                EngineError::Unavailable(format!("malformed lease holder {holder:?}"))
            })?;
        let channel = instance_channel(&queue);
        let sub = shared.engine.broker.subscribe(&channel).await?;
        let remote = Arc::new(Remote {
            holder,
            queue,
            platform: target.manifest.name,
            actor: target.actor.clone(),
            sessions: Mutex::default(),
            lost: AtomicBool::new(false),
            follower: Mutex::new(None),
        });
        let task = tokio::spawn(follow(
            Arc::downgrade(&remote),
            Arc::downgrade(shared),
            channel,
            sub,
        ));
        *lock(&remote.follower) = Some(task);
        Ok(remote)
    }

    pub fn attach(&self, session: &str) {
        lock(&self.sessions).insert(session.to_owned());
    }

    pub fn detach(&self, session: &str) {
        lock(&self.sessions).remove(session);
    }

    pub fn is_unused(&self) -> bool {
        lock(&self.sessions).is_empty()
    }

    fn sessions(&self) -> Vec<String> {
        lock(&self.sessions).iter().cloned().collect()
    }

    /// The owner is gone without a word (its node died): tell the sessions, as the
    /// sessions of a worker that crashed are told, and answer every job left in its queue
    /// (waiting, or taken by the dead worker and never answered) with the same error, for
    /// whichever session on whichever node sent it. Their next job starts it again.
    pub async fn lost(&self, shared: &PoolShared) {
        if self.lost.swap(true, Ordering::AcqRel) {
            return;
        }
        let error = "Error: session thread closed unexpectedly: its node stopped answering";
        let activity = error_activity(self.platform, self.actor.clone(), error);
        self.push(shared, &activity, None).await;
        // Removal is atomic, so when several nodes notice, one of them answers each job.
        let left = match shared.engine.queue.remove(&self.queue).await {
            Ok(left) => left,
            Err(e) => {
                tracing::warn!(error = %e, "cannot drain a lost instance's queue");
                return;
            }
        };
        for d in left {
            let Ok(job) = shared.keys.open_job(&d.job_id, &d.payload) else {
                continue;
            };
            let mut reply = error_reply(&job.activity, error);
            context::stamp(&mut reply, self.platform);
            tracing::warn!(job = %job.id, session = %job.session, "job lost with its instance's node");
            let msg = BusMsg::Result { job: job.id, reply };
            shared.publish(&job.session, &msg).await;
        }
    }

    async fn push(&self, shared: &PoolShared, activity: &serde_json::Value, except: Option<&str>) {
        for session in self.sessions() {
            if Some(session.as_str()) != except {
                let msg = BusMsg::Push {
                    activity: activity.clone(),
                };
                shared.publish(&session, &msg).await;
            }
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.follower).take() {
            task.abort();
        }
    }
}

/// Hand what the owner publishes on `channel` to the sessions attached here, until the
/// instance ends or this node stops following it.
async fn follow(
    remote: Weak<Remote>,
    shared: Weak<PoolShared>,
    channel: String,
    mut sub: Subscription,
) {
    loop {
        let received = sub.recv().await;
        let (Some(remote), Some(shared)) = (remote.upgrade(), shared.upgrade()) else {
            return;
        };
        let bytes = match received {
            Recv::Message(bytes) => bytes,
            Recv::Lagged | Recv::Closed => {
                // Events were lost on the way: the sessions cannot trust their view of the
                // connection, so they hear it ended (their next job starts afresh).
                tracing::warn!(%channel, "lost track of a remote platform instance");
                shared.forget_remote(&remote);
                remote.lost(&shared).await;
                return;
            }
        };
        let msg = match shared.keys.open_instance(&channel, &bytes) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::error!(%channel, error = %e, "cannot open instance message");
                continue;
            }
        };
        match msg {
            InstanceMsg::Push { activity, except } => {
                remote.push(&shared, &activity, except.as_deref()).await;
            }
            InstanceMsg::Rekey { actor, credentials } => {
                let sessions = remote.sessions();
                let mut keys: Vec<String> = sessions
                    .iter()
                    .map(|s| {
                        shared
                            .keys
                            .instance(remote.platform, &actor, s, Some(&credentials))
                    })
                    .collect();
                keys.sort();
                keys.dedup();
                shared.rekey_remote(&remote, keys);
                for session in sessions {
                    let msg = BusMsg::Rekey {
                        platform: remote.platform.to_owned(),
                        actor: actor.clone(),
                        credentials: credentials.clone(),
                    };
                    shared.publish(&session, &msg).await;
                }
            }
            InstanceMsg::End => {
                shared.forget_remote(&remote);
                return;
            }
        }
    }
}
