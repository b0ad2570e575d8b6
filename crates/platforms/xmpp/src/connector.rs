//! How a login reaches the server: TCP to the configured host, then STARTTLS (RFC 6120
//! §5) or TLS from the first byte (XEP-0368), always on the project's rustls/ring client
//! configuration, so `--accept-invalid-certs` is the only way a self-signed certificate
//! passes. tokio-xmpp's own connectors would bring a DNS resolver and their own trust
//! store; this one plugs into its [`ServerConnector`] trait instead. Plaintext is never
//! used: a server that does not offer STARTTLS is refused.

use std::borrow::Cow;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use sasl::common::ChannelBinding;
use switchboard_platform::tls;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_xmpp::connect::{ServerConnector, ServerConnectorError};
use tokio_xmpp::jid::Jid;
use tokio_xmpp::parsers::starttls;
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, PendingFeaturesRecv, ReadError, StreamHeader, Timeouts,
    XmppStreamElement, initiate_stream,
};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Tls(String),
    #[error("the server does not offer STARTTLS; refusing to log in without TLS")]
    NoStartTls,
    #[error("the server refused STARTTLS")]
    StartTlsRefused,
}

impl ServerConnectorError for ConnectError {}

#[derive(Debug, Clone)]
pub struct Connector {
    pub host: String,
    pub port: u16,
    pub direct_tls: bool,
    pub tls: Arc<ClientConfig>,
}

impl ServerConnector for Connector {
    type Stream = BufStream<tls::TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let domain = jid.domain().as_str();
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let tcp = if self.direct_tls {
            tcp
        } else {
            starttls(tcp, domain, ns, timeouts).await?
        };
        // The certificate must name the JID's domain, whatever host we dialled.
        let stream = tls::connect(self.tls.clone(), domain, tcp)
            .await
            .map_err(|e| ConnectError::Tls(with_hint(e.0)))?;
        let header = StreamHeader {
            to: Some(Cow::Borrowed(domain)),
            from: None,
            id: None,
        };
        let pending = initiate_stream(BufStream::new(stream), ns, header, timeouts).await?;
        // No channel binding: SCRAM-SHA-256/SHA-1 and PLAIN run without the -PLUS variants.
        Ok((pending, ChannelBinding::None))
    }
}

/// Open the stream in the clear, ask for TLS, and hand back the bare TCP stream once the
/// server says proceed.
async fn starttls(
    tcp: TcpStream,
    domain: &str,
    ns: &'static str,
    timeouts: Timeouts,
) -> Result<TcpStream, tokio_xmpp::Error> {
    let header = StreamHeader {
        to: Some(Cow::Borrowed(domain)),
        from: None,
        id: None,
    };
    let pending = initiate_stream(BufStream::new(tcp), ns, header, timeouts).await?;
    let (features, mut stream) = pending.recv_features::<FallibleStreamElement>().await?;
    if !offers_starttls(&features) {
        return Err(ConnectError::NoStartTls.into());
    }
    stream
        .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
            starttls::Request,
        )))
        .await?;
    loop {
        match stream
            .next()
            .await
            .map(|r| r.and_then(|e| e.into_read_error()))
        {
            Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
            Some(Ok(XmppStreamElement::Starttls(_))) => {
                return Err(ConnectError::StartTlsRefused.into());
            }
            Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => {}
            Some(Err(ReadError::HardError(e))) => return Err(e.into()),
            Some(Err(ReadError::ParseError(e))) => {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e).into());
            }
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(tokio_xmpp::Error::Disconnected);
            }
        }
    }
    Ok(stream.into_inner().into_inner())
}

/// Certificate failures say how a trusted test or LAN server can be let through.
fn with_hint(error: String) -> String {
    if error.contains("certificate") {
        format!(
            "{error} (a self-signed certificate is accepted only when the server runs with \
             --accept-invalid-certs)"
        )
    } else {
        error
    }
}

fn offers_starttls(features: &StreamFeatures) -> bool {
    features.can_starttls()
}
