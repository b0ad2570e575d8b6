//! One client connection's view of the gateway.
//!
//! A session has a random id and secret (its credentials key is derived from the secret,
//! which exists only here), a rate limiter, the activity objects the client declared, and
//! the requests waiting for a platform's reply. A listener task receives what the platform
//! instances publish on `session:{id}`: replies go to their waiting request, everything else
//! is handed to the transport's [`Pusher`] as a [`Push`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use switchboard_engine::broker::Recv;
use switchboard_engine::seal::{random_bytes, random_id};
use switchboard_protocol::{context, error_reply};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::gateway::GatewayInner;
use crate::order::{Ticket, Turnstile};
use crate::pipeline::{Kind, Request, StageContext, store_key};
use crate::pool::Target;
use crate::rate::{RateLimiter, Verdict};
use crate::wire::{BusMsg, JobEnvelope, session_channel};

/// Something the server sends the client unasked.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// For the client's `message` event: incoming traffic, results shared by a persistent
    /// platform connection, fatal platform errors.
    Message(Value),
    /// For the client's `error` event: rate limiting and other server-level problems.
    Error(Value),
    /// The session cannot continue (it fell too far behind); the transport should close.
    Close(Value),
}

/// What every rate-limited request is answered with.
pub const RATE_LIMITED: &str = "rate limit exceeded, temporarily blocked";

/// A server-level error activity, as Sockethub shapes it for the `error` event.
pub fn server_error(summary: &str) -> Value {
    json!({
        "type": "Error",
        "@context": context::canonical("error"),
        "actor": {"type": "Application", "name": "sockethub-server"},
        "summary": summary,
    })
}

type Pending = Mutex<HashMap<String, oneshot::Sender<Value>>>;

/// How a session hands pushes to its transport. Called from the session's listener task;
/// it must not block (Socket.IO's emit only queues).
pub type Pusher = Arc<dyn Fn(Push) + Send + Sync>;

