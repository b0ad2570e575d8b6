//! `switchboard user add NAME`: create a chat account from the command line.

use std::io::BufRead;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use switchboard_chat::Chat;
use switchboard_engine::Engine;

use crate::config::Settings;

/// Create the account; its password comes from `SWITCHBOARD_USER_PASSWORD` or the first
/// line of stdin (never from the command line, where other users could read it).
pub async fn add(settings: Settings, name: &str, email: Option<&str>) -> Result<()> {
    let password = match std::env::var("SWITCHBOARD_USER_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if password.is_empty() {
        bail!("no password: set SWITCHBOARD_USER_PASSWORD or write it on stdin");
    }
    let chat = Chat::open(settings.chat()?, &Engine::embedded())
        .await
        .with_context(|| {
            format!(
                "cannot open {}",
                switchboard_store::redacted_url(&settings.database_url)
            )
        })?;
    let user = chat
        .register(name, &password, email)
        .await
        .map_err(|e| anyhow!("{}", e.message))?;
    println!("created user {} (id {})", user.username, user.id);
    // A token signed with a random per-run key would be useless to the server.
    let lasting_keys = !settings.jwt_secret.is_empty() || settings.jwt_algorithm != "HS256";
    if lasting_keys && let Ok(token) = chat.issue_token(user.id, &user.username) {
        println!("token: {token}");
    }
    chat.close(Duration::from_secs(5)).await;
    Ok(())
}
