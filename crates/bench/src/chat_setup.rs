//! Chat benchmark setup over REST: registering users and putting them in a
//! room, before any measurement starts.
//!
//! Users come from `POST /api/auth/register {username, password}` → 201
//! `{token, user: {id, username}}` (Switchboard; the peers answer the same with
//! token = id = username). Ids are opaque JSON values (string or integer), sent
//! back exactly as received.
//!
//! Rooms are the one part whose REST shape may still change on the Switchboard
//! side, so both calls live in [`RoomApi`]: `POST {create} {name}` → `{id}` or
//! `{room: {id}}`, then `POST {join}` with `{id}` substituted, each with the
//! member's bearer token. Adapt the templates (`--room-create`, `--room-join`)
//! rather than the generator.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// REST calls in flight during setup (registration hashes passwords: keep
/// the server's CPU for that, not for queueing).
const SETUP_CONCURRENCY: usize = 8;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A registered user.
#[derive(Clone, Debug)]
pub struct User {
    pub id: Value,
    pub token: String,
}

/// The two room calls, as path templates (`{id}` is replaced by the room id).
#[derive(Clone, Debug)]
pub struct RoomApi {
    pub create: String,
    pub join: String,
}

/// A REST client for one server's setup calls.
#[derive(Clone)]
pub struct Setup {
    http: Client,
    /// Distinguishes this run's usernames from earlier runs on the same server.
    prefix: String,
}

impl Setup {
    pub fn new() -> Result<Self> {
        // reqwest is built without a default crypto provider; plain http needs
        // none, but the builder insists on one being installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            % 1_000_000_000;
        Ok(Self {
            http,
            prefix: format!("b{stamp}p{}", std::process::id()),
        })
    }

    /// Registers `n` users named `<run prefix><role><i>` at `base`
    /// (`http://host:port`), in order.
    pub async fn register_users(&self, base: &str, role: &str, n: usize) -> Result<Vec<User>> {
        let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for i in 0..n {
            let this = self.clone();
            let base = base.to_owned();
            let permits = Arc::clone(&permits);
            let username = format!("{}{role}{i}", self.prefix);
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await?;
                this.register(&base, &username).await.map(|u| (i, u))
            });
        }
        let mut users = vec![None; n];
        while let Some(joined) = tasks.join_next().await {
            let (i, user) = joined.context("register task")??;
            users[i] = Some(user);
        }
        Ok(users.into_iter().flatten().collect())
    }

    async fn register(&self, base: &str, username: &str) -> Result<User> {
        let url = format!("{base}/api/auth/register");
        let body = json!({ "username": username, "password": "bench-password-1" });
        let (status, reply) = self.post(&url, None, &body).await?;
        if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
            bail!(
                "{url} answered {status}: this server has no native chat API \
                 (POST /api/auth/register is missing)"
            );
        }
        if !status.is_success() {
            bail!("registering {username}: {url} answered {status}: {reply}");
        }
        parse_user(&reply).with_context(|| format!("registration reply from {url}"))
    }

    /// Creates a room owned by `owner` at `base` and returns its id.
    pub async fn create_room(
        &self,
        api: &RoomApi,
        base: &str,
        owner: &User,
        name: &str,
    ) -> Result<Value> {
        let url = format!("{base}{}", api.create);
        let (status, reply) = self
            .post(
                &url,
                Some(&owner.token),
                &json!({ "name": format!("{}{name}", self.prefix) }),
            )
            .await?;
        if !status.is_success() {
            bail!("creating a room: {url} answered {status}: {reply}");
        }
        reply
            .pointer("/room/id")
            .or_else(|| reply.get("id"))
            .cloned()
            .ok_or_else(|| anyhow!("room reply from {url} has no id: {reply}"))
    }

    /// Makes each of `members` join `room` at `base`.
    pub async fn join_room(
        &self,
        api: &RoomApi,
        base: &str,
        room: &Value,
        members: &[User],
    ) -> Result<()> {
        let room_path = api.join.replace("{id}", &id_text(room));
        let url = format!("{base}{room_path}");
        let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for member in members {
            let this = self.clone();
            let url = url.clone();
            let token = member.token.clone();
            let permits = Arc::clone(&permits);
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await?;
                let (status, reply) = this.post(&url, Some(&token), &json!({})).await?;
                if !status.is_success() {
                    bail!("joining a room: {url} answered {status}: {reply}");
                }
                Ok(())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.context("join task")??;
        }
        Ok(())
    }

    async fn post(
        &self,
        url: &str,
        token: Option<&str>,
        body: &Value,
    ) -> Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body)?);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the reply of {url}"))?;
        // A 404 from a server without the API may not be JSON at all.
        let reply = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Ok((status, reply))
    }
}

fn parse_user(reply: &Value) -> Result<User> {
    let token = reply
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no token in {reply}"))?;
    let id = reply
        .pointer("/user/id")
        .cloned()
        .ok_or_else(|| anyhow!("no user.id in {reply}"))?;
    Ok(User {
        id,
        token: token.to_owned(),
    })
}

/// An opaque id as it appears in a URL path: strings bare, numbers as digits.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registration_replies() {
        let user = parse_user(&json!({"token": "t", "user": {"id": 5, "username": "x"}})).unwrap();
        assert_eq!(user.id, json!(5));
        assert_eq!(user.token, "t");
        let user = parse_user(&json!({"token": "t", "user": {"id": "u-1"}})).unwrap();
        assert_eq!(user.id, json!("u-1"));
        assert!(parse_user(&json!({"user": {"id": 1}})).is_err());
        assert!(parse_user(&json!({"token": "t"})).is_err());
    }

    #[test]
    fn room_ids_in_paths() {
        assert_eq!(id_text(&json!(12)), "12");
        assert_eq!(id_text(&json!("r-1")), "r-1");
    }
}
