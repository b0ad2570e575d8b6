//! The shared part of every test harness that starts a real peer server (ngircd,
//! prosody, redis-server, postgres …) as a process on 127.0.0.1: free ports, a temp-dir
//! guard, finding the binary (failing with an install hint, never skipping), waiting
//! for the port, a self-signed certificate, dropping root for servers that refuse it,
//! and killing only the children the harness started.
//!
//! Peer-specific configuration stays with each peer's harness; the exception is
//! [`RedisCluster`], a whole cluster that several crates' tests start the same way. Dev-only: tests use it
//! as a dev-dependency (and `switchboard-store` under its `suite` feature).

mod binary;
mod port;
mod process;
mod redis_cluster;
mod temp;
mod tls;
mod user;

pub use binary::require;
pub use port::{free_port, wait_port};
pub use process::kill;
pub use redis_cluster::RedisCluster;
pub use temp::TempDir;
pub use tls::self_signed;
pub use user::{Owner, chown_tree, command_as, is_root, service_user};
