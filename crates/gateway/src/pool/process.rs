//! One worker process: spawning it and turning its pipe and exit into events.

use std::process::{ExitStatus, Stdio};

use futures_util::StreamExt;
use switchboard_platform::frame::{self, FromWorker, ToWorker};
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use crate::config::WorkerCommand;

/// What a process reports to its instance, tagged with the process generation so events of
/// a process that was already replaced are recognised.
#[derive(Debug)]
pub(crate) enum ProcEvent {
    Frame(u64, FromWorker),
    Exited(u64, ExitStatus),
}

/// A running worker process.
pub(crate) struct Process {
    pub generation: u64,
    pub pid: Option<u32>,
    pub input: mpsc::Sender<ToWorker>,
    kill: Option<oneshot::Sender<()>>,
}

impl Process {
    /// Start `<program> platform <name>`, send it `init`, and forward what it says to
    /// `events`.
    pub fn spawn(
        cmd: &WorkerCommand,
        platform: &str,
        generation: u64,
        init: ToWorker,
        events: mpsc::UnboundedSender<ProcEvent>,
    ) -> std::io::Result<Process> {
        let mut child = Command::new(&cmd.program)
            .args(&cmd.args)
            .arg("platform")
            .arg(platform)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // If the server itself dies, the worker sees stdin close and exits; this covers
            // the server dropping a Process it forgot to stop.
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id();
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("worker pipes missing"));
        };
        let (input, _writer) = frame::spawn_writer::<_, ToWorker>(stdin, 1024);
        // The channel is empty and has capacity, so this cannot fail.
        let _ = input.try_send(init);

        let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut frames = frame::reader::<_, FromWorker>(stdout);
            loop {
                tokio::select! {
                    item = frames.next() => match item {
                        Some(Ok(f)) => { let _ = events.send(ProcEvent::Frame(generation, f)); }
                        Some(Err(e)) => {
                            tracing::error!(error = %e, pid, "bad frame from worker; killing it");
                            let _ = child.start_kill();
                            break;
                        }
                        None => break,
                    },
                    _ = &mut kill_rx => {
                        let _ = child.start_kill();
                        break;
                    }
                }
            }
            let status = match child.wait().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, pid, "cannot wait for worker");
                    return;
                }
            };
            let _ = events.send(ProcEvent::Exited(generation, status));
        });
        Ok(Process {
            generation,
            pid,
            input,
            kill: Some(kill_tx),
        })
    }

    pub fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
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
