//! CA material: the trust anchors, the issuer chain and the issuer key, checked as a whole.
//!
//! An [`Authority`] only exists once the material passed every check, so the signing path
//! never has to wonder whether its issuer is usable. The checks, in order, each with its own
//! [`Error`] variant: every anchor is a self-signed CA; the issuer chain (a trailing root is
//! dropped, as Dapr does) is free of loops; every chain certificate is a CA allowed to sign
//! certificates; each link verifies; the top of the chain verifies against one of the
//! anchors; path length constraints hold; the key belongs to the issuer certificate; and
//! every certificate on the path is valid now. Anything expiring within
//! [`EXPIRY_WARNING_DAYS`] is reported by [`Authority::expiry_warnings`] rather than refused.

use std::fmt;

use ::time::{Duration, OffsetDateTime};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose,
    PublicKeyData, SerialNumber, SignatureAlgorithm, SigningKey,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::*;
use zeroize::Zeroizing;

use crate::bundle::TrustBundle;
use crate::inspect::{ca_check, path_len, self_signed_check, subject_of, time_of, validity_check};
use crate::keys::{KeyType, PrivateKey};
use crate::pem_bundle;
use crate::spiffe::{Namespace, TrustDomain};
use crate::Error;

/// Expiry closer than this many days is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// Longest issuer chain accepted (issuer plus intermediates).
pub const MAX_CHAIN_LEN: usize = 8;

/// The three PEM files of a CA, as Dapr names them.
#[derive(Clone)]
pub struct CaFiles {
    /// `ca.crt`: the trust anchors (one or more roots).
    pub ca_crt: Vec<u8>,
    /// `issuer.crt`: the issuer certificate, then any intermediates (a trailing root is allowed).
    pub issuer_crt: Vec<u8>,
    /// `issuer.key`: the issuer's private key; wiped on drop.
    pub issuer_key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFiles")
            .field("ca_crt", &format_args!("{} bytes", self.ca_crt.len()))
            .field(
                "issuer_crt",
                &format_args!("{} bytes", self.issuer_crt.len()),
            )
            .field("issuer_key", &"<redacted>")
            .finish()
    }
}

/// How to generate a new CA.
#[derive(Clone, Debug)]
pub struct CaParams {
    /// Trust domain, written as the root's organisation.
    pub trust_domain: TrustDomain,
    /// Namespace of the CA itself, part of the issuer's subject
    /// (`spiffe://<td>/ns/<ns>/dapr-sentry`).
    pub namespace: Namespace,
    /// Algorithm of the root and issuer keys.
    pub key_type: KeyType,
    /// Root lifetime (Dapr: 365 days).
    pub root_ttl: Duration,
    /// Issuer lifetime (Dapr: 365 days).
    pub issuer_ttl: Duration,
    /// Backdating of NotBefore (Dapr: 15 minutes).
    pub clock_skew: Duration,
}

impl CaParams {
    /// Dapr's defaults for a trust domain and namespace.
    pub fn new(trust_domain: TrustDomain, namespace: Namespace) -> Self {
        Self {
            trust_domain,
            namespace,
            key_type: KeyType::Ed25519,
            root_ttl: Duration::days(365),
            issuer_ttl: Duration::days(365),
            clock_skew: Duration::minutes(15),
        }
    }
}

/// A certificate that will expire soon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiryWarning {
    /// "root" or "issuer" or "intermediate".
    pub role: &'static str,
    /// Subject of the certificate.
    pub subject: String,
    /// When it expires.
    pub not_after: OffsetDateTime,
    /// Whole days left.
    pub days_left: i64,
}

impl fmt::Display for ExpiryWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} expires in {} days (at {})",
            self.role, self.subject, self.days_left, self.not_after
        )
    }
}

impl SigningKey for PrivateKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key_pair().sign(msg)
    }
}

impl PublicKeyData for PrivateKey {
    fn der_bytes(&self) -> &[u8] {
        self.key_pair().der_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.key_pair().algorithm()
    }
}

