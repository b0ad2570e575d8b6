//! The platforms compiled into both binaries (the server's manifests and the worker's
//! dispatch come from this one list). Adding a platform: depend on its crate and add a line
//! to `manifests` and `run_worker`.

use anyhow::{Result, bail};
use switchboard_platform::{Platform, worker};
use switchboard_platform_dummy::Dummy;
use switchboard_platform_feeds::Feeds;
use switchboard_platform_irc::Irc;
use switchboard_platform_metadata::Metadata;
use switchboard_platform_xmpp::Xmpp;
use switchboard_protocol::Manifest;

/// Manifests of every available platform, in registry order.
pub fn manifests() -> Vec<Manifest> {
    vec![
        Dummy::manifest(),
        Feeds::manifest(),
        Metadata::manifest(),
        Irc::manifest(),
        Xmpp::manifest(),
    ]
}

/// Run platform `name` as a worker on stdin/stdout.
pub async fn run_worker(name: &str) -> Result<()> {
    match name {
        "dummy" => Ok(worker::run::<Dummy>().await?),
        "feeds" => Ok(worker::run::<Feeds>().await?),
        "metadata" => Ok(worker::run::<Metadata>().await?),
        "irc" => Ok(worker::run::<Irc>().await?),
        "xmpp" => Ok(worker::run::<Xmpp>().await?),
        other => bail!(
            "unknown platform {other:?} (available: {})",
            names().join(", ")
        ),
    }
}

/// Names of every available platform, in registry order.
pub fn names() -> Vec<&'static str> {
    manifests().iter().map(|m| m.name).collect()
}
