//! JWT-SVIDs: signing keys, JWKs, the published key set, and tokens. No I/O: callers pass
//! the key bytes, the stored JWKS and `now`.
//!
//! Compatibility with Dapr Sentry, where it matters to a relying party:
//! - The token header's `kid` defaults to the key's RFC 7638 SHA-256 JWK thumbprint in
//!   *standard* base64 with padding (Dapr's encoding, not RFC 7638's base64url), so a
//!   `jwks.json` written by Dapr keeps matching the tokens Sigil signs with the same key.
//! - Claims: `jti` (16 random bytes, hex), `sub` (SPIFFE ID), `iat`, `aud` (always an
//!   array), `nbf` (`now - skew`), `exp` (`now + ttl`), `use: "sig"`, and `iss` when set.
//!
//! Keys are RSA (2048 bits when generated; 2048-8192 when loaded), ECDSA P-256/P-384 or
//! Ed25519. Signing is done by `ring`; the `rsa` crate is used only to generate RSA keys,
//! which `ring` cannot do.

use std::collections::BTreeMap;
use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{json, Map, Value};
use time::{Duration, OffsetDateTime};
use zeroize::{Zeroize, Zeroizing};

use crate::der;
use crate::jose::{self, jwk, Algorithm, Jwk, KeyKind, PublicKey};
use crate::{Error, SpiffeId, TrustDomain};

/// Most audiences one request may ask for (Sigil's bound; each costs a signature).
pub const MAX_AUDIENCES: usize = 16;
/// Longest audience accepted, in bytes.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// Bits of a generated RSA key (Dapr's choice).
pub const GENERATED_RSA_BITS: usize = 2048;

enum Signer {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A key that signs JWT-SVIDs, with its algorithm and key id. Its PKCS#8 bytes are wiped
/// on drop and its `Debug` output names only the algorithm and kid.
pub struct JwtSigningKey {
    alg: Algorithm,
    signer: Signer,
    pkcs8: Zeroizing<Vec<u8>>,
    public: PublicKey,
    kid: String,
    rng: SystemRandom,
}

impl fmt::Debug for JwtSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JwtSigningKey({}, kid {}, <redacted>)",
            self.alg, self.kid
        )
    }
}

fn key_err(e: impl fmt::Display) -> Error {
    Error::JwtKey(e.to_string())
}