/// Checked CA material, ready to sign.
pub struct Authority {
    pub(crate) anchors: TrustBundle,
    /// Issuer first, then intermediates; never the root.
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) chain_pem: String,
    /// The anchors as one PEM blob, encoded once: every response carries it.
    pub(crate) anchors_pem: String,
    pub(crate) issuer: rcgen::Issuer<'static, PrivateKey>,
    pub(crate) issuer_subject: String,
    /// Every certificate on the path with its role, for expiry reporting.
    pub(crate) path: Vec<(&'static str, String, OffsetDateTime, OffsetDateTime)>,
    /// The window in which every certificate on the path is valid.
    pub(crate) valid_from: OffsetDateTime,
    pub(crate) valid_until: OffsetDateTime,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("issuer", &self.issuer_subject)
            .field("anchors", &self.anchors.subjects())
            .field("valid_until", &self.valid_until)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn random_serial() -> Result<SerialNumber, Error> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Signing("system random number generator failed".into()))?;
    // Positive, and a non-zero top byte keeps the DER encoding at exactly 16 octets.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Signs a Dapr-shaped issuer certificate (subject `O=spiffe://<td>/ns/<ns>/dapr-sentry`,
/// CA with path length 0, keyCertSign + cRLSign) with `root`.
fn issue_issuer(
    root: &rcgen::Issuer<'_, impl SigningKey>,
    root_not_after: OffsetDateTime,
    params: &CaParams,
    now: OffsetDateTime,
) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), Error> {
    let issuer_key = PrivateKey::generate(params.key_type)?;
    let mut issuer = CertificateParams::default();
    issuer.distinguished_name = DistinguishedName::new();
    issuer.distinguished_name.push(
        DnType::OrganizationName,
        format!(
            "spiffe://{}/ns/{}/dapr-sentry",
            params.trust_domain, params.namespace
        ),
    );
    issuer.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    issuer.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    issuer.not_before = earlier(now, params.clock_skew)?;
    issuer.not_after = later(now, params.issuer_ttl)?.min(root_not_after);
    issuer.serial_number = Some(random_serial()?);
    issuer.use_authority_key_identifier_extension = true;
    let cert = issuer
        .signed_by(&issuer_key, root)
        .map_err(|e| Error::Signing(e.to_string()))?;
    Ok((
        cert.pem().into_bytes(),
        Zeroizing::new(issuer_key.to_pem().as_bytes().to_vec()),
    ))
}

pub(crate) fn serial() -> Result<SerialNumber, Error> {
    random_serial()
}

/// `now + d`, or an error when that leaves the representable range (a lifetime of
/// centuries on a clock near the end of time): never a panic.
pub(crate) fn later(now: OffsetDateTime, d: Duration) -> Result<OffsetDateTime, Error> {
    now.checked_add(d)
        .ok_or_else(|| Error::InvalidTtl(format!("{d} from {now} is out of range")))
}

/// `now - d`, with the same guarantee.
pub(crate) fn earlier(now: OffsetDateTime, d: Duration) -> Result<OffsetDateTime, Error> {
    now.checked_sub(d)
        .ok_or_else(|| Error::InvalidTtl(format!("{d} before {now} is out of range")))
}

impl Authority {
    /// Generates a root and an issuer as Dapr Sentry does and returns their files. The root
    /// key is discarded: only `ca.crt`, `issuer.crt` and `issuer.key` exist afterwards.
    pub fn generate(params: &CaParams, now: OffsetDateTime) -> Result<CaFiles, Error> {
        Self::generate_keeping_root(params, now).map(|(files, _)| files)
    }

