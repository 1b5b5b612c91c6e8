//! Leaf issuance: a proven identity plus a [`ValidatedCsr`] becomes an X.509-SVID.
//!
//! The leaf is built only from what Sigil decided: a fresh random serial, the SPIFFE ID
//! as the single URI SAN, DNS names only when the caller (the server's control-plane rules)
//! passes them, KeyUsage digitalSignature, ExtKeyUsage serverAuth + clientAuth, CA:FALSE,
//! SKI and AKI. From the request, only the public key is used. NotAfter is capped at the end
//! of the issuer chain's validity, and signing is refused outright when the chain is not
//! valid at `now` (Dapr keeps signing with an expired issuer).

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::authority::{serial, Authority};
use crate::csr::ValidatedCsr;
use crate::spiffe::SpiffeId;
use crate::Error;

/// OID under which newer Dapr versions record the pod's container images. The extension is
/// non-critical; its value is a DER OCTET STRING whose contents are the JSON array, as Dapr
/// encodes it.
pub const CONTAINER_IMAGES_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 57683, 100, 1];

/// Longest leaf lifetime accepted by policy (a year); Dapr's default is 24 hours.
pub const MAX_TTL: Duration = Duration::days(366);

/// Lifetime rules for leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuePolicy {
    /// Lifetime from `now` (Dapr's `workloadCertTTL`, default 24 h).
    pub ttl: Duration,
    /// How far NotBefore is backdated (Dapr's `allowedClockSkew`, default 15 min).
    pub clock_skew: Duration,
}

impl Default for IssuePolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::hours(24),
            clock_skew: Duration::minutes(15),
        }
    }
}

impl IssuePolicy {
    /// Checks that the policy makes sense; called once at configuration time.
    pub fn validate(&self) -> Result<(), Error> {
        if self.ttl <= Duration::ZERO {
            return Err(Error::InvalidTtl(
                "workload certificate TTL must be positive".into(),
            ));
        }
        if self.ttl > MAX_TTL {
            return Err(Error::InvalidTtl(format!(
                "workload certificate TTL {} exceeds the maximum of {}",
                self.ttl, MAX_TTL
            )));
        }
        if self.clock_skew < Duration::ZERO || self.clock_skew > Duration::hours(24) {
            return Err(Error::InvalidTtl(
                "allowed clock skew must be between 0 and 24 hours".into(),
            ));
        }
        Ok(())
    }
}

/// What the leaf carries besides its SPIFFE ID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeafExtras {
    /// DNS SANs (only Dapr's control-plane services get these).
    pub dns_names: Vec<String>,
    /// JSON describing the pod's container images, for the Dapr extension.
    pub container_images_json: Option<String>,
}

