//! Sentry's own TLS certificate: `spiffe://<td>/ns/<ns>/dapr-sentry`, issued in memory by
//! the current issuer (daprd pins exactly that ID), renewed at half its life and whenever
//! the CA changes. The rustls resolver reads the current certificate on every handshake,
//! so renewal never restarts the listener or drops connections.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sigil_pki::issue::LeafExtras;
use sigil_pki::{Authority, Clock, SpiffeId, ValidatedCsr};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::config::{Config, Mode};
use crate::observe::{Metrics, ReasonLabel};
use crate::rotation::CaState;
use crate::Error;

/// Identity and names the serving certificate carries.
#[derive(Clone, Debug)]
pub struct ServingIdentity {
    /// Sentry's SPIFFE ID.
    pub id: SpiffeId,
    /// DNS names for ordinary gRPC tooling that checks host names.
    pub dns_names: Vec<String>,
}

impl ServingIdentity {
    /// From the configuration: the Service names, and `localhost` when standalone.
    pub fn from_config(config: &Config) -> Self {
        let ns = config.namespace.as_str();
        let mut dns_names = vec![
            "dapr-sentry".to_string(),
            format!("dapr-sentry.{ns}.svc"),
            format!("dapr-sentry.{ns}.svc.{}", config.cluster_domain),
        ];
        if config.mode == Mode::Standalone {
            dns_names.push("localhost".into());
        }
        Self {
            id: config.sentry_id(),
            dns_names,
        }
    }
}

/// A certificate with its validity window.
#[derive(Debug, Clone)]
pub struct Issued {
    /// What rustls serves: Ed25519, as Dapr Sentry (daprd and Dapr's suite expect it).
    pub key: Arc<CertifiedKey>,
    /// The same identity with a P-256 key, for clients that do not offer Ed25519 signatures
    /// (BoringSSL, so gRPC's C core and its Python and C++ clients).
    pub fallback: Arc<CertifiedKey>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// Issues the serving certificate twice: with a fresh Ed25519 key
/// (Dapr Sentry's choice; also the cheapest handshake signature) and with a fresh P-256 key
/// for clients that cannot verify Ed25519. Both carry the same identity and window.
pub fn issue(
    authority: &Authority,
    identity: &ServingIdentity,
    policy: &sigil_pki::IssuePolicy,
    now: OffsetDateTime,
) -> Result<Issued, Error> {
    let (key, not_before, not_after) =
        issue_with(authority, identity, policy, now, &rcgen::PKCS_ED25519)?;
    let (fallback, _, _) = issue_with(
        authority,
        identity,
        policy,
        now,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    )?;
    Ok(Issued {
        key,
        fallback,
        not_before,
        not_after,
    })
}

fn issue_with(
    authority: &Authority,
    identity: &ServingIdentity,
    policy: &sigil_pki::IssuePolicy,
    now: OffsetDateTime,
    alg: &'static rcgen::SignatureAlgorithm,
) -> Result<(Arc<CertifiedKey>, OffsetDateTime, OffsetDateTime), Error> {
    let key = KeyPair::generate_for(alg)
        .map_err(|e| Error::Signing(sigil_pki::Error::Signing(e.to_string())))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr_der = params
        .serialize_request(&key)
        .map_err(|e| Error::Signing(sigil_pki::Error::Signing(e.to_string())))?;
    let csr = ValidatedCsr::from_der(csr_der.der()).map_err(Error::Signing)?;
    let extras = LeafExtras {
        dns_names: identity.dns_names.clone(),
        container_images_json: None,
    };
    let leaf = authority
        .issue(&csr, &identity.id, &extras, policy, now)
        .map_err(Error::Signing)?;
    let mut chain = vec![CertificateDer::from(leaf.leaf_der)];
    chain.extend(
        authority
            .chain_der()
            .iter()
            .map(|d| CertificateDer::from(d.clone())),
    );
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| Error::Signing(sigil_pki::Error::Signing(e.to_string())))?;
    Ok((
        Arc::new(CertifiedKey::new(chain, signing_key)),
        leaf.not_before,
        leaf.not_after,
    ))
}

/// The rustls resolver: always the current serving certificate.
#[derive(Debug)]
pub struct ServingCert {
    current: RwLock<Issued>,
}

impl ServingCert {
    /// Starts with `issued`.
    pub fn new(issued: Issued) -> Self {
        Self {
            current: RwLock::new(issued),
        }
    }

    /// The certificate in use.
    pub fn current(&self) -> Issued {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, issued: Issued) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = issued;
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        let ed25519 = hello
            .signature_schemes()
            .contains(&rustls::SignatureScheme::ED25519);
        Some(if ed25519 {
            current.key.clone()
        } else {
            current.fallback.clone()
        })
    }
}

/// When to renew: half way through the certificate's life.
pub fn renew_at(issued: &Issued) -> OffsetDateTime {
    issued.not_before + (issued.not_after - issued.not_before) / 2
}

/// Keeps the serving certificate fresh: renews at half life and on every CA change; on
/// failure, counts it and retries every 10 seconds while the old certificate keeps serving.
#[allow(clippy::too_many_arguments)]
pub async fn keep_fresh(
    serving: Arc<ServingCert>,
    state: Arc<CaState>,
    identity: ServingIdentity,
    policy: sigil_pki::IssuePolicy,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ca_changes = state.subscribe();
    let mut retry: Option<Duration> = None;
    loop {
        let wait = retry.unwrap_or_else(|| {
            let left = renew_at(&serving.current()) - clock.now();
            Duration::try_from(left).unwrap_or(Duration::ZERO)
        });
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = ca_changes.changed() => { if r.is_err() { return; } }
            _ = shutdown.changed() => return,
        }
        match issue(&state.current(), &identity, &policy, clock.now()) {
            Ok(issued) => {
                tracing::info!(not_after = %issued.not_after, "renewed the server certificate");
                serving.set(issued);
                retry = None;
            }
            Err(e) => {
                metrics
                    .servercert_failed
                    .get_or_create(&ReasonLabel {
                        reason: e.reason().into(),
                    })
                    .inc();
                tracing::error!(error = %e, "could not renew the server certificate; retrying in 10s");
                retry = Some(Duration::from_secs(10));
            }
        }
    }
}
