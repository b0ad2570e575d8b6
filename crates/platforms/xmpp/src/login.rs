//! Logging in: TLS (through [`Connector`]), SASL (SCRAM-SHA-256, SCRAM-SHA-1, PLAIN, in
//! that order of preference, as tokio-xmpp negotiates them), and the reconnector that the
//! stanza stream calls whenever its connection drops.
//!
//! The first login runs inside the `connect` job so its failure (wrong password, TLS
//! refused, nobody listening) is that job's answer. Later logins retry with exponential
//! backoff (1 s doubling to 30 s) and report each failure on `events`, so sessions hear
//! about it.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::error::AuthError;
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::stanzastream::{Connection, XmppStream};
use tokio_xmpp::xmlstream::{StreamHeader, Timeouts};

use crate::connector::Connector;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Connect + TLS + SASL, as long as Sockethub allows a connect.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a silent stream may stay silent before it is probed, and then declared dead.
pub fn timeouts() -> Timeouts {
    Timeouts {
        read_timeout: Duration::from_secs(90),
        response_timeout: Duration::from_secs(20),
    }
}

/// A failed reconnection attempt, for the sessions.
#[derive(Debug)]
pub struct RetryFailed {
    pub error: String,
    pub retry_in: Duration,
}

/// Connect, secure, authenticate; the stream is ready for resource binding.
pub async fn login(
    connector: &Connector,
    jid: &Jid,
    password: &str,
) -> Result<(StreamFeatures, XmppStream), String> {
    let run = async {
        let username = jid.node().map(|n| n.as_str()).unwrap_or_default();
        let (pending, binding) = connector
            .connect(jid, ns::JABBER_CLIENT, timeouts())
            .await?;
        let (features, stream) = pending.recv_features().await?;
        let creds = sasl::common::Credentials::default()
            .with_username(username)
            .with_password(password)
            .with_channel_binding(binding);
        let stream = tokio_xmpp::client_login(stream, features.sasl_mechanisms, creds).await?;
        let stream = stream
            .send_header(StreamHeader {
                to: Some(Cow::Borrowed(jid.domain().as_str())),
                from: None,
                id: None,
            })
            .await?;
        let (features, stream) = stream.recv_features().await?;
        Ok::<_, tokio_xmpp::Error>((features, stream.box_stream()))
    };
    match tokio::time::timeout(LOGIN_TIMEOUT, run).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(describe(&e, connector)),
        Err(_) => Err(format!(
            "no answer from {}:{} within {} s",
            connector.host,
            connector.port,
            LOGIN_TIMEOUT.as_secs()
        )),
    }
}

/// A login error as a user should read it.
fn describe(e: &tokio_xmpp::Error, c: &Connector) -> String {
    match e {
        tokio_xmpp::Error::Auth(AuthError::Fail(condition)) => {
            format!("authentication failed: {}", crate::stanza::kebab(condition))
        }
        tokio_xmpp::Error::Auth(AuthError::NoMechanism) => {
            "authentication failed: the server offers none of SCRAM-SHA-256, SCRAM-SHA-1, PLAIN"
                .into()
        }
        tokio_xmpp::Error::Io(io) => format!("cannot talk to {}:{}: {io}", c.host, c.port),
        tokio_xmpp::Error::Connection(e) => e.to_string(),
        tokio_xmpp::Error::Disconnected => {
            format!("{}:{} closed the connection during login", c.host, c.port)
        }
        other => other.to_string(),
    }
}

/// The reconnector handed to tokio-xmpp's stanza stream. Its first call hands over the
/// stream `connect` already logged in; every later call logs in again, retrying until it
/// works or `stopped` is set.
pub fn reconnector(
    connector: Connector,
    jid: Jid,
    password: String,
    first: (StreamFeatures, XmppStream),
    stopped: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<RetryFailed>,
) -> Box<dyn FnMut(Option<String>, oneshot::Sender<Connection>) + Send + 'static> {
    let mut first = Some(first);
    Box::new(move |_, slot: oneshot::Sender<Connection>| {
        if let Some((features, stream)) = first.take() {
            let _ = slot.send(Connection {
                stream,
                features,
                identity: jid.clone(),
            });
            return;
        }
        let (connector, jid, password) = (connector.clone(), jid.clone(), password.clone());
        let (stopped, events) = (stopped.clone(), events.clone());
        tokio::spawn(async move {
            let mut slot = slot;
            let mut delay = FIRST_RETRY;
            while !stopped.load(Ordering::Acquire) {
                match login(&connector, &jid, &password).await {
                    Ok((features, stream)) => {
                        let _ = slot.send(Connection {
                            stream,
                            features,
                            identity: jid,
                        });
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%jid, %error, retry_in = ?delay, "reconnection failed");
                        let _ = events.send(RetryFailed {
                            error,
                            retry_in: delay,
                        });
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(MAX_RETRY);
                    }
                }
            }
            // Dropping the slot makes tokio-xmpp's stream worker panic, so wait instead; the
            // worker lets go of it when it ends.
            slot.closed().await;
        });
    })
}