struct Inner {
    id: String,
    peer: IpAddr,
    gw: Arc<GatewayInner>,
    secret: [u8; 32],
    order: Arc<Turnstile>,
    rate: Mutex<RateLimiter>,
    /// Declared activity objects; replaced wholesale on change so a request can hold a
    /// snapshot across awaits.
    objects: Mutex<Arc<HashMap<String, Value>>>,
    pending: Arc<Pending>,
    /// Dropped at close: the transport's pusher usually holds the connection, which holds
    /// the handlers, which hold this session; letting go of it breaks that cycle.
    push: Mutex<Option<Pusher>>,
    listener: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// A connection's session; cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    pub(crate) async fn open(
        gw: Arc<GatewayInner>,
        peer: IpAddr,
        push: Pusher,
    ) -> Result<Session, switchboard_engine::EngineError> {
        let id = random_id::<16>();
        let subscription = gw.engine.broker.subscribe(&session_channel(&id)).await?;
        let config = &gw.config;
        let inner = Arc::new(Inner {
            rate: Mutex::new(RateLimiter::new(
                config.rate_window,
                config.rate_max,
                config.rate_block,
            )),
            id,
            peer,
            secret: random_bytes::<32>(),
            order: Arc::default(),
            objects: Mutex::default(),
            pending: Arc::default(),
            push: Mutex::new(Some(push.clone())),
            listener: Mutex::new(None),
            closed: AtomicBool::new(false),
            gw,
        });
        let listener = tokio::spawn(listen(
            inner.id.clone(),
            inner.secret,
            subscription,
            inner.gw.clone(),
            inner.pending.clone(),
            push,
        ));
        *lock(&inner.listener) = Some(listener);
        tracing::info!(session = %inner.id, %peer, "session opened");
        Ok(Session { inner })
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Take this event's place in line. Call it when the event arrives, before any await.
    pub fn ticket(&self) -> Ticket {
        self.inner.order.ticket()
    }

    /// Count the event against the rate limit; on refusal, tell the client once per block.
    async fn admit(&self) -> bool {
        let verdict = lock(&self.inner.rate).check();
        match verdict {
            Verdict::Allow => true,
            Verdict::BlockedNow => {
                tracing::warn!(session = %self.inner.id, "rate limit exceeded");
                let push = lock(&self.inner.push).clone();
                if let Some(push) = push {
                    push(Push::Error(server_error(RATE_LIMITED)));
                }
                false
            }
            Verdict::Blocked => false,
        }
    }

    /// The `schemas` event: the registry, or `unchanged` when the client's fingerprint is
    /// current.
    pub async fn schemas(&self, ticket: Ticket, known: Option<&str>) -> Value {
        ticket.turn().await;
        if !self.admit().await {
            return json!({"error": RATE_LIMITED});
        }
        self.inner.gw.registry.answer(known)
    }

    /// The `activity-object` event: remember an object (an actor's name and type, say) so
    /// later activities can refer to it by id. `None` means stored (the client's callback
    /// takes an error first).
    pub async fn activity_object(&self, ticket: Ticket, raw: Value) -> Option<Value> {
        ticket.turn().await;
        if !self.admit().await {
            return Some(error_reply(&raw, RATE_LIMITED));
        }
        let id = match raw.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            _ if !raw.is_object() => {
                return Some(error_reply(&raw, "activity object must be an object."));
            }
            _ => {
                return Some(error_reply(
                    &raw,
                    "activity object must have an id property.",
                ));
            }
        };
        let mut objects = lock(&self.inner.objects);
        let mut next = HashMap::clone(&objects);
        next.insert(id, raw);
        *objects = Arc::new(next);
        None
    }

    fn stage_context<'a>(&'a self, objects: &'a HashMap<String, Value>) -> StageContext<'a> {
        let gw = &self.inner.gw;
        StageContext {
            session_id: &self.inner.id,
            validator: &gw.validator,
            objects,
            store: gw.engine.credentials.as_ref(),
            credentials_ttl: gw.config.credentials_ttl,
            keys: &gw.keys,
            session_secret: &self.inner.secret,
        }
    }

    /// What every activity event does first, in its turn: count against the rate limit and
    /// run the pipeline. `Err` is the reply that ends the event there.
    async fn validate(&self, ticket: &Ticket, kind: Kind, raw: &Value) -> Result<Request, Value> {
        ticket.turn().await;
        if !self.admit().await {
            return Err(error_reply(raw, RATE_LIMITED));
        }
        let objects = lock(&self.inner.objects).clone();
        let cx = self.stage_context(&objects);
        self.inner
            .gw
            .pipeline
            .run(Request::new(kind, raw.clone()), &cx)
            .await
            .map_err(|rejection| error_reply(raw, &rejection.0))
    }

    /// The `credentials` event: validate and store; the reply echoes the request.
    pub async fn credentials(&self, ticket: Ticket, raw: Value) -> Value {
        match self.validate(&ticket, Kind::Credentials, &raw).await {
            Ok(req) => {
                tracing::info!(session = %self.inner.id, platform = req.platform, "credentials stored");
                req.activity
            }
            Err(reply) => reply,
        }
    }

    /// The `message` event: validate, queue a job for the platform, and wait for its reply
    /// (or the request timeout).
    pub async fn message(&self, ticket: Ticket, raw: Value) -> Value {
        let req = match self.validate(&ticket, Kind::Message, &raw).await {
            Ok(req) => req,
            Err(reply) => return reply,
        };
        let gw = &self.inner.gw;
        let Some(platform) = req.platform else {
            return error_reply(&raw, "unable to resolve platform from @context");
        };
        let Some(manifest) = gw.validator.manifest(platform) else {
            return error_reply(&raw, "unable to resolve platform from @context");
        };
        let target = self.target(manifest, &req);
        let job = JobEnvelope {
            id: random_id::<8>(),
            session: self.inner.id.clone(),
            activity: req.activity,
            credentials: req.credentials,
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(job.id.clone(), tx);
        if let Err(e) = gw.pool.submit(&target, &job).await {
            lock(&self.inner.pending).remove(&job.id);
            return error_reply(&job.activity, &e.to_string());
        }
        tracing::debug!(
            session = %self.inner.id,
            job = %job.id,
            message = job.activity.get("id").and_then(serde_json::Value::as_str).unwrap_or(""),
            platform,
            verb = job.activity.get("type").and_then(serde_json::Value::as_str).unwrap_or(""),
            "job queued"
        );
        // The next event may go ahead while this one waits for the platform.
        drop(ticket);

        let timeout = gw.config.request_timeout;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => error_reply(&job.activity, "session closed before the platform answered"),
            Err(_) => {
                lock(&self.inner.pending).remove(&job.id);
                gw.pool.cancel(&target.key, &job.id);
                tracing::warn!(session = %self.inner.id, job = %job.id, "request timed out");
                let mut reply = error_reply(
                    &job.activity,
                    &format!(
                        "request timed out: the {platform} platform did not answer within {} ms",
                        timeout.as_millis()
                    ),
                );
                context::stamp(&mut reply, platform);
                reply
            }
        }
    }

    /// Which instance a job goes to. Stateless platforms: the one shared instance.
    /// Persistent ones: see [`Keys::instance`](crate::keys::Keys::instance).
    fn target(&self, manifest: &Arc<switchboard_protocol::Manifest>, req: &Request) -> Target {
        if !manifest.persist {
            return Target {
                key: manifest.name.to_owned(),
                manifest: manifest.clone(),
                actor: None,
            };
        }
        let actor = req.actor_id();
        Target {
            key: self.inner.gw.keys.instance(
                manifest.name,
                actor,
                &self.inner.id,
                req.credentials.as_ref(),
            ),
            manifest: manifest.clone(),
            actor: Some(actor.to_owned()),
        }
    }

    /// The connection ended: forget its credentials, leave its instances, stop listening.
    pub async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let gw = &self.inner.gw;
        match gw.engine.credentials.delete_session(&self.inner.id).await {
            Ok(n) => tracing::info!(session = %self.inner.id, credentials = n, "session closed"),
            Err(e) => {
                tracing::error!(session = %self.inner.id, error = %e, "cannot delete credentials")
            }
        }
        gw.pool.detach(&self.inner.id);
        if let Some(listener) = lock(&self.inner.listener).take() {
            listener.abort();
        }
        lock(&self.inner.push).take();
        lock(&self.inner.pending).clear();
        gw.release(self.inner.peer);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            // A transport that forgot close(): still release what is synchronous to release.
            if let Some(l) = lock(&self.listener).take() {
                l.abort();
            }
            self.gw.release(self.peer);
            let store = self.gw.engine.credentials.clone();
            let id = self.id.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = store.delete_session(&id).await;
                });
            }
        }
    }
}

