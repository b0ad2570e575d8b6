//! The irc platform, wire-compatible with Sockethub's: one persistent IRC connection per
//! login (the gateway runs one worker per platform, actor and credential scope), verbs
//! `connect`, `join`, `leave`, `send` (`/me …` as a CTCP ACTION, `/notice …` as a NOTICE),
//! `update` (object `address`: NICK; `topic`: TOPIC), `query` (object `attendance`: NAMES,
//! answered with the members) and `disconnect`.
//!
//! Unlike Sockethub's, a job's reply means the server accepted it (see [`client`]), and
//! every id has one form, incoming and outgoing: `nick@server` and `#channel@server`.
//!
//! ```text
//! handle(job) ─ names/login checks ─▶ client::Client ──Op──▶ connection task ──▶ server
//!                                         ▲  Outcome                │ incoming lines
//!                                         └─────────────────────────┤
//!                                            ctx.emit(activity) ◀───┘
//! ```

pub mod client;
mod conn;
mod flood;
mod incoming;
mod lines;
mod login;
mod names;

use serde_json::{Value, json};
use switchboard_platform::{Job, Platform, PlatformError, WorkerContext, tls};
use switchboard_protocol::Manifest;
use tokio::sync::Mutex;

use client::{Client, Op, Say};
use login::Login;
use names::{Target, channel_target, person, room, single_line, target};

const VERBS: &[&str] = &[
    "connect",
    "join",
    "leave",
    "send",
    "update",
    "query",
    "disconnect",
];

pub struct Irc {
    ctx: WorkerContext,
    client: Mutex<Option<Connected>>,
}

/// A live connection and the credentials object it was opened with (kept current across
/// nick changes, for re-keying).
struct Connected {
    client: Client,
    credentials: Value,
}

fn schema() -> Value {
    let room_id = json!({"type": "string", "pattern": "^[#&+!][^\\s,]*@[^\\s@]+$"});
    json!({
        "required": ["type"],
        "properties": {
            "type": {"enum": VERBS},
            "object": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["message", "topic", "address", "attendance"]},
                    "content": {"type": "string"}
                }
            },
            "target": {
                "type": "object",
                "if": {"required": ["type"], "properties": {"type": {"const": "room"}}},
                "then": {"required": ["id"], "properties": {"id": room_id}}
            }
        }
    })
}

fn credentials_schema() -> Value {
    json!({
        "required": ["object"],
        "properties": {
            "actor": {"type": "object", "required": ["id"]},
            "object": {
                "type": "object",
                "required": ["type", "nick", "server"],
                "additionalProperties": false,
                "not": {"required": ["password", "token"]},
                "properties": {
                    "type": {"type": "string"},
                    "nick": {"type": "string"},
                    "username": {"type": "string"},
                    "password": {"type": "string", "minLength": 1},
                    "token": {"type": "string", "minLength": 1},
                    "server": {"type": "string"},
                    "port": {"type": "number"},
                    "secure": {"type": "boolean"},
                    "sasl": {"type": "boolean"},
                    "saslMechanism": {"type": "string", "enum": ["PLAIN", "OAUTHBEARER"]}
                }
            }
        }
    })
}

fn content(activity: &Value) -> Result<&str, PlatformError> {
    activity
        .pointer("/object/content")
        .and_then(Value::as_str)
        .ok_or_else(|| PlatformError::new("object.content (a string) is required"))
}

