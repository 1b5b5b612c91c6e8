//! rustls configurations that follow the [`SvidSource`]: the certificate resolvers serve
//! the current SVID on every handshake (a renewal needs no rebuild and drops no
//! connection), and the verifiers check the peer's chain against the *current* trust
//! anchors, then authorize its SPIFFE ID.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sigil_pki::{SpiffeId, TrustDomain};
use tokio::sync::watch;

use crate::anchors::TrustAnchors;
use crate::svid::Svid;
use crate::verify::{self, Refusal, Usage};
use crate::{Error, SvidSource};

/// Which peers may talk to us, by SPIFFE ID. Checked after the chain verified.
#[derive(Clone)]
pub enum PeerAuthorizer {
    /// Any ID in this trust domain.
    TrustDomain(TrustDomain),
    /// Exactly these IDs.
    OneOf(Vec<SpiffeId>),
    /// The caller decides.
    Predicate(Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>),
}

impl PeerAuthorizer {
    /// Any ID in `td`.
    pub fn trust_domain(td: TrustDomain) -> Self {
        PeerAuthorizer::TrustDomain(td)
    }

    /// Exactly these IDs.
    pub fn one_of(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        PeerAuthorizer::OneOf(ids.into_iter().collect())
    }

    /// IDs for which `f` returns true.
    pub fn predicate(f: impl Fn(&SpiffeId) -> bool + Send + Sync + 'static) -> Self {
        PeerAuthorizer::Predicate(Arc::new(f))
    }

    /// Whether `id` is allowed.
    pub fn authorize(&self, id: &SpiffeId) -> bool {
        match self {
            PeerAuthorizer::TrustDomain(td) => id.trust_domain() == td,
            PeerAuthorizer::OneOf(ids) => ids.contains(id),
            PeerAuthorizer::Predicate(f) => f(id),
        }
    }
}

impl fmt::Debug for PeerAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAuthorizer::TrustDomain(td) => write!(f, "TrustDomain({td})"),
            PeerAuthorizer::OneOf(ids) => f
                .debug_tuple("OneOf")
                .field(&ids.iter().map(|i| i.to_string()).collect::<Vec<_>>())
                .finish(),
            PeerAuthorizer::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

/// Serves whatever SVID the source holds right now.
struct CurrentSvid {
    svid: watch::Receiver<Option<Arc<Svid>>>,
}

impl CurrentSvid {
    fn key(&self) -> Option<Arc<CertifiedKey>> {
        self.svid.borrow().as_ref().map(|s| s.certified_key())
    }
}

impl fmt::Debug for CurrentSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentSvid")
    }
}

impl ResolvesServerCert for CurrentSvid {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}

impl ResolvesClientCert for CurrentSvid {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies a peer: chain to the current anchors, then SPIFFE ID authorization.
struct PeerVerifier {
    anchors: Arc<TrustAnchors>,
    authorizer: PeerAuthorizer,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("authorizer", &self.authorizer)
            .finish()
    }
}

impl PeerVerifier {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: Usage,
    ) -> Result<(), rustls::Error> {
        let anchors = self.anchors.current();
        verify::verify_chain(&anchors, end_entity, intermediates, now, usage)
            .map_err(verify::to_rustls)?;
        let id = verify::spiffe_id_of(end_entity).map_err(verify::to_rustls)?;
        if !self.authorizer.authorize(&id) {
            return Err(verify::to_rustls(Refusal::Identity(format!(
                "peer {id} is not authorized"
            ))));
        }
        Ok(())
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The anchors change at run time; our clients present their SVID regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates, now, Usage::Client)?;
        Ok(ClientCertVerified::assertion())
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

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // SPIFFE authenticates by ID; the name dialled plays no part.
        self.check(end_entity, intermediates, now, Usage::Server)?;
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

/// The SPIFFE ID of a TLS peer after the handshake (from its verified leaf).
pub fn peer_spiffe_id(peer_certificates: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = peer_certificates?.first()?;
    verify::spiffe_id_of(leaf).ok()
}

impl SvidSource {
    fn verifier(&self, authorizer: PeerAuthorizer) -> Arc<PeerVerifier> {
        Arc::new(PeerVerifier {
            anchors: self.anchors(),
            authorizer,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }

    /// A server configuration for mTLS: serves the current SVID, requires a client
    /// certificate that chains to the current anchors and whose SPIFFE ID `authorizer`
    /// allows. Set `alpn_protocols` on the result as the protocol needs.
    ///
    /// Session resumption is off (no session cache, no tickets): a resumed session would
    /// skip the certificate check, so a peer whose root was removed, whose certificate
    /// expired or that is no longer authorized could come back without being checked, and
    /// the certificate a resumed peer sees would be the one from the first handshake.
    pub fn server_config(&self, authorizer: PeerAuthorizer) -> Result<rustls::ServerConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_client_cert_verifier(self.verifier(authorizer))
            .with_cert_resolver(Arc::new(CurrentSvid {
                svid: self.svid_receiver(),
            }));
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        Ok(cfg)
    }

    /// A client configuration for mTLS: presents the current SVID and accepts a server
    /// whose chain verifies to the current anchors and whose SPIFFE ID `authorizer` allows
    /// (the server name is not checked). Session resumption is off, for the reasons given
    /// on [`SvidSource::server_config`].
    pub fn client_config(&self, authorizer: PeerAuthorizer) -> Result<rustls::ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier(authorizer))
            .with_client_cert_resolver(Arc::new(CurrentSvid {
                svid: self.svid_receiver(),
            }));
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorizers() {
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        let td = PeerAuthorizer::trust_domain("public".parse().unwrap());
        assert!(td.authorize(&id("spiffe://public/ns/a/b")));
        assert!(!td.authorize(&id("spiffe://publicx/ns/a/b")));
        let set = PeerAuthorizer::one_of([id("spiffe://public/ns/a/b")]);
        assert!(set.authorize(&id("spiffe://public/ns/a/b")));
        assert!(!set.authorize(&id("spiffe://public/ns/a/c")));
        let pred = PeerAuthorizer::predicate(|i| i.path().starts_with("/ns/prod/"));
        assert!(pred.authorize(&id("spiffe://x/ns/prod/b")));
        assert!(!pred.authorize(&id("spiffe://x/ns/dev/b")));
        assert_eq!(format!("{pred:?}"), "Predicate(..)");
    }
}
