//! Configuration: defaults, then a TOML file (`--config`), then `SWITCHBOARD_*` environment
//! variables and command-line flags (clap merges those two; a flag beats its variable).
//!
//! Every setting has the same name in all three places: `max_payload` in the file,
//! `SWITCHBOARD_MAX_PAYLOAD` in the environment, `--max-payload` on the command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use switchboard_chat::{ChatConfig, JwtKeys};
use switchboard_gateway::{GatewayConfig, WorkerCommand};
use switchboard_server::ServerConfig;

/// Declares the settings once: the file/struct field, its default, and the flag.
macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $(#[arg($($extra:tt)*)])? $field:ident : $ty:ty = $default:expr, env = $env:literal; )*) => {
        /// The effective configuration.
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Settings {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings { $( $field: $default, )* }
            }
        }

        /// Flags of `switchboard serve` (each also readable from its environment variable).
        #[derive(Debug, Clone, Args)]
        pub struct ServeArgs {
            /// TOML configuration file.
            #[arg(long, env = "SWITCHBOARD_CONFIG")]
            pub config: Option<PathBuf>,
            $( $(#[doc = $doc])* #[arg(long, env = $env $(, $($extra)*)?)] pub $field: Option<$ty>, )*
        }

        impl Settings {
            fn overlay(&mut self, args: &ServeArgs) {
                $( if let Some(v) = &args.$field { self.$field = v.clone(); } )*
            }
        }
    };
}

