//! Everything the gateway can be told, with Sockethub's defaults where it has them.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// How to start a worker process: `program args… platform <name>`, or
/// `program-<name> args… platform <name>` when that per-platform binary sits next to
/// `program` (see [`WorkerCommand::program_for`]).
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    /// Arguments before `platform <name>` (normally none).
    pub args: Vec<String>,
}

impl WorkerCommand {
    /// The executable to run for `platform`: `<program>-<platform>` in `program`'s
    /// directory if there is one (a worker binary linking that platform alone, which maps
    /// far less code into each long-lived process), else `program` itself. Looked up at
    /// every start, so installing or removing a per-platform binary needs no restart.
    pub fn program_for(&self, platform: &str) -> PathBuf {
        if let Some(name) = self.program.file_name() {
            let mut own = name.to_os_string();
            own.push("-");
            own.push(platform);
            let candidate = self.program.with_file_name(own);
            if candidate.is_file() {
                return candidate;
            }
        }
        self.program.clone()
    }

    /// The executable `name` next to this one (the lean binary that only runs workers), or
    /// this very executable when there is none, so a lone copied binary still works.
    pub fn sibling_or_current_exe(name: &str) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let sibling = exe.with_file_name(name);
        let program = if sibling.is_file() {
            sibling
        } else {
            tracing::warn!(
                missing = %sibling.display(),
                "no {name} next to this binary; workers run as `{} platform <name>` instead (more memory per worker)",
                exe.display()
            );
            exe
        };
        Ok(WorkerCommand {
            program,
            args: Vec::new(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest activity accepted, in bytes of JSON (Sockethub: 256 KiB).
    pub max_payload: usize,
    /// Rate limit: at most `rate_max` events per `rate_window` per connection, then blocked
    /// for `rate_block` (Sockethub: 100 per second, 5 s).
    pub rate_window: Duration,
    pub rate_max: u32,
    pub rate_block: Duration,
    /// Simultaneous connections from one IP address; 0 turns the cap off.
    pub max_connections_per_ip: usize,
    /// A job not answered in this time is answered with a timeout error.
    pub request_timeout: Duration,
    /// Workers send a heartbeat this often; one silent for `heartbeat_timeout` is killed.
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Live platform instances (worker processes) at most.
    pub max_instances: usize,
    /// An instance with no sessions (persistent) or no work (stateless) for this long is
    /// stopped.
    pub idle_timeout: Duration,
    /// A persistent instance's owner holds its cluster-wide lease for this long and renews
    /// it every third of it; after an owner node dies, another node may start the instance
    /// this long after its last renewal.
    pub lease_ttl: Duration,
    /// Stored credentials expire after this long even if the session lives on.
    pub credentials_ttl: Duration,
    /// Settings passed to every worker (`accept_invalid_certs`, …).
    pub worker_settings: Value,
    pub worker_command: WorkerCommand,
    /// 32-byte root secret for sealing; random per boot unless configured (nodes sharing an
    /// engine must share it).
    pub secret: [u8; 32],
}

impl GatewayConfig {
    pub fn new(worker_command: WorkerCommand) -> Self {
        GatewayConfig {
            max_payload: 256 * 1024,
            rate_window: Duration::from_secs(1),
            rate_max: 100,
            rate_block: Duration::from_secs(5),
            max_connections_per_ip: 256,
            request_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_timeout: Duration::from_secs(15),
            max_instances: 64,
            idle_timeout: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(15),
            credentials_ttl: Duration::from_secs(24 * 3600),
            worker_settings: Value::Object(Default::default()),
            worker_command,
            secret: switchboard_engine::seal::random_bytes::<32>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_testpeers::TempDir;

    use super::*;

    #[test]
    fn per_platform_program_is_preferred_when_present() {
        let dir = TempDir::new("worker-cmd");
        let worker = dir.path().join("switchboard-worker");
        std::fs::write(&worker, "").unwrap();
        let cmd = WorkerCommand {
            program: worker.clone(),
            args: vec![],
        };
        // Absent: the shared worker runs every platform.
        assert_eq!(cmd.program_for("xmpp"), worker);

        let xmpp = dir.path().join("switchboard-worker-xmpp");
        std::fs::write(&xmpp, "").unwrap();
        assert_eq!(cmd.program_for("xmpp"), xmpp);
        // Only for its own platform.
        assert_eq!(cmd.program_for("irc"), worker);
        // A directory of that name is not a program.
        std::fs::create_dir(dir.path().join("switchboard-worker-irc")).unwrap();
        assert_eq!(cmd.program_for("irc"), worker);

        // Removed again: back to the shared worker, without a new WorkerCommand.
        std::fs::remove_file(&xmpp).unwrap();
        assert_eq!(cmd.program_for("xmpp"), worker);
    }
}
