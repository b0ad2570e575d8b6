//! The dummy platform, verb for verb Sockethub's: it talks to no remote service and exists
//! to exercise the gateway. `echo` and `greet` answer; `fail` and `throw` fail the job;
//! `exit0`, `exit1`, `sigterm`, `sigkill`, `throwTypeError` and `throwReferenceError` take
//! the worker process down in the named way; `hang` never answers, so the server's request
//! timeout must.

use serde_json::{Value, json};
use switchboard_platform::{Job, Platform, PlatformError, WorkerContext};
use switchboard_protocol::Manifest;

const VERBS: &[&str] = &[
    "echo",
    "greet",
    "fail",
    "throw",
    "exit0",
    "exit1",
    "sigterm",
    "sigkill",
    "hang",
    "throwTypeError",
    "throwReferenceError",
];

pub struct Dummy {
    ctx: WorkerContext,
}

/// `object.content` as text ("" when absent), the way the dummy's replies quote it.
fn content(activity: &Value) -> String {
    match activity.pointer("/object/content") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// The request with actor and target swapped: the dummy platform answers as itself.
fn reply_from_dummy(activity: &Value) -> Value {
    let mut reply = activity.clone();
    reply["target"] = activity.get("actor").cloned().unwrap_or(Value::Null);
    reply["actor"] = json!({"id": "dummy", "type": "platform"});
    reply
}

fn raise(signal: libc::c_int) {
    // SAFETY: raise() only sends a signal to this process; the point of the verb is to die.
    unsafe {
        libc::raise(signal);
    }
}

impl Platform for Dummy {
    fn manifest() -> Manifest {
        Manifest {
            name: "dummy",
            version: env!("CARGO_PKG_VERSION"),
            verbs: VERBS.to_vec(),
            messages: json!({
                "required": ["type"],
                "properties": {"type": {"enum": VERBS}}
            }),
            credentials: json!({}),
            require_credentials: vec![],
            persist: false,
            concurrency: 64,
        }
    }

    fn new(ctx: WorkerContext) -> Self {
        Dummy { ctx }
    }

    async fn handle(&self, job: Job) -> Result<Option<Value>, PlatformError> {
        let a = &job.activity;
        match job.verb() {
            "echo" => Ok(Some(reply_from_dummy(a))),
            "greet" => {
                let mut reply = reply_from_dummy(a);
                reply["object"]["content"] = Value::String(format!("Hello {}", content(a)));
                Ok(Some(reply))
            }
            "fail" | "throw" => Err(PlatformError::new(format!("Error: {}", content(a)))),
            "exit0" => std::process::exit(0),
            "exit1" => std::process::exit(1),
            "sigterm" => {
                raise(libc::SIGTERM);
                std::future::pending().await
            }
            "sigkill" => {
                raise(libc::SIGKILL);
                std::future::pending().await
            }
            "throwTypeError" | "throwReferenceError" => {
                // Sockethub's worker reports an uncaught exception as a fatal error and exits.
                let kind = job.verb().trim_start_matches("throw");
                let text = format!("{kind}: {}", content(a));
                tracing::error!(job = %job.id, "{text}");
                self.ctx.fatal(text).await;
                std::future::pending().await
            }
            "hang" => std::future::pending().await,
            other => Err(PlatformError::new(format!(
                "platform method {other} not available"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_platform::worker::test_context;

    fn job(verb: &str, content: &str) -> Job {
        Job {
            id: "j".into(),
            session: "s".into(),
            activity: json!({
                "type": verb,
                "actor": {"id": "test", "type": "person"},
                "object": {"type": "message", "content": content}
            }),
            credentials: None,
        }
    }

    #[tokio::test]
    async fn echo_swaps_actor_and_target() {
        let (ctx, _rx) = test_context(Value::Null);
        let reply = Dummy::new(ctx)
            .handle(job("echo", "hi"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply["actor"], json!({"id": "dummy", "type": "platform"}));
        assert_eq!(reply["target"], json!({"id": "test", "type": "person"}));
        assert_eq!(reply["object"]["content"], "hi");
    }

    #[tokio::test]
    async fn greet_and_fail() {
        let (ctx, _rx) = test_context(Value::Null);
        let d = Dummy::new(ctx);
        let reply = d.handle(job("greet", "world")).await.unwrap().unwrap();
        assert_eq!(reply["object"]["content"], "Hello world");
        let e = d.handle(job("fail", "boom")).await.unwrap_err();
        assert_eq!(e.0, "Error: boom");
    }

    #[test]
    fn manifest_types_match_sockethub() {
        assert_eq!(Dummy::manifest().types().len(), 12);
    }
}
