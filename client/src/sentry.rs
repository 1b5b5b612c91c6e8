//! Talking to Sentry (or Sigil): TLS that accepts the server only when it presents
//! `spiffe://<cp-td>/ns/<cp-ns>/dapr-sentry` chained to the current trust anchors, with no
//! host name check (as daprd), one fresh connection per try, a per-try timeout and a
//! bounded number of tries.
//!
//! tonic's own TLS settings can only check host names, so the channel is built over a
//! custom connector: TCP, then tokio-rustls with the SPIFFE verifier below and ALPN `h2`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sigil_pki::SpiffeId;
use sigil_proto::sentry::ca_client::CaClient;
use sigil_proto::{SignCertificateRequest, SignCertificateResponse};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Endpoint, Uri};

use crate::anchors::TrustAnchors;
use crate::error::with_sources;
use crate::verify::{self, Usage};
use crate::Error;

/// Where Sentry is and how to reach it.
#[derive(Clone, Debug)]
pub struct SentryEndpoint {
    /// `host:port` (daprd: `--sentry-address`).
    pub address: String,
    /// The SPIFFE ID Sentry must present.
    pub server_id: SpiffeId,
    /// Limit for one try (connect + handshake + call). Default 3 s, as daprd.
    pub try_timeout: Duration,
    /// Tries per request before it counts as failed. Default 3.
    pub tries: u32,
}

/// Accepts the server only by its SPIFFE ID and chain; host names are not looked at.
#[derive(Debug)]
pub(crate) struct SentryVerifier {
    anchors: Arc<TrustAnchors>,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SentryVerifier {
    pub(crate) fn new(anchors: Arc<TrustAnchors>, expected: SpiffeId) -> Self {
        Self {
            anchors,
            expected,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for SentryVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let anchors = self.anchors.current();
        verify::verify_chain(&anchors, end_entity, intermediates, now, Usage::Server)
            .map_err(verify::to_rustls)?;
        let id = verify::spiffe_id_of(end_entity).map_err(verify::to_rustls)?;
        if id != self.expected {
            return Err(verify::to_rustls(verify::Refusal::Identity(format!(
                "the CA presented {id}, expected {}",
                self.expected
            ))));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Dials the fixed address and runs the TLS handshake; tonic gets an HTTP/2-ready stream.
#[derive(Clone)]
struct Connector {
    address: String,
    tls: TlsConnector,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let address = self.address.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&address).await?;
            let _ = tcp.set_nodelay(true);
            // SNI only: the certificate is checked by SPIFFE ID, never by this name.
            let host = host_of(&address);
            let name = ServerName::try_from(host.to_string()).unwrap_or_else(|_| {
                ServerName::try_from("dapr-sentry").expect("constant is a valid DNS name")
            });
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

fn host_of(address: &str) -> &str {
    let host = match address.rfind(':') {
        Some(i)
            if !address[i + 1..].is_empty()
                && address[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &address[..i]
        }
        _ => address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

fn client_config(
    anchors: Arc<TrustAnchors>,
    expected: SpiffeId,
) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SentryVerifier::new(anchors, expected)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

async fn sign_once(
    endpoint: &SentryEndpoint,
    tls: TlsConnector,
    request: SignCertificateRequest,
) -> Result<SignCertificateResponse, Error> {
    let unreachable = |reason: String| Error::Unreachable {
        addr: endpoint.address.clone(),
        reason,
    };
    let attempt = async {
        // The URI only feeds HTTP/2 pseudo-headers; the connector decides where to dial.
        let channel = Endpoint::from_shared(format!("http://{}", endpoint.address))
            .map_err(|e| Error::Config(format!("CA address {:?}: {e}", endpoint.address)))?
            .connect_with_connector(Connector {
                address: endpoint.address.clone(),
                tls,
            })
            .await
            .map_err(|e| unreachable(with_sources(&e)))?;
        let mut client = CaClient::new(channel);
        match client.sign_certificate(request).await {
            Ok(r) => Ok(r.into_inner()),
            Err(status) => Err(Error::Refused {
                code: status.code(),
                message: status.message().to_string(),
            }),
        }
    };
    match tokio::time::timeout(endpoint.try_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            addr: endpoint.address.clone(),
            timeout: endpoint.try_timeout,
        }),
    }
}

/// Sends one signing request, trying up to `endpoint.tries` times while the failure is
/// transient. Each try dials a new connection, so a changed serving certificate or trust
/// anchors are picked up at once.
pub(crate) async fn sign(
    endpoint: &SentryEndpoint,
    anchors: Arc<TrustAnchors>,
    request: SignCertificateRequest,
) -> Result<SignCertificateResponse, Error> {
    let tls = TlsConnector::from(Arc::new(client_config(
        anchors,
        endpoint.server_id.clone(),
    )?));
    let tries = endpoint.tries.max(1);
    let mut pause = Duration::from_millis(100);
    let mut n = 1;
    loop {
        match sign_once(endpoint, tls.clone(), request.clone()).await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_transient() && n < tries => {
                tracing::debug!(error = %e, attempt = n, "signing request failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_the_address() {
        assert_eq!(host_of("127.0.0.1:50001"), "127.0.0.1");
        assert_eq!(
            host_of("dapr-sentry.dapr-system.svc.cluster.local:443"),
            "dapr-sentry.dapr-system.svc.cluster.local"
        );
        assert_eq!(host_of("[::1]:50001"), "::1");
        assert_eq!(host_of("sentry"), "sentry");
    }
}
