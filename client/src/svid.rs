//! An X.509-SVID held by a sidecar, and the checks a CA response must pass before it
//! becomes one.

use std::fmt;
use std::sync::Arc;

use ::time::OffsetDateTime;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use sigil_pki::{PrivateKey, SpiffeId};
use sigil_proto::SignCertificateResponse;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::anchors::{parse_roots, AnchorSet};
use crate::verify::{self, Refusal, Usage};
use crate::Error;

/// A checked certificate, its chain and its private key. The key is wiped when the last
/// reference goes away and never appears in `Debug`.
pub struct Svid {
    id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKey,
    certified: Arc<CertifiedKey>,
    ca_roots: Vec<CertificateDer<'static>>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    received_at: OffsetDateTime,
    serial_hex: String,
    /// JWT-SVID for all requested audiences (when the server issues JWTs). A bearer secret:
    /// never logged.
    jwt: Option<String>,
    /// One JWT-SVID per audience.
    per_audience_jwts: std::collections::BTreeMap<String, String>,
    /// Earliest `exp` among the tokens, if any.
    jwt_expires: Option<OffsetDateTime>,
}

impl Svid {
    /// The JWT-SVID for all requested audiences, if the server issued one.
    pub fn jwt(&self) -> Option<&str> {
        self.jwt.as_deref()
    }

    /// The JWT-SVID for one audience: the per-audience token if there is one, else the
    /// all-audience token when its `aud` contains `audience`.
    pub fn jwt_for(&self, audience: &str) -> Option<&str> {
        if let Some(t) = self.per_audience_jwts.get(audience) {
            return Some(t);
        }
        let all = self.jwt.as_deref()?;
        jwt_claims(all)
            .ok()
            .filter(|c| c.aud.iter().any(|a| a == audience))
            .map(|_| all)
    }

    /// When the certificate or its tokens must be renewed by: the earlier of the leaf's
    /// NotAfter and the tokens' `exp`.
    pub fn renew_by(&self) -> OffsetDateTime {
        match self.jwt_expires {
            Some(exp) => exp.min(self.not_after),
            None => self.not_after,
        }
    }

    /// The SPIFFE ID the certificate carries (the one asked for).
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.id
    }

    /// Leaf first, then the issuer chain (no root), DER.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The chain as PEM (`cert.pem`).
    pub fn chain_pem(&self) -> String {
        sigil_pki::pem_bundle::to_pem(&self.chain)
    }

    /// The private key as PKCS#8 PEM (`key.pem`), in a buffer wiped on drop.
    pub fn private_key_pem(&self) -> Zeroizing<String> {
        self.key.to_pem()
    }

    /// The algorithm of the key.
    pub fn key_type(&self) -> sigil_pki::KeyType {
        self.key.key_type()
    }

    /// What rustls serves.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    /// Trust anchors the CA sent with this certificate.
    pub fn ca_roots(&self) -> &[CertificateDer<'static>] {
        &self.ca_roots
    }

    /// Leaf NotBefore.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// Leaf NotAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// When this process accepted it (wall clock).
    pub fn received_at(&self) -> OffsetDateTime {
        self.received_at
    }

    /// Serial number, lower-case hex.
    pub fn serial_hex(&self) -> &str {
        &self.serial_hex
    }

    /// Whether the leaf is inside its validity window at `now`.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id.to_string())
            .field("serial", &self.serial_hex)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key", &self.key)
            .field(
                "jwts",
                &(self.jwt.is_some() as usize + self.per_audience_jwts.len()),
            )
            .finish()
    }
}

/// The claims the client reads from a JWT-SVID. The signature is the relying party's to
/// check; the client only reads what it holds.
#[derive(serde::Deserialize)]
struct JwtClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "one_or_many")]
    aud: Vec<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match <Option<Aud> as serde::Deserialize>::deserialize(d)? {
        None => Vec::new(),
        Some(Aud::One(a)) => vec![a],
        Some(Aud::Many(v)) => v,
    })
}

fn jwt_claims(token: &str) -> Result<JwtClaims, String> {
    use base64::Engine;
    let payload = token.split('.').nth(1).ok_or("not a compact JWS")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| format!("payload is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("payload is not JSON claims: {e}"))
}

/// A PEM CSR with an empty subject for `key` (Sentry uses only the public key).
pub(crate) fn csr_pem(key: &PrivateKey) -> Result<String, Error> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(key)
        .map_err(|e| Error::Key(format!("CSR: {e}")))?;
    csr.pem().map_err(|e| Error::Key(format!("CSR PEM: {e}")))
}