    /// Like [`Authority::generate`], but also returns the root key (PKCS#8 PEM), for operators
    /// who want to issue later issuers under the same root ([`Authority::new_issuer`]).
    pub fn generate_keeping_root(
        params: &CaParams,
        now: OffsetDateTime,
    ) -> Result<(CaFiles, Zeroizing<String>), Error> {
        if params.root_ttl <= Duration::ZERO || params.issuer_ttl <= Duration::ZERO {
            return Err(Error::InvalidTtl("CA lifetimes must be positive".into()));
        }
        let root_key = PrivateKey::generate(params.key_type)?;
        let mut root = CertificateParams::default();
        root.distinguished_name = DistinguishedName::new();
        root.distinguished_name
            .push(DnType::OrganizationName, params.trust_domain.as_str());
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
        root.not_before = earlier(now, params.clock_skew)?;
        root.not_after = later(now, params.root_ttl)?;
        root.serial_number = Some(random_serial()?);
        let root_cert = root
            .self_signed(&root_key)
            .map_err(|e| Error::Signing(e.to_string()))?;
        let root_issuer = rcgen::Issuer::new(root, &root_key);
        let (issuer_crt, issuer_key) =
            issue_issuer(&root_issuer, later(now, params.root_ttl)?, params, now)?;
        Ok((
            CaFiles {
                ca_crt: root_cert.pem().into_bytes(),
                issuer_crt,
                issuer_key,
            },
            root_key.to_pem(),
        ))
    }