impl JwtSigningKey {
    /// Generates a key for `alg`: RSA-2048 for RS*/PS*, P-256, P-384 or Ed25519. The kid
    /// is the thumbprint.
    pub fn generate(alg: Algorithm) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let pkcs8: Zeroizing<Vec<u8>> = match alg.key_kind() {
            KeyKind::Rsa => {
                use rsa::pkcs8::EncodePrivateKey as _;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, GENERATED_RSA_BITS)
                    .map_err(key_err)?;
                let doc = key.to_pkcs8_der().map_err(key_err)?;
                Zeroizing::new(doc.as_bytes().to_vec())
            }
            KeyKind::P256 => Zeroizing::new(
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| key_err("P-256 key generation failed"))?
                    .as_ref()
                    .to_vec(),
            ),
            KeyKind::P384 => Zeroizing::new(
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                    .map_err(|_| key_err("P-384 key generation failed"))?
                    .as_ref()
                    .to_vec(),
            ),
            KeyKind::Ed25519 => Zeroizing::new(
                Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| key_err("Ed25519 key generation failed"))?
                    .as_ref()
                    .to_vec(),
            ),
        };
        Self::from_pkcs8(pkcs8, Some(alg))
    }

    /// Reads a key from PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`). `alg` must fit the key; without it, RSA signs RS256, P-256 ES256
    /// and P-384 ES384, and an Ed25519 key is refused (EdDSA must be asked for).
    pub fn from_pem(pem_text: &[u8], alg: Option<Algorithm>) -> Result<Self, Error> {
        let blocks =
            pem::parse_many(pem_text).map_err(|e| key_err(format!("not valid PEM: {e}")))?;
        let result = (|| {
            let block = blocks
                .iter()
                .find(|b| b.tag().ends_with("PRIVATE KEY"))
                .ok_or_else(|| key_err("no PRIVATE KEY block found"))?;
            let body = block.contents();
            let pkcs8 =
                match block.tag() {
                    "PRIVATE KEY" => Zeroizing::new(body.to_vec()),
                    "RSA PRIVATE KEY" => der::pkcs8_from_pkcs1(body),
                    "EC PRIVATE KEY" => {
                        let p256 = der::pkcs8_from_sec1(body, der::OID_P256);
                        if EcdsaKeyPair::from_pkcs8(
                            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                            &p256,
                            &SystemRandom::new(),
                        )
                        .is_ok()
                        {
                            p256
                        } else {
                            der::pkcs8_from_sec1(body, der::OID_P384)
                        }
                    }
                    "ENCRYPTED PRIVATE KEY" => return Err(key_err(
                        "the key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)",
                    )),
                    other => return Err(key_err(format!("unsupported PEM block {other:?}"))),
                };
            Self::from_pkcs8(pkcs8, alg)
        })();
        for b in blocks {
            b.into_contents().zeroize();
        }
        result
    }

    fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>, alg: Option<Algorithm>) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let (kind, signer, public) = if let Ok(kp) = RsaKeyPair::from_pkcs8(&pkcs8) {
            let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
            let public = PublicKey::rsa(&c.n, &c.e);
            (KeyKind::Rsa, Signer::Rsa(kp), public)
        } else if let Ok(kp) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
        {
            let public = ec_public(KeyKind::P256, kp.public_key().as_ref())?;
            (KeyKind::P256, Signer::Ecdsa(kp), public)
        } else if let Ok(kp) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8, &rng)
        {
            let public = ec_public(KeyKind::P384, kp.public_key().as_ref())?;
            (KeyKind::P384, Signer::Ecdsa(kp), public)
        } else if let Ok(kp) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8) {
            let public = PublicKey::Ed25519(kp.public_key().as_ref().to_vec());
            (KeyKind::Ed25519, Signer::Ed25519(kp), public)
        } else {
            return Err(key_err(
                "not a valid RSA (2048-8192 bit), ECDSA P-256/P-384 or Ed25519 PKCS#8 key",
            ));
        };
        let alg = match alg {
            Some(a) if a.key_kind() == kind => a,
            Some(a) => {
                return Err(key_err(format!(
                    "the key is {kind}, which cannot sign {a} (it needs a {} key)",
                    a.key_kind()
                )))
            }
            None => Algorithm::default_for(kind).ok_or_else(|| {
                key_err("the key is Ed25519; set --jwt-signing-algorithm EdDSA to use it (daprd does not accept EdDSA tokens)")
            })?,
        };
        // An ECDSA key pair is bound to its curve and hash at parse time: re-parse so the
        // pair signs with the requested algorithm, not only the curve we probed with.
        let signer = match (signer, alg) {
            (Signer::Ecdsa(_), Algorithm::Es256) | (Signer::Ecdsa(_), Algorithm::Es384) => {
                let a = if alg == Algorithm::Es256 {
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING
                };
                Signer::Ecdsa(EcdsaKeyPair::from_pkcs8(a, &pkcs8, &rng).map_err(key_err)?)
            }
            (s, _) => s,
        };
        let kid = jose::kid_from_thumbprint(&public.thumbprint());
        Ok(Self {
            alg,
            signer,
            pkcs8,
            public,
            kid,
            rng,
        })
    }

    /// Replaces the key id (Dapr's `--jwt-key-id`).
    pub fn with_key_id(mut self, kid: impl Into<String>) -> Self {
        self.kid = kid.into();
        self
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id put in token headers and in the JWK.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The RFC 7638 SHA-256 thumbprint of the public key.
    pub fn thumbprint(&self) -> [u8; 32] {
        self.public.thumbprint()
    }

    /// PKCS#8 PEM of the private key, in a buffer wiped on drop (Ed25519 as PKCS#8 v1, which
    /// OpenSSL 3.0 can read; see [`crate::keys::PrivateKey::to_pem`]).
    pub fn to_pem(&self) -> Zeroizing<String> {
        let v1 = crate::keys::ed25519_pkcs8_v1(&self.pkcs8);
        let der = v1.as_deref().map_or(self.pkcs8.as_slice(), Vec::as_slice);
        let block = pem::Pem::new("PRIVATE KEY", der.to_vec());
        let text = Zeroizing::new(pem::encode(&block));
        block.into_contents().zeroize();
        text
    }

    /// The public JWK: key members plus `kid`, `alg` and `use: "sig"`.
    pub fn public_jwk(&self) -> Value {
        let mut m = self.public.to_members();
        m.insert("kid".into(), self.kid.clone().into());
        m.insert("alg".into(), self.alg.name().into());
        m.insert("use".into(), "sig".into());
        Value::Object(m)
    }

    /// Signs a token for `request` at `now`, with a fresh random `jti`.
    pub fn sign(&self, request: &JwtRequest<'_>, now: OffsetDateTime) -> Result<String, Error> {
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| Error::Signing("no randomness for the JWT id".into()))?;
        let claims = request.claims(now, &jti)?;
        let header = json!({"alg": self.alg.name(), "kid": self.kid, "typ": "JWT"});
        jose::jws::assemble(&header, &claims, |input| self.sign_bytes(input))
    }

    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let fail = |_| Error::Signing(format!("{} signature failed", self.alg));
        match &self.signer {
            Signer::Rsa(kp) => {
                let padding: &'static dyn signature::RsaEncoding = match self.alg {
                    Algorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
                    Algorithm::Rs384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::Rs512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::Ps256 => &signature::RSA_PSS_SHA256,
                    Algorithm::Ps384 => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut sig = vec![0u8; kp.public().modulus_len()];
                kp.sign(padding, &self.rng, msg, &mut sig).map_err(fail)?;
                Ok(sig)
            }
            Signer::Ecdsa(kp) => Ok(kp.sign(&self.rng, msg).map_err(fail)?.as_ref().to_vec()),
            Signer::Ed25519(kp) => Ok(kp.sign(msg).as_ref().to_vec()),
        }
    }
}