fn rustls_key(key: &PrivateKey) -> Result<Arc<dyn rustls::sign::SigningKey>, Error> {
    let text = key.to_pem();
    let block = ::pem::parse(text.as_bytes()).map_err(|e| Error::Key(e.to_string()))?;
    let der = Zeroizing::new(block.into_contents());
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(&der[..]));
    rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| Error::Key(e.to_string()))
}

fn bad(what: impl Into<String>) -> Error {
    Error::BadResponse(what.into())
}

/// Checks a `SignCertificateResponse` for a request made with `key` for `expected`, and only
/// then turns it into an [`Svid`]:
///
/// 1. `valid_until` is set (as daprd requires);
/// 2. `workload_certificate` is a PEM chain, leaf first;
/// 3. the leaf has exactly one URI SAN, equal to `expected`;
/// 4. the leaf carries our public key;
/// 5. the chain verifies (server and client use) against `anchors`, plus the roots sent in
///    the response when `trust_ca_roots` is set, at `now`.
pub(crate) fn accept_response(
    response: SignCertificateResponse,
    key: PrivateKey,
    expected: &SpiffeId,
    anchors: &AnchorSet,
    trust_ca_roots: bool,
    now: OffsetDateTime,
) -> Result<Svid, Error> {
    let valid_until = response
        .valid_until
        .ok_or_else(|| bad("valid_until is not set"))?;
    if response.workload_certificate.is_empty() {
        return Err(bad("workload_certificate is empty"));
    }
    let chain: Vec<CertificateDer<'static>> = sigil_pki::pem_bundle::parse_certificates(
        "workload_certificate",
        &response.workload_certificate,
    )
    .map_err(|e| bad(e.to_string()))?
    .into_iter()
    .map(CertificateDer::from)
    .collect();
    let leaf = &chain[0];

    let id = verify::spiffe_id_of(leaf).map_err(|r| match r {
        Refusal::Identity(msg) => bad(format!("leaf certificate: {msg}")),
        Refusal::Chain(e) => bad(e.to_string()),
    })?;
    if &id != expected {
        return Err(Error::WrongIdentity {
            expected: expected.to_string(),
            got: id.to_string(),
        });
    }

    let (_, parsed) =
        X509Certificate::from_der(leaf).map_err(|e| bad(format!("leaf does not parse: {e}")))?;
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(Error::KeyMismatch);
    }
    let not_before = parsed.validity().not_before.to_datetime();
    let not_after = parsed.validity().not_after.to_datetime();
    if valid_until.seconds != not_after.unix_timestamp() {
        tracing::debug!(
            valid_until = valid_until.seconds,
            not_after = %not_after,
            "valid_until differs from the leaf's NotAfter; the certificate is what counts"
        );
    }
    let serial_hex = parsed.raw_serial_as_string().replace(':', "");

    let mut ca_roots = Vec::new();
    for blob in &response.trust_chain_certificates {
        if blob.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        ca_roots
            .extend(parse_roots(blob).map_err(|e| bad(format!("trust_chain_certificates: {e}")))?);
    }

    let mut roots: Vec<CertificateDer<'static>> = anchors.roots().to_vec();
    if trust_ca_roots {
        roots.extend(ca_roots.iter().cloned());
    }
    let check_set = crate::anchors::TrustAnchors::new(roots).current();
    let unix = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    for usage in [Usage::Server, Usage::Client] {
        verify::verify_chain(&check_set, leaf, &chain[1..], unix, usage)
            .map_err(|r| Error::Untrusted(r.to_string()))?;
    }

    // JWT-SVIDs come with the certificate and are held with it; they must name the same
    // identity, or the whole answer is refused.
    let per_audience_jwts: std::collections::BTreeMap<String, String> =
        response.per_audience_jwts.into_iter().collect();
    let mut jwt_expires: Option<OffsetDateTime> = None;
    for token in response.jwt.iter().chain(per_audience_jwts.values()) {
        let claims = jwt_claims(token).map_err(|e| bad(format!("JWT-SVID: {e}")))?;
        if claims.sub.as_deref() != Some(expected.to_string().as_str()) {
            return Err(Error::WrongIdentity {
                expected: expected.to_string(),
                got: format!("JWT-SVID for {}", claims.sub.unwrap_or_default()),
            });
        }
        if let Some(exp) = claims
            .exp
            .and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok())
        {
            jwt_expires = Some(jwt_expires.map_or(exp, |cur| cur.min(exp)));
        }
    }

    let certified = Arc::new(CertifiedKey::new(chain.clone(), rustls_key(&key)?));
    Ok(Svid {
        jwt: response.jwt,
        per_audience_jwts,
        jwt_expires,
        id,
        chain,
        key,
        certified,
        ca_roots,
        not_before,
        not_after,
        received_at: now,
        serial_hex,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sigil_pki::issue::LeafExtras;
    use sigil_pki::{Authority, CaParams, IssuePolicy, KeyType, ValidatedCsr};

    pub(crate) fn new_ca() -> (Authority, Vec<u8>) {
        let p = CaParams::new("public".parse().unwrap(), "default".parse().unwrap());
        let files = Authority::generate(&p, OffsetDateTime::now_utc()).unwrap();
        (
            Authority::load(&files, OffsetDateTime::now_utc()).unwrap(),
            files.ca_crt,
        )
    }

    fn respond(ca: &Authority, key: &PrivateKey, id: &SpiffeId) -> SignCertificateResponse {
        let csr = ValidatedCsr::parse(csr_pem(key).unwrap().as_bytes()).unwrap();
        let issued = ca
            .issue(
                &csr,
                id,
                &LeafExtras::default(),
                &IssuePolicy::default(),
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        SignCertificateResponse {
            workload_certificate: issued.chain_pem.into_bytes(),
            trust_chain_certificates: vec![ca.trust_bundle().to_pem().into_bytes()],
            valid_until: Some(prost_timestamp(issued.not_after)),
            jwt: None,
            per_audience_jwts: Default::default(),
        }
    }

    fn prost_timestamp(t: OffsetDateTime) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: t.unix_timestamp(),
            nanos: 0,
        }
    }

    fn anchors_of(pem: &[u8]) -> Arc<AnchorSet> {
        crate::anchors::TrustAnchors::new(parse_roots(pem).unwrap()).current()
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn a_good_response_becomes_an_svid_for_every_key_type() {
        let (ca, roots) = new_ca();
        let want = id("spiffe://public/ns/default/orders");
        for kt in [KeyType::Ed25519, KeyType::EcdsaP256, KeyType::EcdsaP384] {
            let key = PrivateKey::generate(kt).unwrap();
            let resp = respond(&ca, &key, &want);
            let now = OffsetDateTime::now_utc();
            let svid = accept_response(resp, key, &want, &anchors_of(&roots), false, now).unwrap();
            assert_eq!(svid.spiffe_id(), &want);
            assert_eq!(svid.chain().len(), 2);
            assert_eq!(svid.key_type(), kt);
            assert!(svid.is_valid_at(now));
            assert_eq!(svid.ca_roots().len(), 1);
            assert!(!format!("{svid:?}").contains("PRIVATE"));
        }
    }

    fn fake_jwt(claims: serde_json::Value) -> String {
        use base64::Engine;
        let e = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.c2ln",
            e(br#"{"alg":"RS256"}"#),
            e(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn jwt_svids_are_held_with_the_certificate_and_bound_renewal() {
        let (ca, roots) = new_ca();
        let want = id("spiffe://public/ns/default/orders");
        let now = OffsetDateTime::now_utc();
        let exp = now.unix_timestamp() + 600;
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let mut resp = respond(&ca, &key, &want);
        resp.jwt = Some(fake_jwt(
            serde_json::json!({"sub": want.to_string(), "aud": ["public", "api"], "exp": exp}),
        ));
        resp.per_audience_jwts.insert(
            "api".into(),
            fake_jwt(serde_json::json!({"sub": want.to_string(), "aud": "api", "exp": exp + 60})),
        );
        let svid = accept_response(resp, key, &want, &anchors_of(&roots), false, now).unwrap();
        assert!(svid.jwt().is_some());
        assert_eq!(
            svid.jwt_for("api"),
            svid.per_audience_jwts.get("api").map(String::as_str)
        );
        assert_eq!(svid.jwt_for("public"), svid.jwt());
        assert_eq!(svid.jwt_for("other"), None);
        assert_eq!(
            svid.renew_by().unix_timestamp(),
            exp,
            "the earlier token expiry bounds renewal"
        );
        assert!(
            !format!("{svid:?}").contains("eyJ"),
            "tokens must not appear in Debug"
        );

        // A token for another identity spoils the whole answer.
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let mut resp = respond(&ca, &key, &want);
        resp.jwt = Some(fake_jwt(
            serde_json::json!({"sub": "spiffe://public/ns/default/payments", "exp": exp}),
        ));
        let e = accept_response(resp, key, &want, &anchors_of(&roots), false, now).unwrap_err();
        assert!(matches!(e, Error::WrongIdentity { .. }), "{e}");
    }

    #[test]
    fn wrong_identity_wrong_key_untrusted_and_malformed_are_refused() {
        let (ca, roots) = new_ca();
        let (other_ca, other_roots) = new_ca();
        let want = id("spiffe://public/ns/default/orders");
        let anchors = anchors_of(&roots);
        let now = OffsetDateTime::now_utc();
        let key = || PrivateKey::generate(KeyType::Ed25519).unwrap();

        let k = key();
        let resp = respond(&ca, &k, &id("spiffe://public/ns/default/payments"));
        let e = accept_response(resp, k, &want, &anchors, true, now).unwrap_err();
        assert!(matches!(e, Error::WrongIdentity { .. }), "{e}");

        let k = key();
        let resp = respond(&ca, &k, &id("spiffe://other/ns/default/orders"));
        assert!(matches!(
            accept_response(resp, k, &want, &anchors, true, now),
            Err(Error::WrongIdentity { .. })
        ));

        let resp = respond(&ca, &key(), &want);
        assert!(matches!(
            accept_response(resp, key(), &want, &anchors, true, now),
            Err(Error::KeyMismatch)
        ));

        // Issued by a CA we do not trust, without its roots being trusted from the response.
        let k = key();
        let resp = respond(&other_ca, &k, &want);
        let e = accept_response(resp, k, &want, &anchors, false, now).unwrap_err();
        assert!(matches!(e, Error::Untrusted(_)), "{e}");
        // ...and accepted when the caller trusts the roots the CA sends.
        let k = key();
        let resp = respond(&other_ca, &k, &want);
        assert!(accept_response(resp, k, &want, &anchors, true, now).is_ok());
        let _ = other_roots;

        let k = key();
        let mut resp = respond(&ca, &k, &want);
        resp.valid_until = None;
        let e = accept_response(resp, k, &want, &anchors, false, now).unwrap_err();
        assert!(e.to_string().contains("valid_until"), "{e}");

        let k = key();
        let mut resp = respond(&ca, &k, &want);
        resp.workload_certificate =
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
        assert!(matches!(
            accept_response(resp, k, &want, &anchors, false, now),
            Err(Error::BadResponse(_))
        ));

        // Not yet valid / expired at the time of the check.
        let k = key();
        let resp = respond(&ca, &k, &want);
        let later = now + ::time::Duration::days(2);
        assert!(matches!(
            accept_response(resp, k, &want, &anchors, false, later),
            Err(Error::Untrusted(_))
        ));
    }

    #[test]
    fn spiffe_id_needs_exactly_one_uri_san() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = vec![
            rcgen::SanType::URI("spiffe://public/ns/a/b".try_into().unwrap()),
            rcgen::SanType::URI("spiffe://public/ns/a/c".try_into().unwrap()),
        ];
        let two = p.self_signed(&key).unwrap();
        let e = verify::spiffe_id_of(two.der()).unwrap_err().to_string();
        assert!(e.contains("2 URI SANs"), "{e}");
        p.subject_alt_names = vec![rcgen::SanType::DnsName("x.example".try_into().unwrap())];
        let none = p.self_signed(&key).unwrap();
        assert!(verify::spiffe_id_of(none.der()).is_err());
        p.subject_alt_names = vec![rcgen::SanType::URI("https://public/x".try_into().unwrap())];
        let not_spiffe = p.self_signed(&key).unwrap();
        assert!(verify::spiffe_id_of(not_spiffe.der()).is_err());
    }
}