    /// A new issuer (certificate PEM, key PEM) under an existing root, for issuer rotation.
    /// The root must be a self-signed CA and `root_key` its key; the issuer never outlives it.
    pub fn new_issuer(
        root_pem: &[u8],
        root_key: &PrivateKey,
        params: &CaParams,
        now: OffsetDateTime,
    ) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>), Error> {
        if params.issuer_ttl <= Duration::ZERO {
            return Err(Error::InvalidTtl("issuer lifetime must be positive".into()));
        }
        let roots = pem_bundle::parse_certificates("root certificate", root_pem)?;
        let [root_der] = roots.as_slice() else {
            return Err(Error::Pem {
                what: "root certificate",
                reason: format!("expected exactly one certificate, found {}", roots.len()),
            });
        };
        let (_, root) =
            X509Certificate::from_der(root_der).map_err(|e| Error::CertificateMalformed {
                what: "root certificate",
                index: 1,
                reason: e.to_string(),
            })?;
        self_signed_check(&root)?;
        validity_check("root", &root, now)?;
        if root_key.public_key_raw() != root.public_key().subject_public_key.data.as_ref() {
            return Err(Error::KeyMismatch {
                subject: subject_of(&root),
            });
        }
        let root_not_after = time_of(root.validity().not_after);
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(root_der.clone()), root_key)
                .map_err(|e| Error::CertificateMalformed {
                    what: "root certificate",
                    index: 1,
                    reason: e.to_string(),
                })?;
        issue_issuer(&issuer, root_not_after, params, now)
    }

    /// Loads and checks CA material. See the module docs for the checks and their order.
    pub fn load(files: &CaFiles, now: OffsetDateTime) -> Result<Self, Error> {
        let anchors = TrustBundle::from_pem(&files.ca_crt)?;
        let mut chain =
            pem_bundle::parse_certificates("issuer chain (issuer.crt)", &files.issuer_crt)?;
        let key = PrivateKey::from_pem(&files.issuer_key)?;

        // A trailing self-signed certificate is the root; Dapr drops it, so do we.
        if chain.len() > 1 {
            let last = chain.last().expect("len > 1");
            let (_, c) =
                X509Certificate::from_der(last).map_err(|e| Error::CertificateMalformed {
                    what: "issuer chain (issuer.crt)",
                    index: chain.len(),
                    reason: e.to_string(),
                })?;
            if c.subject().as_raw() == c.issuer().as_raw() && c.verify_signature(None).is_ok() {
                chain.pop();
            }
        }
        if chain.len() > MAX_CHAIN_LEN {
            return Err(Error::ChainShape(format!(
                "{} certificates; at most {MAX_CHAIN_LEN} are accepted",
                chain.len()
            )));
        }
        for (i, der) in chain.iter().enumerate() {
            if chain[..i].contains(der) {
                return Err(Error::ChainShape(format!(
                    "certificate #{} appears twice (a loop)",
                    i + 1
                )));
            }
        }
        let parsed: Vec<X509Certificate<'_>> = chain
            .iter()
            .map(|d| X509Certificate::from_der(d).map(|(_, c)| c))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::CertificateMalformed {
                what: "issuer chain (issuer.crt)",
                index: 0,
                reason: e.to_string(),
            })?;
        let issuer_cert = &parsed[0];
        if issuer_cert.subject().as_raw() == issuer_cert.issuer().as_raw()
            && issuer_cert.verify_signature(None).is_ok()
        {
            return Err(Error::ChainShape(
                "issuer.crt holds only a self-signed root; Sigil needs an issuer signed by it (run `sigil ca init` to make one)".into(),
            ));
        }
        for cert in &parsed {
            ca_check(cert)?;
        }
        for pair in parsed.windows(2) {
            let (child, parent) = (&pair[0], &pair[1]);
            if child.issuer().as_raw() != parent.subject().as_raw()
                || child.verify_signature(Some(parent.public_key())).is_err()
            {
                return Err(Error::ChainBroken {
                    subject: subject_of(child),
                    issuer: subject_of(parent),
                });
            }
        }
        let top = parsed.last().expect("chain is not empty");
        let anchor_der = anchors
            .roots()
            .iter()
            .find(|r| {
                X509Certificate::from_der(r).is_ok_and(|(_, root)| {
                    top.issuer().as_raw() == root.subject().as_raw()
                        && top.verify_signature(Some(root.public_key())).is_ok()
                })
            })
            .ok_or_else(|| Error::UnknownRoot {
                subject: subject_of(top),
                issuer: top.issuer().to_string(),
            })?;
        let (_, anchor) = X509Certificate::from_der(anchor_der).expect("checked by TrustBundle");

        // Path length: a CA with pathLenConstraint n may have at most n CAs below it.
        for (i, cert) in parsed.iter().enumerate() {
            if path_len(cert).is_some_and(|n| (n as usize) < i) {
                return Err(Error::PathLength {
                    subject: subject_of(cert),
                });
            }
        }
        if path_len(&anchor).is_some_and(|n| (n as usize) < parsed.len()) {
            return Err(Error::PathLength {
                subject: subject_of(&anchor),
            });
        }

        if key.public_key_raw() != issuer_cert.public_key().subject_public_key.data.as_ref() {
            return Err(Error::KeyMismatch {
                subject: subject_of(issuer_cert),
            });
        }

        let mut path = Vec::new();
        for (i, cert) in parsed.iter().enumerate() {
            let role = if i == 0 { "issuer" } else { "intermediate" };
            validity_check(role, cert, now)?;
            path.push((
                role,
                subject_of(cert),
                time_of(cert.validity().not_before),
                time_of(cert.validity().not_after),
            ));
        }
        validity_check("root", &anchor, now)?;
        path.push((
            "root",
            subject_of(&anchor),
            time_of(anchor.validity().not_before),
            time_of(anchor.validity().not_after),
        ));
        let valid_from = path.iter().map(|p| p.2).max().expect("path is not empty");
        let valid_until = path.iter().map(|p| p.3).min().expect("path is not empty");
        let issuer_subject = subject_of(issuer_cert);

        let issuer_der = CertificateDer::from(chain[0].clone());
        let issuer = rcgen::Issuer::from_ca_cert_der(&issuer_der, key).map_err(|e| {
            Error::CertificateMalformed {
                what: "issuer certificate",
                index: 1,
                reason: e.to_string(),
            }
        })?;
        drop(parsed);
        let chain_pem = pem_bundle::to_pem(&chain);
        Ok(Self {
            anchors_pem: anchors.to_pem(),
            anchors,
            chain,
            chain_pem,
            issuer,
            issuer_subject,
            path,
            valid_from,
            valid_until,
        })
    }

    /// Certificates that expire within [`EXPIRY_WARNING_DAYS`] of `now`, including other roots
    /// in the trust bundle.
    pub fn expiry_warnings(&self, now: OffsetDateTime) -> Vec<ExpiryWarning> {
        let mut out: Vec<ExpiryWarning> = self
            .path
            .iter()
            .map(|(role, subject, _, na)| (*role, subject.clone(), *na))
            .chain(self.anchors.roots().iter().filter_map(|d| {
                let (_, c) = X509Certificate::from_der(d).ok()?;
                Some(("root", subject_of(&c), time_of(c.validity().not_after)))
            }))
            .filter(|(_, _, na)| *na - now < Duration::days(EXPIRY_WARNING_DAYS))
            .map(|(role, subject, not_after)| ExpiryWarning {
                role,
                subject,
                not_after,
                days_left: (not_after - now).whole_days(),
            })
            .collect();
        out.dedup();
        out
    }

    /// Expiry of every certificate on the signing path and every anchor, as
    /// (role, subject, not_after), for metrics.
    pub fn expiries(&self) -> Vec<(&'static str, String, OffsetDateTime)> {
        let mut out: Vec<_> = self
            .path
            .iter()
            .filter(|p| p.0 != "root")
            .map(|(r, s, _, na)| (*r, s.clone(), *na))
            .collect();
        for d in self.anchors.roots() {
            if let Ok((_, c)) = X509Certificate::from_der(d) {
                out.push(("root", subject_of(&c), time_of(c.validity().not_after)));
            }
        }
        out
    }

    /// The trust anchors.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.anchors
    }

    /// All trust anchors as one PEM blob (Dapr's `trust_chain_certificates` element).
    pub fn anchors_pem(&self) -> &str {
        &self.anchors_pem
    }

    /// Issuer chain PEM (issuer first, no root).
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// Issuer chain, DER, issuer first, no root.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// Subject of the issuer certificate.
    pub fn issuer_subject(&self) -> &str {
        &self.issuer_subject
    }

    /// Algorithm of the issuer key.
    pub fn key_type(&self) -> KeyType {
        self.issuer.key().key_type()
    }

    /// The last moment at which every certificate on the path is still valid.
    pub fn valid_until(&self) -> OffsetDateTime {
        self.valid_until
    }

    /// The first moment at which every certificate on the path is valid.
    pub fn valid_from(&self) -> OffsetDateTime {
        self.valid_from
    }
}

