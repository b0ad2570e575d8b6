//! The pipe protocol between the server and a worker process.
//!
//! Frames are JSON documents behind a 4-byte big-endian length (tokio-util's
//! `LengthDelimitedCodec`): the server writes [`ToWorker`] on the child's stdin and reads
//! [`FromWorker`] from its stdout; the worker logs to stderr. The pipe is private to the two
//! processes, so frames carry plaintext; whatever crosses a shared queue is sealed before.

use futures_util::{SinkExt, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Largest frame either side accepts: comfortably above the server's payload limit, so a
/// frame this big means a bug or a hostile peer, and the connection is dropped.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// The codec both sides use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Decode frames of type `T` from a pipe. A malformed frame is an error item; the stream
/// ends when the other side closes the pipe.
pub fn reader<R, T>(r: R) -> impl Stream<Item = std::io::Result<T>> + Send + Unpin
where
    R: AsyncRead + Send + Unpin,
    T: DeserializeOwned,
{
    FramedRead::new(r, codec()).map(|item| {
        let bytes = item?;
        serde_json::from_slice(&bytes[..]).map_err(std::io::Error::other)
    })
}

/// Start the single writer task for a pipe and return its queue. Frames are flushed when
/// the queue runs dry, so a burst becomes few writes. The task ends when every sender is
/// dropped or the pipe breaks.
pub fn spawn_writer<W, T>(w: W, capacity: usize) -> (mpsc::Sender<T>, JoinHandle<()>)
where
    W: AsyncWrite + Send + Unpin + 'static,
    T: Serialize + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<T>(capacity);
    let task = tokio::spawn(async move {
        let mut sink = FramedWrite::new(w, codec());
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(frame) = next {
                let bytes = match serde_json::to_vec(&frame) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "frame does not serialise; dropped");
                        next = rx.try_recv().ok();
                        continue;
                    }
                };
                if let Err(e) = sink.feed(bytes::Bytes::from(bytes)).await {
                    tracing::debug!(error = %e, "pipe closed");
                    return;
                }
                next = rx.try_recv().ok();
            }
            if SinkExt::<bytes::Bytes>::flush(&mut sink).await.is_err() {
                return;
            }
        }
    });
    (tx, task)
}

/// Server → worker. (Externally tagged, `{"job": {…}}`: an internally tagged enum would be
/// buffered whole before decoding, on every frame.)
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    /// First frame: who this worker is and how it should behave.
    Init {
        /// The instance key (`dummy`, `irc:<actor>:<scope>` …), for logs.
        instance: String,
        /// Milliseconds between heartbeats.
        heartbeat_ms: u64,
        /// Server settings platforms may consult (e.g. `accept_invalid_certs`).
        #[serde(default)]
        settings: Value,
    },
    /// Run one job.
    Job {
        id: String,
        session: String,
        activity: Value,
        /// The session's credentials for this platform and actor, when it has any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<Value>,
    },
    /// The requester gave up on a job (timeout); stop working on it.
    Cancel { id: String },
    /// Stop cleanly (disconnect from remote servers) and exit.
    Shutdown,
}

/// Worker → server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker read its Init frame and is ready for jobs.
    Ready,
    /// Still alive.
    Heartbeat,
    /// A job finished: `result` is the platform's reply (absent when it has none), `error`
    /// is set when the job failed.
    Result {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Traffic the platform received (an IRC line, an XMPP presence) as an activity, for every
    /// session attached to this instance, or only `session` when set.
    Event {
        activity: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// A problem that ends the instance (lost connection that will not come back …): every
    /// attached session gets it as an error activity.
    Fatal { error: String },
    /// The persistent connection now acts as another actor with these credentials (an IRC
    /// nick change): the server files the credentials under the new actor for every
    /// attached session and routes the new actor's jobs to this instance. Sent before the
    /// result of the job that caused it.
    Rekey { actor: String, credentials: Value },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_as_tagged_json() {
        let f = FromWorker::Result {
            id: "j1".into(),
            result: None,
            error: Some("Error: boom".into()),
        };
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(text, r#"{"result":{"id":"j1","error":"Error: boom"}}"#);
        let back: FromWorker = serde_json::from_str(&text).unwrap();
        assert!(matches!(back, FromWorker::Result { error: Some(e), .. } if e == "Error: boom"));
    }

    #[test]
    fn rekey_frames_round_trip() {
        let f = FromWorker::Rekey {
            actor: "new@irc.example".into(),
            credentials: serde_json::json!({"nick": "new"}),
        };
        let text = serde_json::to_string(&f).unwrap();
        assert!(matches!(
            serde_json::from_str(&text).unwrap(),
            FromWorker::Rekey { actor, .. } if actor == "new@irc.example"
        ));
    }

    #[test]
    fn unknown_frames_are_rejected() {
        assert!(serde_json::from_str::<ToWorker>(r#"{"explode":{}}"#).is_err());
    }
}
