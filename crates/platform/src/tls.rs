//! TLS for platforms that open their own sockets (IRC, XMPP).
//!
//! One place decides how a platform trusts a server: the system's roots through
//! `rustls-platform-verifier` (the verifier reqwest uses for the HTTP platforms), or —
//! only when the operator opts in with `switchboard serve --accept-invalid-certs` — any
//! certificate, for self-signed test and LAN servers. The opt-in reaches a worker as the
//! `accept_invalid_certs` setting; read it with [`accept_invalid_certs`].

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
pub use tokio_rustls::client::TlsStream;

use crate::{PlatformError, WorkerContext};

/// Whether the operator allowed self-signed / invalid server certificates.
pub fn accept_invalid_certs(ctx: &WorkerContext) -> bool {
    ctx.setting("accept_invalid_certs")
}

/// A client configuration: verified against the system's roots, or accepting any
/// certificate when `accept_invalid_certs` (the handshake signatures are still checked).
///
/// Built once per process: loading the system's roots reads and parses every certificate
/// in the system's store (about 0.4 MB of heap while it runs, 0.12 MB kept), which a
/// worker's reconnects should not pay again.
pub fn client_config(accept_invalid_certs: bool) -> Result<Arc<ClientConfig>, PlatformError> {
    static VERIFIED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    static UNVERIFIED: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let cache = if accept_invalid_certs {
        &UNVERIFIED
    } else {
        &VERIFIED
    };
    if let Some(config) = cache.get() {
        return Ok(config.clone());
    }
    // A failure is not cached: the next connect tries again.
    let config = build_config(accept_invalid_certs)?;
    Ok(cache.get_or_init(|| config).clone())
}

fn build_config(accept_invalid_certs: bool) -> Result<Arc<ClientConfig>, PlatformError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PlatformError::new(format!("TLS setup failed: {e}")))?;
    let config = if accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| PlatformError::new(format!("TLS setup failed: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Run a TLS client handshake over `stream` for `host`.
pub async fn connect<S>(
    config: Arc<ClientConfig>,
    host: &str,
    stream: S,
) -> Result<TlsStream<S>, PlatformError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| PlatformError::new(format!("invalid TLS server name {host:?}")))?;
    TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|e| PlatformError::new(format!("TLS handshake with {host} failed: {e}")))
}

/// Accepts any certificate chain; used only under the explicit opt-in.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
