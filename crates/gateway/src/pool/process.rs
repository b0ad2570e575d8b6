//! One worker process: spawning it, its pipes, and how its exit reads.

use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures_util::Stream;
use switchboard_platform::frame::{self, FromWorker, ToWorker};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::config::WorkerCommand;

type Frames = Pin<Box<dyn Stream<Item = std::io::Result<FromWorker>> + Send>>;

/// A running worker process. Frames to it go through a writer task (so a full pipe never
/// stalls the instance); frames from it are read by the instance task itself.
pub(crate) struct Process {
    pub pid: Option<u32>,
    pub input: mpsc::Sender<ToWorker>,
    pub frames: Frames,
    child: Child,
}

impl Process {
    /// Start `<program> platform <name>` (or the per-platform binary, see
    /// [`WorkerCommand::program_for`]) and send it `init`.
    pub fn spawn(cmd: &WorkerCommand, platform: &str, init: ToWorker) -> std::io::Result<Process> {
        let mut child = Command::new(cmd.program_for(platform))
            .args(&cmd.args)
            .arg("platform")
            .arg(platform)
            // A pipe worker must never turn into a remote worker node itself.
            .env_remove("SWITCHBOARD_REDIS_URL")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // If the server dies, the worker sees stdin close and exits; this covers a
            // Process dropped without being stopped.
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("worker pipes missing"));
        };
        let (input, _writer) = frame::spawn_writer::<_, ToWorker>(stdin, 1024);
        // The channel is new and empty, so this cannot fail.
        let _ = input.try_send(init);
        Ok(Process {
            pid: child.id(),
            input,
            frames: Box::pin(frame::reader::<_, FromWorker>(stdout)),
            child,
        })
    }

    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Wait for the process to end (it closed its stdout or was killed), killing it if it
    /// lingers past `grace`.
    pub async fn exit(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.kill();
                self.child.wait().await
            }
        }
    }
}

/// How a worker's exit reads in errors: `Error: session thread closed unexpectedly: 1`
/// (Sockethub's wording), with the signal name when it was killed.
pub(crate) fn exit_text(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    let why = match (status.code(), status.signal()) {
        (Some(code), _) => code.to_string(),
        (None, Some(9)) => "SIGKILL".to_owned(),
        (None, Some(15)) => "SIGTERM".to_owned(),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "unknown".to_owned(),
    };
    format!("Error: session thread closed unexpectedly: {why}")
}