fn object_type(activity: &Value) -> &str {
    activity
        .pointer("/object/type")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `/me …` and `/notice …` are commands; any other text is a plain message.
fn say(text: &str) -> (Say, &str) {
    for (cmd, how) in [("/me", Say::Action), ("/notice", Say::Notice)] {
        if let Some(rest) = text.strip_prefix(cmd)
            && (rest.is_empty() || rest.starts_with(char::is_whitespace))
        {
            return (how, rest.trim());
        }
    }
    (Say::Privmsg, text)
}

impl Irc {
    async fn connect(&self, job: &Job) -> Result<Option<Value>, PlatformError> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_some_and(|c| c.client.is_alive()) {
            // Another session of this login connected already: share the connection.
            return Ok(None);
        }
        let creds = job
            .credentials
            .as_ref()
            .and_then(|c| c.get("object").or(Some(c)))
            .ok_or_else(|| PlatformError::new("connect needs credentials: send them first"))?;
        let actor = job.activity.get("actor").cloned().unwrap_or(Value::Null);
        let login = Login::from_credentials(creds, &actor)?;
        let accept_invalid = tls::accept_invalid_certs(&self.ctx);
        tracing::info!(job = %job.id, server = %login.server, port = login.port, secure = login.secure, "connecting to irc server");
        let link = conn::open(&login, accept_invalid)
            .await
            .map_err(PlatformError)?;
        *slot = Some(Connected {
            client: Client::start(link, login, accept_invalid, self.ctx.clone()),
            credentials: creds.clone(),
        });
        Ok(None)
    }

    /// The op a job asks for, checked against the connection's server.
    fn op(&self, job: &Job, server: &str) -> Result<Op, PlatformError> {
        let a = &job.activity;
        Ok(match job.verb() {
            "join" => Op::Join(channel_target(a, server)?),
            "leave" => Op::Part(channel_target(a, server)?),
            "send" => {
                if object_type(a) != "message" {
                    return Err(PlatformError::new("send needs an object of type message"));
                }
                let text = content(a)?;
                if text.contains('\0') {
                    return Err(PlatformError::new(
                        "message must not contain NUL characters",
                    ));
                }
                let (how, text) = say(text);
                Op::Say {
                    target: target(a, server)?.name().to_owned(),
                    how,
                    text: text.to_owned(),
                }
            }
            "update" => match object_type(a) {
                "address" => match target(a, server)? {
                    Target::Nick(n) => Op::Nick(n),
                    Target::Channel(_) => {
                        return Err(PlatformError::new(
                            "a nick change needs a person target (newnick@server)",
                        ));
                    }
                },
                "topic" => {
                    let topic = content(a)?;
                    single_line("topic", topic)?;
                    Op::Topic(channel_target(a, server)?, topic.to_owned())
                }
                other => {
                    return Err(PlatformError::new(format!(
                        "unknown update action: {other:?} (address or topic)"
                    )));
                }
            },
            "query" => match object_type(a) {
                "attendance" => Op::Names(channel_target(a, server)?),
                other => {
                    return Err(PlatformError::new(format!(
                        "unknown query: {other:?} (attendance)"
                    )));
                }
            },
            other => {
                return Err(PlatformError::new(format!(
                    "platform method {other} not available"
                )));
            }
        })
    }
}

impl Platform for Irc {
    fn manifest() -> Manifest {
        Manifest {
            name: "irc",
            version: env!("CARGO_PKG_VERSION"),
            verbs: VERBS.to_vec(),
            messages: schema(),
            credentials: credentials_schema(),
            require_credentials: vec!["connect"],
            persist: true,
            concurrency: 1,
        }
    }

    fn new(ctx: WorkerContext) -> Self {
        Irc {
            ctx,
            client: Mutex::new(None),
        }
    }

    async fn handle(&self, job: Job) -> Result<Option<Value>, PlatformError> {
        match job.verb() {
            "connect" => return self.connect(&job).await,
            "disconnect" => {
                let connected = self.client.lock().await.take();
                if let Some(c) = connected {
                    c.client.quit().await;
                }
                return Ok(None);
            }
            _ => {}
        }
        let mut slot = self.client.lock().await;
        let conn = slot
            .as_mut()
            .filter(|c| c.client.is_alive())
            .ok_or_else(|| {
                PlatformError::new(format!("{} called on uninitialized platform", job.verb()))
            })?;
        let server = conn.client.server.clone();
        let op = self.op(&job, &server)?;
        tracing::debug!(job = %job.id, verb = job.verb(), "irc request");
        let result = conn.client.run(op.clone()).await.map_err(PlatformError)?;
        Ok(match op {
            Op::Names(channel) => Some(json!({
                "type": "query",
                "actor": room(&channel, &server),
                "target": job.activity.get("actor").cloned().unwrap_or(Value::Null),
                "object": {"type": "attendance", "members": result},
            })),
            Op::Nick(nick) => {
                // The login is now this nick: its sessions reach it as the new actor.
                conn.credentials["nick"] = Value::String(nick.clone());
                let actor = person(&nick, &server);
                let id = actor["id"].as_str().unwrap_or_default();
                self.ctx.rekey(id, conn.credentials.clone()).await;
                None
            }
            _ => None,
        })
    }

    async fn shutdown(&self) {
        let connected = self.client.lock().await.take();
        if let Some(c) = connected {
            c.client.quit().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_in_content() {
        assert_eq!(say("/me waves"), (Say::Action, "waves"));
        assert_eq!(say("/notice  hear ye "), (Say::Notice, "hear ye"));
        assert_eq!(say("/men are here"), (Say::Privmsg, "/men are here"));
        assert_eq!(say("plain"), (Say::Privmsg, "plain"));
    }

    #[test]
    fn manifest_schemas_compile() {
        let v = switchboard_protocol::Validator::new(&[Irc::manifest()]).unwrap();
        let _ = v;
    }
}