/// Route what arrives on `session:{id}` to waiting requests or the transport.
async fn listen(
    session: String,
    secret: [u8; 32],
    mut sub: switchboard_engine::Subscription,
    gw: Arc<GatewayInner>,
    pending: Arc<Pending>,
    push: Pusher,
) {
    loop {
        let bytes = match sub.recv().await {
            Recv::Message(b) => b,
            Recv::Lagged => {
                tracing::warn!(%session, "session fell behind its messages; closing");
                push(Push::Close(server_error(
                    "too many undelivered messages; connection closed",
                )));
                return;
            }
            Recv::Closed => return,
        };
        let msg = match gw.keys.open_bus(&session, &bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(%session, error = %e, "cannot open session message");
                continue;
            }
        };
        match msg {
            BusMsg::Result { job, reply } => {
                let waiting = lock(&pending).remove(&job);
                match waiting {
                    Some(tx) => {
                        if let Err(reply) = tx.send(reply) {
                            push(Push::Message(reply));
                        }
                    }
                    // Its request timed out already: deliver it rather than lose it.
                    None => push(Push::Message(reply)),
                }
            }
            BusMsg::Push { activity } => push(Push::Message(activity)),
            BusMsg::Rekey {
                platform,
                actor,
                credentials,
            } => {
                // Handled before the reply that follows it, so the client's next request
                // as the new actor finds its credentials.
                let key = store_key(&platform, &actor);
                let plain = serde_json::to_vec(&credentials).unwrap_or_default();
                let sealed = gw.keys.session(&secret).seal(key.as_bytes(), &plain);
                let ttl = gw.config.credentials_ttl;
                if let Err(e) = gw.engine.credentials.put(&session, &key, sealed, ttl).await {
                    tracing::error!(%session, error = %e, "cannot store re-keyed credentials");
                }
            }
        }
    }
}