settings! {
    /// Address to listen on.
    host: String = "127.0.0.1".into(), env = "SWITCHBOARD_HOST";
    /// Port to listen on (0 picks a free one; the banner says which).
    port: u16 = 10550, env = "SWITCHBOARD_PORT";
    /// Runtime threads: 1 (one thread, lowest latency), 0 (one per core), or N.
    threads: usize = 1, env = "SWITCHBOARD_THREADS";
    /// Largest activity accepted, in bytes.
    max_payload: usize = 256 * 1024, env = "SWITCHBOARD_MAX_PAYLOAD";
    /// Milliseconds a platform has to answer a request.
    request_timeout_ms: u64 = 30_000, env = "SWITCHBOARD_REQUEST_TIMEOUT_MS";
    /// Rate limit window, in milliseconds.
    rate_limit_window_ms: u64 = 1_000, env = "SWITCHBOARD_RATE_LIMIT_WINDOW_MS";
    /// Events allowed per connection per window.
    rate_limit_max: u32 = 100, env = "SWITCHBOARD_RATE_LIMIT_MAX";
    /// How long a connection over the limit stays blocked, in milliseconds.
    rate_limit_block_ms: u64 = 5_000, env = "SWITCHBOARD_RATE_LIMIT_BLOCK_MS";
    /// Simultaneous connections per client IP (0: no cap).
    max_connections_per_ip: usize = 256, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP";
    /// Worker heartbeat interval, in milliseconds.
    heartbeat_interval_ms: u64 = 5_000, env = "SWITCHBOARD_HEARTBEAT_INTERVAL_MS";
    /// A worker silent this long (milliseconds) is killed.
    heartbeat_timeout_ms: u64 = 15_000, env = "SWITCHBOARD_HEARTBEAT_TIMEOUT_MS";
    /// Platform instances (worker processes) at most.
    max_instances: usize = 64, env = "SWITCHBOARD_MAX_INSTANCES";
    /// Idle instances are stopped after this many milliseconds.
    idle_timeout_ms: u64 = 60_000, env = "SWITCHBOARD_IDLE_TIMEOUT_MS";
    /// Stored credentials expire after this many seconds.
    credentials_ttl_secs: u64 = 86_400, env = "SWITCHBOARD_CREDENTIALS_TTL_SECS";
    /// 64 hex digits of root secret for sealing (random per boot when empty; nodes sharing
    /// an engine must share it).
    secret: String = String::new(), env = "SWITCHBOARD_SECRET";
    /// Run on Redis (`redis://[user:password@]host:port[/db]`) instead of the embedded
    /// engine, so several nodes share channels, job queues and credentials. Needs `secret`.
    /// With `redis_cluster`: comma-separated URLs of Redis Cluster seed nodes.
    redis_url: String = String::new(), env = "SWITCHBOARD_REDIS_URL";
    /// `redis_url` names the seed nodes of a Redis Cluster (one or more; the rest of the
    /// cluster is discovered from them). A plain switch like `--allow-private-network`.
    #[arg(num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    redis_cluster: bool = false, env = "SWITCHBOARD_REDIS_CLUSTER";
    /// With Redis: a job reserved by a node that has not shown it alive for this many
    /// milliseconds (the node died mid-job) is taken over by another node and run again.
    redis_claim_idle_ms: u64 = 30_000, env = "SWITCHBOARD_REDIS_CLAIM_IDLE_MS";
    /// With Redis: a node that has not shown it alive for this many milliseconds (it
    /// died) has its chat connections dropped from the shared presence, and the persistent
    /// platform instances it ran (their leases) go to the next node that needs them.
    redis_presence_ttl_ms: u64 = 15_000, env = "SWITCHBOARD_REDIS_PRESENCE_TTL_MS";
    /// With Redis: prepended to every key and channel, so deployments can share a Redis.
    redis_prefix: String = "switchboard:".into(), env = "SWITCHBOARD_REDIS_PREFIX";
    /// Let the feeds and metadata platforms fetch from loopback, private, link-local and
    /// other non-public addresses (trusted setups and tests only). A plain switch on the
    /// command line; `true`/`false` in the file and the environment.
    #[arg(num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    allow_private_network: bool = false, env = "SWITCHBOARD_ALLOW_PRIVATE_NETWORK";
    /// Milliseconds the feeds and metadata platforms allow for one fetch (all redirects and
    /// the body).
    http_timeout_ms: u64 = 15_000, env = "SWITCHBOARD_HTTP_TIMEOUT_MS";
    /// Let the IRC and XMPP platforms accept self-signed or otherwise invalid server
    /// certificates (test and LAN servers only). A plain switch like
    /// `--allow-private-network`.
    #[arg(num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    accept_invalid_certs: bool = false, env = "SWITCHBOARD_ACCEPT_INVALID_CERTS";
    /// Chat message store: `sqlite://PATH?mode=rwc` (created if missing), or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (the database must exist; its schema is
    /// migrated at start; no TLS yet, so keep it on loopback or a private network).
    database_url: String = "sqlite://switchboard.db?mode=rwc".into(), env = "SWITCHBOARD_DATABASE_URL";
    /// HS256 secret for chat tokens, at least 32 characters (random per boot when empty:
    /// tokens then die with the process).
    jwt_secret: String = String::new(), env = "SWITCHBOARD_JWT_SECRET";
    /// Token algorithm: HS256 (with jwt_secret), RS256 or EdDSA (with PEM key files).
    jwt_algorithm: String = "HS256".into(), env = "SWITCHBOARD_JWT_ALGORITHM";
    /// RS256/EdDSA: PEM file of the public key that verifies tokens.
    jwt_public_key: String = String::new(), env = "SWITCHBOARD_JWT_PUBLIC_KEY";
    /// RS256/EdDSA: PEM file of the private key that signs tokens (without it the server
    /// only verifies tokens issued elsewhere).
    jwt_private_key: String = String::new(), env = "SWITCHBOARD_JWT_PRIVATE_KEY";
    /// Lifetime of issued chat tokens, in seconds.
    jwt_ttl_secs: u64 = 86_400, env = "SWITCHBOARD_JWT_TTL_SECS";
    /// One chat connection per user: a new one closes the older with code 4005.
    #[arg(num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    single_session: bool = false, env = "SWITCHBOARD_SINGLE_SESSION";
    /// Largest chat message content, in bytes.
    max_message_bytes: usize = 8 * 1024, env = "SWITCHBOARD_MAX_MESSAGE_BYTES";
    /// Chat WebSocket ping interval in milliseconds; a connection that has not answered a
    /// ping by the next one is closed.
    ping_interval_ms: u64 = 30_000, env = "SWITCHBOARD_PING_INTERVAL_MS";
    /// Frames one chat WebSocket connection may send per `chat_rate_limit_window_ms` (0:
    /// no limit); each one over it is answered with an `error` frame and ignored.
    chat_rate_limit_max: u32 = 100, env = "SWITCHBOARD_CHAT_RATE_LIMIT_MAX";
    /// Chat rate limit window, in milliseconds.
    chat_rate_limit_window_ms: u64 = 1_000, env = "SWITCHBOARD_CHAT_RATE_LIMIT_WINDOW_MS";
    /// Simultaneous chat WebSocket connections per client IP (0: no cap); the one over it
    /// is refused with HTTP 429.
    chat_max_connections_per_ip: usize = 256, env = "SWITCHBOARD_CHAT_MAX_CONNECTIONS_PER_IP";
}