fn ec_public(kind: KeyKind, point: &[u8]) -> Result<PublicKey, Error> {
    PublicKey::ec(kind, point).ok_or_else(|| key_err("unexpected EC public key encoding"))
}

/// What goes into one token.
#[derive(Clone, Debug)]
pub struct JwtRequest<'a> {
    /// `sub`: the workload's SPIFFE ID.
    pub subject: &'a SpiffeId,
    /// `aud`: already de-duplicated (see [`audiences`]).
    pub audiences: &'a [String],
    /// `iss`, when configured.
    pub issuer: Option<&'a str>,
    /// Lifetime: `exp = now + ttl`.
    pub ttl: Duration,
    /// Backdating: `nbf = now - clock_skew`.
    pub clock_skew: Duration,
}

impl JwtRequest<'_> {
    fn claims(&self, now: OffsetDateTime, jti: &[u8; 16]) -> Result<Value, Error> {
        let now_s = now.unix_timestamp();
        let mut m = Map::new();
        let jti_hex: String = jti.iter().map(|b| format!("{b:02x}")).collect();
        m.insert("jti".into(), jti_hex.into());
        m.insert("sub".into(), self.subject.to_string().into());
        m.insert("iat".into(), now_s.into());
        m.insert("aud".into(), self.audiences.to_vec().into());
        let nbf = crate::authority::earlier(now, self.clock_skew)?;
        let exp = crate::authority::later(now, self.ttl)?;
        m.insert("nbf".into(), nbf.unix_timestamp().into());
        m.insert("exp".into(), exp.unix_timestamp().into());
        m.insert("use".into(), "sig".into());
        if let Some(iss) = self.issuer {
            m.insert("iss".into(), iss.into());
        }
        Ok(Value::Object(m))
    }
}