/// What `sigil ca inspect` shows about one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Public key algorithm.
    pub key_type: String,
    /// URI SANs (SPIFFE IDs).
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Is a CA.
    pub is_ca: bool,
    /// Issuer equals subject and the signature verifies with its own key.
    pub self_signed: bool,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl CertSummary {
    /// Summarises a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let (_, c) = X509Certificate::from_der(der).map_err(|e| Error::CertificateMalformed {
            what: "certificate",
            index: 1,
            reason: e.to_string(),
        })?;
        let mut uris = Vec::new();
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = c.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => dns_names.push((*d).to_owned()),
                    _ => {}
                }
            }
        }
        let spki = c.public_key();
        let key_type = match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(r)) => format!("rsa-{}", r.key_size()),
            Ok(x509_parser::public_key::PublicKey::EC(_)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok());
                match curve {
                    Some(o) if o == x509_parser::oid_registry::OID_EC_P256 => "ecdsa-p256".into(),
                    Some(o) if o == x509_parser::oid_registry::OID_NIST_EC_P384 => {
                        "ecdsa-p384".into()
                    }
                    Some(o) => format!("ecdsa-{}", o.to_id_string()),
                    None => "ecdsa".into(),
                }
            }
            _ if spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519 => {
                "ed25519".into()
            }
            _ => spki.algorithm.algorithm.to_id_string(),
        };
        Ok(Self {
            subject: subject_of(&c),
            issuer: c.issuer().to_string(),
            serial: c.raw_serial_as_string(),
            key_type,
            uris,
            dns_names,
            is_ca: c.is_ca(),
            self_signed: c.subject().as_raw() == c.issuer().as_raw()
                && c.verify_signature(None).is_ok(),
            not_before: time_of(c.validity().not_before),
            not_after: time_of(c.validity().not_after),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    pub(crate) fn params() -> CaParams {
        CaParams::new(
            TrustDomain::new("public").unwrap(),
            Namespace::new("default").unwrap(),
        )
    }

    pub(crate) fn generated() -> (CaFiles, Authority) {
        let files = Authority::generate(&params(), now()).unwrap();
        let auth = Authority::load(&files, now()).unwrap();
        (files, auth)
    }

    /// A CA certificate (or not) with the given parameters, signed by `signer` or self-signed.
    pub(crate) fn make_cert(
        dn: &str,
        is_ca: IsCa,
        usages: Vec<KeyUsagePurpose>,
        validity: (OffsetDateTime, OffsetDateTime),
        key: &PrivateKey,
        signer: Option<(&CertificateParams, &PrivateKey)>,
    ) -> (CertificateParams, Vec<u8>) {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, dn);
        p.is_ca = is_ca;
        p.key_usages = usages;
        p.not_before = validity.0;
        p.not_after = validity.1;
        let cert = match signer {
            None => p.self_signed(key).unwrap(),
            Some((sp, sk)) => {
                p.use_authority_key_identifier_extension = true;
                p.signed_by(key, &rcgen::Issuer::from_params(sp, sk))
                    .unwrap()
            }
        };
        (p, cert.der().to_vec())
    }

    fn files(anchors: &[&[u8]], chain: &[&[u8]], key: &PrivateKey) -> CaFiles {
        CaFiles {
            ca_crt: pem_bundle::to_pem(anchors).into_bytes(),
            issuer_crt: pem_bundle::to_pem(chain).into_bytes(),
            issuer_key: Zeroizing::new(key.to_pem().as_bytes().to_vec()),
        }
    }

    fn ca_usages() -> Vec<KeyUsagePurpose> {
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
    }

    fn year() -> (OffsetDateTime, OffsetDateTime) {
        (now() - Duration::hours(1), now() + Duration::days(365))
    }

    struct Pki {
        root_p: CertificateParams,
        root_key: PrivateKey,
        root: Vec<u8>,
    }

    fn root() -> Pki {
        let root_key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let (root_p, root) = make_cert(
            "root",
            IsCa::Ca(BasicConstraints::Unconstrained),
            ca_usages(),
            year(),
            &root_key,
            None,
        );
        Pki {
            root_p,
            root_key,
            root,
        }
    }

    fn issuer_under(
        pki: &Pki,
        is_ca: IsCa,
        usages: Vec<KeyUsagePurpose>,
        validity: (OffsetDateTime, OffsetDateTime),
    ) -> (PrivateKey, Vec<u8>) {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let (_, der) = make_cert(
            "issuer",
            is_ca,
            usages,
            validity,
            &key,
            Some((&pki.root_p, &pki.root_key)),
        );
        (key, der)
    }

    #[test]
    fn generated_material_matches_dapr_shape() {
        let (files, auth) = generated();
        let root = CertSummary::from_der(&auth.anchors.roots()[0]).unwrap();
        assert_eq!(root.subject, "O=public");
        assert!(root.is_ca && root.self_signed);
        assert_eq!(root.key_type, "ed25519");
        let issuer = CertSummary::from_der(&auth.chain[0]).unwrap();
        assert_eq!(issuer.subject, "O=spiffe://public/ns/default/dapr-sentry");
        assert_eq!(issuer.issuer, "O=public");
        assert!(issuer.is_ca && !issuer.self_signed);
        let days = (issuer.not_after - issuer.not_before).whole_days();
        assert_eq!(days, 365, "365 days plus the 15 min backdating");
        assert!(issuer.not_before < now() - Duration::minutes(14));
        assert!(String::from_utf8(files.issuer_key.to_vec())
            .unwrap()
            .contains("BEGIN PRIVATE KEY"));
        assert!(auth.expiry_warnings(now()).is_empty());
        assert!(format!("{auth:?}").contains("<redacted>"));
        assert!(format!("{files:?}").contains("<redacted>"));
    }

    #[test]
    fn every_ca_key_type_generates_and_loads() {
        for kt in [KeyType::Ed25519, KeyType::EcdsaP256, KeyType::EcdsaP384] {
            let mut p = params();
            p.key_type = kt;
            let f = Authority::generate(&p, now()).unwrap();
            let a = Authority::load(&f, now()).unwrap();
            assert_eq!(a.key_type(), kt);
        }
    }

    #[test]
    fn trailing_root_in_issuer_file_is_dropped() {
        let (mut f, _) = generated();
        let mut chain = f.issuer_crt.clone();
        chain.extend_from_slice(&f.ca_crt);
        f.issuer_crt = chain;
        let a = Authority::load(&f, now()).unwrap();
        assert_eq!(a.chain_der().len(), 1);
    }

    #[test]
    fn mismatched_key_is_refused() {
        let (mut f, _) = generated();
        let (other, _) = generated();
        f.issuer_key = other.issuer_key.clone();
        assert!(matches!(
            Authority::load(&f, now()),
            Err(Error::KeyMismatch { .. })
        ));
    }

    #[test]
    fn chain_to_another_root_is_refused() {
        let (mut f, _) = generated();
        let (other, _) = generated();
        f.ca_crt = other.ca_crt.clone();
        let e = Authority::load(&f, now()).unwrap_err();
        assert!(matches!(e, Error::UnknownRoot { .. }), "{e}");
    }

    #[test]
    fn expired_and_future_material_is_refused() {
        let (f, _) = generated();
        let later = now() + Duration::days(400);
        assert!(matches!(
            Authority::load(&f, later),
            Err(Error::Expired { what: "issuer", .. })
        ));
        let earlier = now() - Duration::days(1);
        assert!(matches!(
            Authority::load(&f, earlier),
            Err(Error::NotYetValid { .. })
        ));
    }

    #[test]
    fn expiry_within_30_days_is_a_warning() {
        let (f, _) = generated();
        let at = now() + Duration::days(350);
        let a = Authority::load(&f, at).unwrap();
        let w = a.expiry_warnings(at);
        assert!(
            w.iter().any(|w| w.role == "issuer" && w.days_left <= 15),
            "{w:?}"
        );
        assert!(w.iter().any(|w| w.role == "root"), "{w:?}");
    }

    #[test]
    fn issuer_that_is_not_a_ca_is_refused() {
        let pki = root();
        let (key, der) = issuer_under(
            &pki,
            IsCa::ExplicitNoCa,
            vec![KeyUsagePurpose::DigitalSignature],
            year(),
        );
        let e = Authority::load(&files(&[&pki.root], &[&der], &key), now()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::NotACa {
                    reason: "basicConstraints says CA:FALSE",
                    ..
                }
            ),
            "{e}"
        );
        let (key, der) = issuer_under(&pki, IsCa::NoCa, vec![], year());
        let e = Authority::load(&files(&[&pki.root], &[&der], &key), now()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::NotACa {
                    reason: "it has no basicConstraints extension",
                    ..
                }
            ),
            "{e}"
        );
        let (key, der) = issuer_under(
            &pki,
            IsCa::Ca(BasicConstraints::Unconstrained),
            vec![KeyUsagePurpose::DigitalSignature],
            year(),
        );
        let e = Authority::load(&files(&[&pki.root], &[&der], &key), now()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::NotACa {
                    reason: "its keyUsage lacks keyCertSign",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn non_root_anchor_is_refused() {
        let pki = root();
        let (key, der) = issuer_under(
            &pki,
            IsCa::Ca(BasicConstraints::Unconstrained),
            ca_usages(),
            year(),
        );
        let e = Authority::load(&files(&[&der], &[&der], &key), now()).unwrap_err();
        assert!(matches!(e, Error::AnchorNotSelfSigned { .. }), "{e}");
    }

    #[test]
    fn broken_link_loop_and_path_length_are_refused() {
        let pki = root();
        // Intermediate constrained to 0, with an issuer under it: path length exceeded.
        let ik = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
        let (ip, ider) = make_cert(
            "inter",
            IsCa::Ca(BasicConstraints::Constrained(0)),
            ca_usages(),
            year(),
            &ik,
            Some((&pki.root_p, &pki.root_key)),
        );
        let lk = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let (_, lder) = make_cert(
            "issuer",
            IsCa::Ca(BasicConstraints::Constrained(0)),
            ca_usages(),
            year(),
            &lk,
            Some((&ip, &ik)),
        );
        let e = Authority::load(&files(&[&pki.root], &[&lder, &ider], &lk), now()).unwrap_err();
        assert!(matches!(e, Error::PathLength { .. }), "{e}");
        // Loop: same certificate twice.
        let e =
            Authority::load(&files(&[&pki.root], &[&lder, &ider, &ider], &lk), now()).unwrap_err();
        assert!(matches!(e, Error::ChainShape(_)), "{e}");
        // Broken link: the intermediate is missing between issuer and an unrelated CA.
        let other = root();
        let e = Authority::load(
            &files(&[&pki.root], &[&lder, &other.root[..], &pki.root], &lk),
            now(),
        );
        // other.root is self-signed but not last, so the chain link issuer->other breaks.
        assert!(matches!(e, Err(Error::ChainBroken { .. })), "{e:?}");
        // A working two-level chain loads when the intermediate allows it.
        let (ip2, ider2) = make_cert(
            "inter2",
            IsCa::Ca(BasicConstraints::Constrained(1)),
            ca_usages(),
            year(),
            &ik,
            Some((&pki.root_p, &pki.root_key)),
        );
        let (_, lder2) = make_cert(
            "issuer2",
            IsCa::Ca(BasicConstraints::Constrained(0)),
            ca_usages(),
            year(),
            &lk,
            Some((&ip2, &ik)),
        );
        let a = Authority::load(&files(&[&pki.root], &[&lder2, &ider2], &lk), now()).unwrap();
        assert_eq!(a.chain_der().len(), 2);
    }

    #[test]
    fn new_issuer_under_the_kept_root_loads_with_the_old_anchors() {
        let (files, root_key_pem) = Authority::generate_keeping_root(&params(), now()).unwrap();
        let root_key = PrivateKey::from_pem(root_key_pem.as_bytes()).unwrap();
        let (crt, key) = Authority::new_issuer(&files.ca_crt, &root_key, &params(), now()).unwrap();
        assert_ne!(crt, files.issuer_crt);
        let rotated = CaFiles {
            ca_crt: files.ca_crt.clone(),
            issuer_crt: crt,
            issuer_key: key,
        };
        Authority::load(&rotated, now()).unwrap();
        // The wrong root key is refused.
        let other = PrivateKey::generate(KeyType::Ed25519).unwrap();
        assert!(matches!(
            Authority::new_issuer(&files.ca_crt, &other, &params(), now()),
            Err(Error::KeyMismatch { .. })
        ));
    }

    #[test]
    fn issuer_file_with_only_a_root_is_refused() {
        let (mut f, _) = generated();
        f.issuer_crt = f.ca_crt.clone();
        let e = Authority::load(&f, now()).unwrap_err();
        assert!(matches!(e, Error::ChainShape(_)), "{e}");
    }
}