impl Settings {
    pub fn load(args: &ServeArgs) -> Result<Settings> {
        let mut settings = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => Settings::default(),
        };
        settings.overlay(args);
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<()> {
        if self.max_payload < 1024 {
            bail!("max_payload must be at least 1024 bytes");
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            bail!("heartbeat_timeout_ms must be longer than heartbeat_interval_ms");
        }
        if self.http_timeout_ms == 0 {
            bail!("http_timeout_ms must be at least 1");
        }
        if self.max_instances == 0 {
            bail!("max_instances must be at least 1");
        }
        if !self.secret.is_empty() {
            self.secret_bytes()?;
        }
        if self.redis_claim_idle_ms < 100 {
            bail!("redis_claim_idle_ms must be at least 100");
        }
        if self.redis_presence_ttl_ms < 300 {
            bail!("redis_presence_ttl_ms must be at least 300");
        }
        if !self.redis_url.is_empty() && self.secret.is_empty() {
            bail!(
                "redis_url needs a shared secret: nodes on one Redis open each other's sealed \
                 jobs and messages, so give every node the same --secret (SWITCHBOARD_SECRET, \
                 `secret` in the config file), e.g. from `openssl rand -hex 32`"
            );
        }
        if self.redis_cluster && self.redis_url.is_empty() {
            bail!("redis_cluster needs redis_url: the cluster's seed node URLs, comma-separated");
        }
        if !self.redis_cluster && self.redis_url.contains(',') {
            bail!(
                "redis_url lists several URLs: for the seed nodes of a Redis Cluster also set \
                 --redis-cluster (SWITCHBOARD_REDIS_CLUSTER, `redis_cluster` in the config file)"
            );
        }
        if !self.jwt_secret.is_empty() && self.jwt_secret.len() < 32 {
            bail!("jwt_secret must be at least 32 characters");
        }
        if !matches!(self.jwt_algorithm.as_str(), "HS256" | "RS256" | "EdDSA") {
            bail!("jwt_algorithm must be HS256, RS256 or EdDSA");
        }
        if self.jwt_algorithm != "HS256" && self.jwt_public_key.is_empty() {
            bail!("jwt_algorithm {} needs jwt_public_key", self.jwt_algorithm);
        }
        if self.chat_rate_limit_window_ms == 0 {
            bail!("chat_rate_limit_window_ms must be at least 1");
        }
        if self.max_message_bytes == 0 || self.ping_interval_ms < 100 {
            bail!("max_message_bytes must be at least 1 and ping_interval_ms at least 100");
        }
        Ok(())
    }