/// The audiences of a token: the trust domain first, then the requested ones, in order,
/// without duplicates or empty strings. Too many or too long audiences are refused.
pub fn audiences(trust_domain: &TrustDomain, requested: &[String]) -> Result<Vec<String>, Error> {
    if requested.len() > MAX_AUDIENCES {
        return Err(Error::JwtAudience(format!(
            "{} audiences requested; at most {MAX_AUDIENCES} are allowed",
            requested.len()
        )));
    }
    let mut out = vec![trust_domain.as_str().to_owned()];
    for a in requested {
        if a.len() > MAX_AUDIENCE_LEN {
            return Err(Error::JwtAudience(format!(
                "an audience is {} bytes; at most {MAX_AUDIENCE_LEN} are allowed",
                a.len()
            )));
        }
        if a.chars().any(char::is_control) {
            return Err(Error::JwtAudience(
                "an audience contains control characters".into(),
            ));
        }
        if !a.is_empty() && !out.contains(a) {
            out.push(a.clone());
        }
    }
    Ok(out)
}

/// Name of the JWKS member where Sigil keeps its rotation bookkeeping. It is stored with
/// the key set (so one file, or one Secret key, holds everything) and never served.
const META_MEMBER: &str = "sigil_rotation";

/// A JWK set as stored: the published keys plus which key signs and when retired keys may
/// be removed. Keys Sigil did not retire itself (added by a person) are never removed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JwksDocument {
    keys: Vec<Value>,
    signing_kid: Option<String>,
    /// kid -> Unix time after which tokens signed by that key have all expired.
    retired: BTreeMap<String, i64>,
    /// kid -> Unix time Sigil first published that key (a key signs only once every
    /// replica and every verifier's cache has had time to see it).
    published: BTreeMap<String, i64>,
}