/// A freshly signed leaf and what the response needs.
#[derive(Clone, Debug)]
pub struct IssuedCertificate {
    /// The leaf, DER.
    pub leaf_der: Vec<u8>,
    /// Leaf PEM followed by the issuer chain PEM (no root), as Dapr returns it.
    pub chain_pem: String,
    /// Leaf NotAfter.
    pub not_after: OffsetDateTime,
    /// Leaf NotBefore.
    pub not_before: OffsetDateTime,
    /// Serial number, lower-case hex.
    pub serial_hex: String,
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl Authority {
    /// Signs a leaf for `id` with the key from `csr`.
    pub fn issue(
        &self,
        csr: &ValidatedCsr,
        id: &SpiffeId,
        extras: &LeafExtras,
        policy: &IssuePolicy,
        now: OffsetDateTime,
    ) -> Result<IssuedCertificate, Error> {
        policy.validate()?;
        if now < self.valid_from {
            return Err(Error::IssuerNotValidNow(format!(
                "the CA chain is not valid until {} (check the system clock)",
                self.valid_from
            )));
        }
        if now >= self.valid_until {
            return Err(Error::IssuerNotValidNow(format!(
                "the CA chain expired at {}; rotate the issuer (sigil ca rotate)",
                self.valid_until
            )));
        }
        let not_before = crate::authority::earlier(now, policy.clock_skew)?.max(self.valid_from);
        let not_after = crate::authority::later(now, policy.ttl)?.min(self.valid_until);

        let mut sans = Vec::with_capacity(1 + extras.dns_names.len());
        sans.push(SanType::URI(id.to_string().try_into().map_err(|_| {
            Error::InvalidSpiffeId {
                value: id.to_string(),
                reason: "not an IA5 string",
            }
        })?));
        for name in &extras.dns_names {
            if !valid_dns_name(name) {
                return Err(Error::InvalidDnsName(name.clone()));
            }
            sans.push(SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|_| Error::InvalidDnsName(name.clone()))?,
            ));
        }

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = serial()?;
        let serial_hex = serial
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        params.serial_number = Some(serial);
        params.use_authority_key_identifier_extension = true;
        if let Some(json) = &extras.container_images_json {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    CONTAINER_IMAGES_OID,
                    crate::der::octet_string(json.as_bytes()),
                ));
        }
        let cert = params
            .signed_by(csr, &self.issuer)
            .map_err(|e| Error::Signing(e.to_string()))?;
        let leaf_der = cert.der().to_vec();
        let mut chain_pem = cert.pem();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        chain_pem.push_str(&self.chain_pem);
        Ok(IssuedCertificate {
            leaf_der,
            chain_pem,
            not_after,
            not_before,
            serial_hex,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::tests::{generated, now};
    use crate::csr::tests::{csr_pem, key_for};
    use crate::csr::CsrKeyType;
    use proptest::prelude::*;
    use rcgen::PublicKeyData;
    use x509_parser::prelude::*;

    fn id() -> SpiffeId {
        SpiffeId::parse("spiffe://public/ns/default/orders").unwrap()
    }

    fn csr(kind: CsrKeyType) -> (rcgen::KeyPair, ValidatedCsr) {
        let key = key_for(kind);
        let csr = ValidatedCsr::parse(csr_pem(&key).as_bytes()).unwrap();
        (key, csr)
    }

    #[test]
    fn leaf_has_exactly_the_svid_shape() {
        let (_, auth) = generated();
        let (key, csr) = csr(CsrKeyType::EcdsaP256);
        let t = now();
        let leaf = auth
            .issue(
                &csr,
                &id(),
                &LeafExtras::default(),
                &IssuePolicy::default(),
                t,
            )
            .unwrap();
        let (_, c) = X509Certificate::from_der(&leaf.leaf_der).unwrap();
        assert_eq!(c.subject().to_string(), "");
        assert!(!c.is_ca());
        let bc = c.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca && bc.critical);
        let ku = c.key_usage().unwrap().unwrap();
        assert!(ku.value.digital_signature() && !ku.value.key_cert_sign() && !ku.value.crl_sign());
        let eku = c.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth && eku.value.client_auth && !eku.value.any);
        let san = c.subject_alternative_name().unwrap().unwrap();
        assert!(san.critical, "SAN must be critical with an empty subject");
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::URI("spiffe://public/ns/default/orders")]
        );
        assert!(c
            .get_extension_unique(&oid_registry::OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
            .unwrap()
            .is_some());
        assert!(c
            .get_extension_unique(&oid_registry::OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
            .unwrap()
            .is_some());
        let serial = c.raw_serial();
        assert!(serial.len() <= 20 && serial[0] & 0x80 == 0 && serial[0] != 0);
        assert_eq!(
            c.public_key().subject_public_key.data.as_ref(),
            key.der_bytes()
        );
        assert_eq!(leaf.not_after, t + Duration::hours(24));
        assert_eq!(
            c.validity().not_before.timestamp(),
            (t - Duration::minutes(15)).unix_timestamp()
        );
        // Chain: leaf then issuer, no root; verifies link by link.
        let blocks = ::pem::parse_many(&leaf.chain_pem).unwrap();
        assert_eq!(blocks.len(), 2);
        let (_, issuer) = X509Certificate::from_der(blocks[1].contents()).unwrap();
        c.verify_signature(Some(issuer.public_key())).unwrap();
    }

    #[test]
    fn dns_names_and_image_extension_only_when_given() {
        let (_, auth) = generated();
        let (_, csr) = csr(CsrKeyType::Ed25519);
        let extras = LeafExtras {
            dns_names: vec!["dapr-sidecar-injector.dapr-system.svc".into()],
            container_images_json: Some("[{\"image\":\"x\"}]".into()),
        };
        let leaf = auth
            .issue(&csr, &id(), &extras, &IssuePolicy::default(), now())
            .unwrap();
        let (_, c) = X509Certificate::from_der(&leaf.leaf_der).unwrap();
        let san = c.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 2);
        let oid = x509_parser::oid_registry::Oid::from(CONTAINER_IMAGES_OID).unwrap();
        let ext = c
            .get_extension_unique(&oid)
            .unwrap()
            .expect("images extension");
        assert!(!ext.critical);
        // OCTET STRING (0x04), short length, then the JSON as given.
        assert_eq!(ext.value[0], 0x04);
        assert_eq!(&ext.value[2..], b"[{\"image\":\"x\"}]");
        assert_eq!(ext.value[1] as usize, ext.value.len() - 2);
        let bad = LeafExtras {
            dns_names: vec!["bad name".into()],
            ..Default::default()
        };
        assert!(matches!(
            auth.issue(&csr, &id(), &bad, &IssuePolicy::default(), now()),
            Err(Error::InvalidDnsName(_))
        ));
    }

    #[test]
    fn lifetime_is_capped_by_the_issuer_and_expired_issuer_refuses() {
        let (_, auth) = generated();
        let (_, csr) = csr(CsrKeyType::Ed25519);
        let near_end = auth.valid_until() - Duration::hours(1);
        let leaf = auth
            .issue(
                &csr,
                &id(),
                &LeafExtras::default(),
                &IssuePolicy::default(),
                near_end,
            )
            .unwrap();
        assert_eq!(leaf.not_after, auth.valid_until());
        let after = auth.valid_until() + Duration::seconds(1);
        assert!(matches!(
            auth.issue(
                &csr,
                &id(),
                &LeafExtras::default(),
                &IssuePolicy::default(),
                after
            ),
            Err(Error::IssuerNotValidNow(_))
        ));
        let before = auth.valid_from() - Duration::seconds(1);
        assert!(matches!(
            auth.issue(
                &csr,
                &id(),
                &LeafExtras::default(),
                &IssuePolicy::default(),
                before
            ),
            Err(Error::IssuerNotValidNow(_))
        ));
    }

    #[test]
    fn policy_is_validated() {
        let bad = [Duration::ZERO, Duration::days(400)];
        for ttl in bad {
            let p = IssuePolicy {
                ttl,
                ..Default::default()
            };
            assert!(matches!(p.validate(), Err(Error::InvalidTtl(_))));
        }
        let p = IssuePolicy {
            clock_skew: Duration::minutes(-1),
            ..Default::default()
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn serials_are_unique() {
        let (_, auth) = generated();
        let (_, csr) = csr(CsrKeyType::Ed25519);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let leaf = auth
                .issue(
                    &csr,
                    &id(),
                    &LeafExtras::default(),
                    &IssuePolicy::default(),
                    now(),
                )
                .unwrap();
            assert!(seen.insert(leaf.serial_hex));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Lifetimes and clocks anywhere in range give a certificate or an error, never a
        /// panic; a leaf never outlives its issuer.
        #[test]
        fn lifetimes_never_overflow(ttl_s in 0i64..=i64::MAX / 4, skew_s in 0i64..=i64::MAX / 4, offset_days in -3_000_000i64..=3_000_000) {
            let (_, auth) = generated();
            let (_, csr) = csr(CsrKeyType::EcdsaP256);
            let at = now().checked_add(Duration::days(offset_days)).unwrap_or(now());
            let policy = IssuePolicy { ttl: Duration::seconds(ttl_s), clock_skew: Duration::seconds(skew_s) };
            if let Ok(leaf) = auth.issue(&csr, &id(), &LeafExtras::default(), &policy, at) {
                prop_assert!(leaf.not_after <= auth.valid_until());
            }
            let mut params = crate::CaParams::new("public".parse().unwrap(), "default".parse().unwrap());
            params.root_ttl = Duration::seconds(ttl_s);
            params.clock_skew = Duration::seconds(skew_s);
            let _ = Authority::generate(&params, at);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// What we sign is what we checked: the leaf carries the CSR's key byte for byte, the
        /// requested identity and nothing the CSR asked for.
        #[test]
        fn what_we_sign_is_what_we_checked(kind in prop_oneof![Just(CsrKeyType::Ed25519), Just(CsrKeyType::EcdsaP256), Just(CsrKeyType::EcdsaP384)],
                                           ns in "[a-z0-9][a-z0-9-]{0,20}", app in "[A-Za-z0-9_-]{1,30}", evil_san in "[a-z]{1,10}\\.example") {
            let (_, auth) = generated();
            let key = key_for(kind);
            // The CSR asks for CA:TRUE, a DNS SAN and another URI: all must be ignored.
            let mut p = rcgen::CertificateParams::new(vec![evil_san.clone()]).unwrap();
            p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.subject_alt_names.push(SanType::URI("spiffe://evil/ns/x/y".try_into().unwrap()));
            let csr = ValidatedCsr::parse(p.serialize_request(&key).unwrap().pem().unwrap().as_bytes()).unwrap();
            let want = SpiffeId::workload(&"public".parse().unwrap(), &ns.parse().unwrap(), &app.parse().unwrap());
            let leaf = auth.issue(&csr, &want, &LeafExtras::default(), &IssuePolicy::default(), now()).unwrap();
            let (_, c) = X509Certificate::from_der(&leaf.leaf_der).unwrap();
            prop_assert_eq!(c.public_key().raw, csr.spki_der());
            prop_assert!(!c.is_ca());
            let san = c.subject_alternative_name().unwrap().unwrap();
            let want_s = want.to_string();
            prop_assert_eq!(san.value.general_names.clone(), vec![GeneralName::URI(want_s.as_str())]);
            prop_assert_eq!(c.subject().to_string(), "");
        }
    }
}