    fn secret_bytes(&self) -> Result<Option<[u8; 32]>> {
        if self.secret.is_empty() {
            return Ok(None);
        }
        let bytes = hex::decode(&self.secret).context("secret must be hex")?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("secret must be 64 hex digits (32 bytes)"))?;
        Ok(Some(arr))
    }

    /// The effective settings as TOML, with the secret masked.
    pub fn describe(&self) -> String {
        let mut shown = self.clone();
        if !shown.secret.is_empty() {
            shown.secret = "(set)".into();
        }
        shown.redis_url = self.redis_address();
        if !shown.jwt_secret.is_empty() {
            shown.jwt_secret = "(set)".into();
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("cannot render settings: {e}"))
    }

    /// The Redis URL (each seed's, on a cluster) without its password, for banners and
    /// logs.
    pub fn redis_address(&self) -> String {
        self.redis_url
            .split(',')
            .map(|url| match (url.split_once("://"), url.rsplit_once('@')) {
                (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
                _ => url.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn gateway(&self) -> Result<GatewayConfig> {
        let mut g =
            GatewayConfig::new(WorkerCommand::sibling_or_current_exe("switchboard-worker")?);
        g.max_payload = self.max_payload;
        g.request_timeout = Duration::from_millis(self.request_timeout_ms);
        g.rate_window = Duration::from_millis(self.rate_limit_window_ms);
        g.rate_max = self.rate_limit_max;
        g.rate_block = Duration::from_millis(self.rate_limit_block_ms);
        g.max_connections_per_ip = self.max_connections_per_ip;
        g.heartbeat_interval = Duration::from_millis(self.heartbeat_interval_ms);
        g.heartbeat_timeout = Duration::from_millis(self.heartbeat_timeout_ms);
        g.max_instances = self.max_instances;
        g.idle_timeout = Duration::from_millis(self.idle_timeout_ms);
        g.credentials_ttl = Duration::from_secs(self.credentials_ttl_secs);
        // A node presumed dead for presence is presumed dead for the instances it runs.
        g.lease_ttl = Duration::from_millis(self.redis_presence_ttl_ms);
        if let Some(secret) = self.secret_bytes()? {
            g.secret = secret;
        }
        g.worker_settings = serde_json::json!({
            "allow_private_network": self.allow_private_network,
            "http_timeout_ms": self.http_timeout_ms,
            "accept_invalid_certs": self.accept_invalid_certs,
        });
        Ok(g)
    }

    /// The chat service's settings (reads the JWT key files).
    pub fn chat(&self) -> Result<ChatConfig> {
        let keys = match self.jwt_algorithm.as_str() {
            "HS256" if self.jwt_secret.is_empty() => {
                tracing::warn!(
                    "jwt_secret is not set: chat tokens are signed with a random key and stop working when the server restarts"
                );
                let mut key = vec![0u8; 32];
                getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
                JwtKeys::Hs256(key)
            }
            "HS256" => JwtKeys::Hs256(self.jwt_secret.as_bytes().to_vec()),
            name => JwtKeys::Asymmetric {
                algorithm: if name == "RS256" {
                    jsonwebtoken::Algorithm::RS256
                } else {
                    jsonwebtoken::Algorithm::EdDSA
                },
                public_pem: std::fs::read(&self.jwt_public_key).with_context(|| {
                    format!("cannot read jwt_public_key {}", self.jwt_public_key)
                })?,
                private_pem: if self.jwt_private_key.is_empty() {
                    None
                } else {
                    Some(std::fs::read(&self.jwt_private_key).with_context(|| {
                        format!("cannot read jwt_private_key {}", self.jwt_private_key)
                    })?)
                },
            },
        };
        let mut c = ChatConfig::new(self.database_url.clone(), Vec::new());
        c.jwt = keys;
        c.token_ttl = Duration::from_secs(self.jwt_ttl_secs);
        c.single_session = self.single_session;
        c.max_message_bytes = self.max_message_bytes;
        c.ping_interval = Duration::from_millis(self.ping_interval_ms);
        c.rate_limit = self.chat_rate_limit_max;
        c.rate_window = Duration::from_millis(self.chat_rate_limit_window_ms);
        c.max_connections_per_ip = self.chat_max_connections_per_ip;
        Ok(c)
    }

    pub fn server(&self) -> ServerConfig {
        ServerConfig {
            max_payload: self.max_payload,
            ..ServerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn args(argv: &[&str]) -> ServeArgs {
        Cli::parse_from(std::iter::once("serve").chain(argv.iter().copied())).args
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(&file, "port = 4000\nrate_limit_max = 7\n").unwrap();
        let path = file.to_str().unwrap();

        let s = Settings::load(&args(&["--config", path])).unwrap();
        assert_eq!(
            (s.port, s.rate_limit_max, s.host.as_str()),
            (4000, 7, "127.0.0.1")
        );

        let s = Settings::load(&args(&["--config", path, "--port", "5000"])).unwrap();
        assert_eq!(s.port, 5000, "a flag beats the file");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_files_and_values_are_refused() {
        let dir = std::env::temp_dir().join(format!("sb-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "prot = 4000\n").unwrap();
        let err = Settings::load(&args(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        assert!(Settings::load(&args(&["--secret", "abc"])).is_err());
        assert!(
            Settings::load(&args(&[
                "--heartbeat-timeout-ms",
                "10",
                "--heartbeat-interval-ms",
                "20"
            ]))
            .is_err()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn redis_url_needs_a_secret_and_is_shown_without_password() {
        let err = Settings::load(&args(&["--redis-url", "redis://127.0.0.1:6379"])).unwrap_err();
        assert!(format!("{err:#}").contains("shared secret"), "{err:#}");
        let secret = "ab".repeat(32);
        let s = Settings::load(&args(&[
            "--redis-url",
            "redis://user:hunter2@10.0.0.1:6379/2",
            "--secret",
            &secret,
        ]))
        .unwrap();
        assert_eq!(s.redis_address(), "redis://***@10.0.0.1:6379/2");
        assert!(!s.describe().contains("hunter2"));
    }

    #[test]
    fn a_redis_cluster_is_seed_urls_plus_the_switch() {
        let secret = "ab".repeat(32);
        let seeds = "redis://:pw1@10.0.0.1:7000,redis://:pw2@10.0.0.2:7000";
        let err = Settings::load(&args(&["--redis-url", seeds, "--secret", &secret])).unwrap_err();
        assert!(format!("{err:#}").contains("--redis-cluster"), "{err:#}");
        let err = Settings::load(&args(&["--redis-cluster"])).unwrap_err();
        assert!(format!("{err:#}").contains("seed node"), "{err:#}");
        let s = Settings::load(&args(&[
            "--redis-url",
            seeds,
            "--redis-cluster",
            "--secret",
            &secret,
        ]))
        .unwrap();
        assert!(s.redis_cluster);
        assert_eq!(
            s.redis_address(),
            "redis://***@10.0.0.1:7000,redis://***@10.0.0.2:7000"
        );
        assert!(!s.describe().contains("pw1") && !s.describe().contains("pw2"));
    }

    #[test]
    fn allow_private_network_switch_and_worker_settings() {
        let s = Settings::load(&args(&[])).unwrap();
        assert!(!s.allow_private_network);
        assert_eq!(
            s.gateway().unwrap().worker_settings,
            serde_json::json!({
                "allow_private_network": false,
                "http_timeout_ms": 15000,
                "accept_invalid_certs": false,
            })
        );
        let s = Settings::load(&args(&["--allow-private-network"])).unwrap();
        assert!(s.allow_private_network, "a plain switch");
        assert_eq!(
            s.gateway().unwrap().worker_settings["allow_private_network"],
            true
        );
        let s = Settings::load(&args(&["--accept-invalid-certs"])).unwrap();
        assert_eq!(
            s.gateway().unwrap().worker_settings["accept_invalid_certs"],
            true
        );
        let s = Settings::load(&args(&["--allow-private-network", "false"])).unwrap();
        assert!(!s.allow_private_network);
        let s = Settings::load(&args(&["--allow-private-network", "--port", "1"])).unwrap();
        assert!(s.allow_private_network && s.port == 1);

        let dir = std::env::temp_dir().join(format!("sb-config-apn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("switchboard.toml");
        std::fs::write(
            &file,
            "allow_private_network = true\nhttp_timeout_ms = 500\n",
        )
        .unwrap();
        let s = Settings::load(&args(&["--config", file.to_str().unwrap()])).unwrap();
        assert!(s.allow_private_network);
        assert_eq!(s.gateway().unwrap().worker_settings["http_timeout_ms"], 500);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