impl JwksDocument {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a stored JWKS (`{"keys": [...]}`, optionally with Sigil's bookkeeping).
    /// Private key members in a JWK are refused: the set is published.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let jwks_err = |e: jwk::JwksError| Error::Jwks(e.to_string());
        let v = jwk::document(bytes).map_err(jwks_err)?;
        let keys = jwk::key_array(&v).map_err(jwks_err)?;
        for k in keys {
            let obj = k
                .as_object()
                .ok_or_else(|| Error::Jwks("a key is not a JSON object".into()))?;
            if jwk::PRIVATE_MEMBERS.iter().any(|m| obj.contains_key(*m)) {
                return Err(Error::Jwks(
                    "a key holds private key material; the JWKS is published and must hold public keys only".into(),
                ));
            }
        }
        let meta = v.get(META_MEMBER);
        let signing_kid = meta
            .and_then(|m| m.get("signing_kid"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let times = |member: &str| -> BTreeMap<String, i64> {
            meta.and_then(|m| m.get(member))
                .and_then(Value::as_object)
                .map(|r| {
                    r.iter()
                        .filter_map(|(k, v)| v.as_i64().map(|t| (k.clone(), t)))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Self {
            keys: keys.clone(),
            signing_kid,
            retired: times("retired"),
            published: times("published"),
        })
    }

    /// Whether the document carries Sigil's rotation bookkeeping, i.e. Sigil wrote it. A
    /// JWKS without it was written by a person (or by Dapr Sentry).
    pub fn kept_by_sigil(&self) -> bool {
        self.signing_kid.is_some() || !self.retired.is_empty() || !self.published.is_empty()
    }

    /// The stored form, with the bookkeeping.
    pub fn to_stored_json(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("keys".into(), Value::Array(self.keys.clone()));
        if self.kept_by_sigil() {
            let times = |t: &BTreeMap<String, i64>| -> Map<String, Value> {
                t.iter()
                    .map(|(k, t)| (k.clone(), Value::from(*t)))
                    .collect()
            };
            m.insert(
                META_MEMBER.into(),
                json!({"signing_kid": self.signing_kid, "retired": times(&self.retired),
                       "published": times(&self.published)}),
            );
        }
        let mut out = serde_json::to_vec_pretty(&Value::Object(m)).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The published form: `{"keys": [...]}` only.
    pub fn to_public_json(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({"keys": self.keys})).unwrap_or_default()
    }

    /// The keys' `kid`s, in order (keys without one are skipped).
    pub fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .filter_map(|k| k.get("kid").and_then(Value::as_str))
            .collect()
    }

    /// The `alg` values of the published keys, without duplicates.
    pub fn algorithms(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in self
            .keys
            .iter()
            .filter_map(|k| k.get("alg").and_then(Value::as_str))
        {
            if !out.iter().any(|o| o == a) {
                out.push(a.to_owned());
            }
        }
        out
    }

    /// The kid Sigil last signed with, as recorded in the document.
    pub fn signing_kid(&self) -> Option<&str> {
        self.signing_kid.as_deref()
    }

    /// When a retired key is removed (Unix seconds), if it was retired by Sigil.
    pub fn retired_until(&self, kid: &str) -> Option<i64> {
        self.retired.get(kid).copied()
    }

    /// When Sigil first published `kid` (Unix seconds), if it recorded it.
    pub fn published_at(&self, kid: &str) -> Option<i64> {
        self.published.get(kid).copied()
    }

    /// Publishes `key` without letting it sign yet, recording when (once). Returns whether
    /// the document changed. See [`JwksDocument::publish`] for the switch.
    pub fn announce(&mut self, key: &JwtSigningKey, now: OffsetDateTime) -> bool {
        let before = self.clone();
        let kid = key.kid().to_owned();
        match self.position(&kid) {
            Some(i) if self.holds(i, key) => {}
            Some(i) => {
                self.keys[i] = key.public_jwk();
                self.published.insert(kid.clone(), now.unix_timestamp());
            }
            None => self.keys.push(key.public_jwk()),
        }
        self.published.entry(kid).or_insert(now.unix_timestamp());
        *self != before
    }

    /// Whether `key` is published: a JWK with its kid and the same public key.
    pub fn contains(&self, key: &JwtSigningKey) -> bool {
        self.position(key.kid()).is_some_and(|i| self.holds(i, key))
    }

    /// Whether the JWK at `i` is `key`'s public key, read as the JWKS validator reads it.
    fn holds(&self, i: usize, key: &JwtSigningKey) -> bool {
        Jwk::parse(&self.keys[i]).is_ok_and(|jwk| jwk.key == key.public)
    }

    fn position(&self, kid: &str) -> Option<usize> {
        self.keys
            .iter()
            .position(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
    }

    /// Makes `key` the published signing key at `now`. A previous signing key stays
    /// published for `retain` (the token lifetime plus the allowed skew) and is removed by
    /// [`JwksDocument::prune`] after that. Returns whether the document changed.
    ///
    /// A different key published under the same kid is replaced at once (a fixed
    /// `--jwt-key-id` across a key change): verifiers could not tell the two apart anyway.
    pub fn publish(&mut self, key: &JwtSigningKey, now: OffsetDateTime, retain: Duration) -> bool {
        let before = self.clone();
        let kid = key.kid().to_owned();
        self.announce(key, now);
        if let Some(old) = self.signing_kid.take() {
            if old != kid && self.position(&old).is_some() {
                let until = now.saturating_add(retain).unix_timestamp();
                self.retired.entry(old).or_insert(until);
            }
        }
        self.retired.remove(&kid);
        self.signing_kid = Some(kid);
        *self != before
    }

    /// Removes keys Sigil retired whose tokens have all expired at `now`; returns their
    /// kids.
    pub fn prune(&mut self, now: OffsetDateTime) -> Vec<String> {
        let now_s = now.unix_timestamp();
        let expired: Vec<String> = self
            .retired
            .iter()
            .filter(|(kid, until)| **until <= now_s && Some(kid.as_str()) != self.signing_kid())
            .map(|(kid, _)| kid.clone())
            .collect();
        for kid in &expired {
            self.retired.remove(kid);
            self.keys
                .retain(|k| k.get("kid").and_then(Value::as_str) != Some(kid.as_str()));
        }
        // Bookkeeping for keys a person already removed is dropped too.
        let present: Vec<String> = self.kids().into_iter().map(str::to_owned).collect();
        self.retired.retain(|kid, _| present.contains(kid));
        self.published.retain(|kid, _| present.contains(kid));
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const URL_SAFE_NO_PAD: base64::engine::GeneralPurpose = jose::B64URL;

    fn subject() -> SpiffeId {
        SpiffeId::workload(
            &"example.org".parse().unwrap(),
            &"shop".parse().unwrap(),
            &"orders".parse().unwrap(),
        )
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn split(token: &str) -> (Value, Value, Vec<u8>, String) {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "compact JWS has three parts");
        let h = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let c = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        let s = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        (h, c, s, format!("{}.{}", parts[0], parts[1]))
    }

    /// Verifies a token against only its published JWK, as a relying party would.
    pub(crate) fn verify_with_jwk(token: &str, jwk: &Value) -> bool {
        let keys = jose::JwkSet {
            keys: vec![Jwk::parse(jwk).unwrap()],
            skipped: Vec::new(),
        };
        jose::parse_unverified(token).is_ok_and(|t| t.verify_signature(&keys).is_ok())
    }

    #[test]
    fn every_algorithm_signs_tokens_that_verify_with_the_published_jwk() {
        for alg in Algorithm::ALL {
            let key = JwtSigningKey::generate(alg).unwrap();
            assert_eq!(key.algorithm(), alg);
            let jwk = key.public_jwk();
            assert_eq!(jwk["alg"], alg.name());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], key.kid());
            assert_eq!(Jwk::parse(&jwk).unwrap().key.thumbprint(), key.thumbprint());
            assert_eq!(key.kid(), jose::kid_from_thumbprint(&key.thumbprint()));
            let sub = subject();
            let aud = vec!["example.org".to_string(), "api://x".to_string()];
            let req = JwtRequest {
                subject: &sub,
                audiences: &aud,
                issuer: None,
                ttl: Duration::hours(24),
                clock_skew: Duration::minutes(15),
            };
            let token = key.sign(&req, t0()).unwrap();
            assert!(verify_with_jwk(&token, &jwk), "{alg}: signature verifies");
            // A flipped payload byte breaks it.
            let mut bad = token.clone().into_bytes();
            let mid = token.find('.').unwrap() + 3;
            bad[mid] = if bad[mid] == b'A' { b'B' } else { b'A' };
            assert!(!verify_with_jwk(&String::from_utf8(bad).unwrap(), &jwk));
            // Another key of the same algorithm does not verify it.
            let other = JwtSigningKey::generate(alg).unwrap().public_jwk();
            assert!(!verify_with_jwk(&token, &other), "{alg}");
            // PEM round trip keeps the key and its kid.
            let back = JwtSigningKey::from_pem(key.to_pem().as_bytes(), Some(alg)).unwrap();
            assert_eq!(back.kid(), key.kid());
        }
    }

    #[test]
    fn claims_and_header_follow_dapr() {
        let key = JwtSigningKey::generate(Algorithm::Es256).unwrap();
        let sub = subject();
        let aud = audiences(
            &"example.org".parse().unwrap(),
            &[
                "a".into(),
                "example.org".into(),
                "".into(),
                "a".into(),
                "b".into(),
            ],
        )
        .unwrap();
        assert_eq!(aud, vec!["example.org", "a", "b"]);
        let req = JwtRequest {
            subject: &sub,
            audiences: &aud,
            issuer: Some("https://issuer.example"),
            ttl: Duration::hours(24),
            clock_skew: Duration::minutes(15),
        };
        let token = key.sign(&req, t0()).unwrap();
        let (h, c, sig, _) = split(&token);
        assert_eq!(h, json!({"alg": "ES256", "kid": key.kid(), "typ": "JWT"}));
        assert_eq!(sig.len(), 64, "ES256 signatures are fixed r||s");
        let now = t0().unix_timestamp();
        assert_eq!(c["sub"], "spiffe://example.org/ns/shop/orders");
        assert_eq!(c["aud"], json!(["example.org", "a", "b"]));
        assert_eq!(c["iat"], now);
        assert_eq!(c["nbf"], now - 900);
        assert_eq!(c["exp"], now + 86400);
        assert_eq!(c["use"], "sig");
        assert_eq!(c["iss"], "https://issuer.example");
        let jti = c["jti"].as_str().unwrap();
        assert_eq!(jti.len(), 32);
        assert!(jti.chars().all(|ch| ch.is_ascii_hexdigit()));
        let (_, c2, _, _) = split(&key.sign(&req, t0()).unwrap());
        assert_ne!(c2["jti"], c["jti"], "jti is fresh per token");
        // Without an issuer there is no iss claim, and the kid can be set.
        let key = key.with_key_id("my-key");
        let req = JwtRequest {
            issuer: None,
            ..req
        };
        let (h, c, _, _) = split(&key.sign(&req, t0()).unwrap());
        assert_eq!(h["kid"], "my-key");
        assert!(c.get("iss").is_none());
    }

    #[test]
    fn audiences_are_bounded() {
        let td: TrustDomain = "public".parse().unwrap();
        let many: Vec<String> = (0..=MAX_AUDIENCES).map(|i| format!("a{i}")).collect();
        assert!(matches!(audiences(&td, &many), Err(Error::JwtAudience(_))));
        assert!(audiences(&td, &["x".repeat(MAX_AUDIENCE_LEN + 1)]).is_err());
        assert!(audiences(&td, &["a\nb".into()]).is_err());
        assert_eq!(audiences(&td, &[]).unwrap(), vec!["public"]);
    }

    #[test]
    fn key_and_algorithm_must_fit() {
        let rsa = JwtSigningKey::generate(Algorithm::Rs256).unwrap();
        let pem = rsa.to_pem();
        assert_eq!(
            JwtSigningKey::from_pem(pem.as_bytes(), None)
                .unwrap()
                .algorithm(),
            Algorithm::Rs256
        );
        assert_eq!(
            JwtSigningKey::from_pem(pem.as_bytes(), Some(Algorithm::Ps512))
                .unwrap()
                .algorithm(),
            Algorithm::Ps512
        );
        let e = JwtSigningKey::from_pem(pem.as_bytes(), Some(Algorithm::Es256))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot sign ES256"), "{e}");
        let p384 = JwtSigningKey::generate(Algorithm::Es384).unwrap().to_pem();
        assert_eq!(
            JwtSigningKey::from_pem(p384.as_bytes(), None)
                .unwrap()
                .algorithm(),
            Algorithm::Es384
        );
        assert!(JwtSigningKey::from_pem(p384.as_bytes(), Some(Algorithm::Es256)).is_err());
        let ed = JwtSigningKey::generate(Algorithm::EdDsa).unwrap().to_pem();
        let e = JwtSigningKey::from_pem(ed.as_bytes(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("EdDSA"), "{e}");
        assert!(JwtSigningKey::from_pem(b"junk", None).is_err());
        let shown = format!("{rsa:?}");
        assert!(shown.contains("<redacted>") && !shown.contains(&pem[40..60]));
    }

    #[test]
    fn reads_openssl_keys_in_every_format() {
        let run = |cmd: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .output()
                .unwrap();
            assert!(out.status.success(), "{cmd}");
            out.stdout
        };
        for (cmd, alg) in [
            (
                "openssl genrsa 2048 2>/dev/null | openssl rsa -traditional 2>/dev/null",
                Algorithm::Rs256,
            ),
            (
                "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 2>/dev/null",
                Algorithm::Rs256,
            ),
            (
                "openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null",
                Algorithm::Es256,
            ),
            (
                "openssl ecparam -name secp384r1 -genkey -noout 2>/dev/null",
                Algorithm::Es384,
            ),
            (
                "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null",
                Algorithm::Es256,
            ),
        ] {
            let pem = run(cmd);
            let key = JwtSigningKey::from_pem(&pem, None).unwrap_or_else(|e| panic!("{cmd}: {e}"));
            assert_eq!(key.algorithm(), alg, "{cmd}");
        }
        let ed = run("openssl genpkey -algorithm ed25519 2>/dev/null");
        let key = JwtSigningKey::from_pem(&ed, Some(Algorithm::EdDsa)).unwrap();
        assert_eq!(key.algorithm(), Algorithm::EdDsa);
    }

    #[test]
    fn jwks_document_round_trips_and_hides_bookkeeping() {
        let a = JwtSigningKey::generate(Algorithm::Es256).unwrap();
        let b = JwtSigningKey::generate(Algorithm::Rs256).unwrap();
        let mut doc = JwksDocument::new();
        assert!(doc.publish(&a, t0(), Duration::hours(1)));
        assert!(!doc.publish(&a, t0(), Duration::hours(1)), "idempotent");
        assert!(doc.publish(&b, t0(), Duration::hours(1)));
        assert_eq!(doc.kids(), vec![a.kid(), b.kid()]);
        assert_eq!(doc.algorithms(), vec!["ES256", "RS256"]);
        let public: Value = serde_json::from_slice(&doc.to_public_json()).unwrap();
        assert_eq!(public.as_object().unwrap().len(), 1, "only \"keys\"");
        assert_eq!(public["keys"][0], a.public_jwk());
        assert_eq!(public["keys"][1], b.public_jwk());
        let back = JwksDocument::parse(&doc.to_stored_json()).unwrap();
        assert_eq!(back, doc);
        assert!(back.contains(&a) && back.contains(&b));
        assert_eq!(back.signing_kid(), Some(b.kid()));
        // A Dapr-written JWKS (no bookkeeping) parses and matches its key.
        let dapr = serde_json::to_vec(&json!({"keys": [a.public_jwk()]})).unwrap();
        let parsed = JwksDocument::parse(&dapr).unwrap();
        assert!(parsed.contains(&a) && !parsed.contains(&b));
        // A same-kid key with other content does not count as published.
        let imposter = JwtSigningKey::generate(Algorithm::Es256)
            .unwrap()
            .with_key_id(a.kid());
        assert!(!parsed.contains(&imposter));
        // Private members and non-JWKS documents are refused.
        let mut private = a.public_jwk();
        private["d"] = "AAAA".into();
        let bad = serde_json::to_vec(&json!({"keys": [private]})).unwrap();
        assert!(JwksDocument::parse(&bad).is_err());
        assert!(JwksDocument::parse(b"{}").is_err());
        assert!(JwksDocument::parse(b"not json").is_err());
    }

    #[test]
    fn rotation_keeps_the_old_key_until_its_tokens_expire() {
        let retain = Duration::hours(24) + Duration::minutes(15);
        let old = JwtSigningKey::generate(Algorithm::Es256).unwrap();
        let new = JwtSigningKey::generate(Algorithm::Es256).unwrap();
        let manual = serde_json::from_value::<Value>(
            json!({"kty": "EC", "crv": "P-256", "kid": "by-hand", "x": "AA", "y": "AA"}),
        )
        .unwrap();
        let mut doc =
            JwksDocument::parse(&serde_json::to_vec(&json!({"keys": [manual]})).unwrap()).unwrap();
        doc.publish(&old, t0(), retain);
        assert!(
            doc.prune(t0() + Duration::days(400)).is_empty(),
            "nothing retired yet"
        );

        let rotated_at = t0() + Duration::days(3);
        assert!(doc.publish(&new, rotated_at, retain));
        assert!(doc.contains(&new) && doc.contains(&old), "both published");
        assert_eq!(doc.signing_kid(), Some(new.kid()));
        assert_eq!(
            doc.retired_until(old.kid()),
            Some((rotated_at + retain).unix_timestamp())
        );
        // Bookkeeping survives storage.
        let mut doc = JwksDocument::parse(&doc.to_stored_json()).unwrap();
        assert!(doc
            .prune(rotated_at + retain - Duration::seconds(1))
            .is_empty());
        assert!(doc.contains(&old), "kept while its tokens may be valid");
        assert_eq!(doc.prune(rotated_at + retain), vec![old.kid().to_string()]);
        assert!(!doc.contains(&old) && doc.contains(&new));
        assert_eq!(
            doc.kids(),
            vec!["by-hand", new.kid()],
            "keys added by hand stay"
        );

        // Rotating back to a retired key un-retires it.
        let mut doc2 = JwksDocument::new();
        doc2.publish(&old, t0(), retain);
        doc2.publish(&new, t0(), retain);
        doc2.publish(&old, t0(), retain);
        assert_eq!(doc2.retired_until(old.kid()), None);
        assert!(doc2.retired_until(new.kid()).is_some());
    }
}
