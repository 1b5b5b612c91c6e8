//! The TLS settings of every listener that speaks TLS, side by side, so that what differs
//! between them is visible in one screen.
//!
//! - [`Profile::Grpc`], the Sentry port: daprd and other gRPC clients, a fresh handshake per
//!   sidecar request. Cipher suites ordered by handshake cost, ALPN `h2` only, no session
//!   resumption.
//! - [`Profile::Https`], the OIDC discovery port: any HTTP client (browsers, cloud
//!   federation), rustls' defaults, ALPN `http/1.1`.
//!
//! Both take their certificate from a resolver, so a renewed certificate is served without
//! a restart.

use std::sync::Arc;

use rustls::server::ResolvesServerCert;
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// Which kind of listener a TLS configuration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// The gRPC (Sentry) port.
    Grpc,
    /// The OIDC discovery port.
    Https,
}

/// A TLS acceptor for `profile`, with its certificate from `certificate`.
pub fn acceptor(
    certificate: Arc<dyn ResolvesServerCert>,
    profile: Profile,
) -> Result<TlsAcceptor, Error> {
    Ok(TlsAcceptor::from(Arc::new(server_config(
        certificate,
        profile,
    )?)))
}

fn server_config(
    certificate: Arc<dyn ResolvesServerCert>,
    profile: Profile,
) -> Result<rustls::ServerConfig, Error> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut provider = rustls::crypto::ring::default_provider();
    if profile == Profile::Grpc {
        // Every daprd request is a fresh handshake, so handshake cost matters. SHA-256
        // suites come first: their key schedule is markedly cheaper than SHA-384's
        // (profiled), and AES-128-GCM is as safe for this use. All suites are AEAD with
        // forward secrecy.
        provider.cipher_suites = vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ];
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS ({profile:?}): {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    match profile {
        Profile::Grpc => {
            // gRPC clients (grpc-go in daprd among them) require ALPN h2.
            cfg.alpn_protocols = vec![b"h2".to_vec()];
            // No session resumption. daprd never resumes (grpc-go keeps no session cache),
            // so the two tickets rustls issues per handshake were pure cost; and a resumed
            // session would let a client skip checking the serving certificate against the
            // anchors it holds now, after a root rotation for instance. It also keeps the
            // load generator's new-connection runs honest: every one is a full handshake,
            // as daprd's are.
            cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            cfg.send_tls13_tickets = 0;
            cfg.ignore_client_order = true;
        }
        Profile::Https => cfg.alpn_protocols = vec![b"http/1.1".to_vec()],
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct NoCertificate;

    impl ResolvesServerCert for NoCertificate {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }

    #[test]
    fn the_two_profiles_differ_only_where_their_clients_do() {
        let grpc = server_config(Arc::new(NoCertificate), Profile::Grpc).unwrap();
        let https = server_config(Arc::new(NoCertificate), Profile::Https).unwrap();
        assert_eq!(grpc.alpn_protocols, vec![b"h2".to_vec()]);
        assert_eq!(https.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(grpc.send_tls13_tickets, 0);
        assert!(https.send_tls13_tickets > 0);
        assert!(grpc.ignore_client_order && !https.ignore_client_order);
        let first = grpc.crypto_provider().cipher_suites[0].suite();
        assert_eq!(first, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert!(grpc
            .crypto_provider()
            .cipher_suites
            .iter()
            .all(|s| https.crypto_provider().cipher_suites.contains(s)));
    }
}
