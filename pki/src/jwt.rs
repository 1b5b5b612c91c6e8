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
use std::str::FromStr;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{json, Map, Value};
use time::{Duration, OffsetDateTime};
use zeroize::{Zeroize, Zeroizing};

use crate::der;
use crate::{Error, SpiffeId, TrustDomain};

/// Most audiences one request may ask for (Sigil's bound; each costs a signature).
pub const MAX_AUDIENCES: usize = 16;
/// Longest audience accepted, in bytes.
pub const MAX_AUDIENCE_LEN: usize = 512;
/// Most keys kept in a JWKS document.
pub const MAX_JWKS_KEYS: usize = 64;
/// Largest JWKS document read, in bytes.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Bits of a generated RSA key (Dapr's choice).
pub const GENERATED_RSA_BITS: usize = 2048;

/// JWS signature algorithms Sigil signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Dapr's default).
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519. daprd does not accept it: only on explicit request.
    EdDsa,
}

/// The kind of key an algorithm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtKeyKind {
    /// RSA.
    Rsa,
    /// ECDSA on P-256.
    P256,
    /// ECDSA on P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for JwtKeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwtKeyKind::Rsa => "RSA",
            JwtKeyKind::P256 => "ECDSA P-256",
            JwtKeyKind::P384 => "ECDSA P-384",
            JwtKeyKind::Ed25519 => "Ed25519",
        })
    }
}

impl JwsAlgorithm {
    /// Every algorithm, for help texts and tests.
    pub const ALL: [JwsAlgorithm; 9] = [
        JwsAlgorithm::Rs256,
        JwsAlgorithm::Rs384,
        JwsAlgorithm::Rs512,
        JwsAlgorithm::Ps256,
        JwsAlgorithm::Ps384,
        JwsAlgorithm::Ps512,
        JwsAlgorithm::Es256,
        JwsAlgorithm::Es384,
        JwsAlgorithm::EdDsa,
    ];

    /// The JOSE name (`RS256`, `EdDSA`, ...).
    pub fn name(self) -> &'static str {
        match self {
            JwsAlgorithm::Rs256 => "RS256",
            JwsAlgorithm::Rs384 => "RS384",
            JwsAlgorithm::Rs512 => "RS512",
            JwsAlgorithm::Ps256 => "PS256",
            JwsAlgorithm::Ps384 => "PS384",
            JwsAlgorithm::Ps512 => "PS512",
            JwsAlgorithm::Es256 => "ES256",
            JwsAlgorithm::Es384 => "ES384",
            JwsAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// The key this algorithm signs with.
    pub fn key_kind(self) -> JwtKeyKind {
        match self {
            JwsAlgorithm::Rs256
            | JwsAlgorithm::Rs384
            | JwsAlgorithm::Rs512
            | JwsAlgorithm::Ps256
            | JwsAlgorithm::Ps384
            | JwsAlgorithm::Ps512 => JwtKeyKind::Rsa,
            JwsAlgorithm::Es256 => JwtKeyKind::P256,
            JwsAlgorithm::Es384 => JwtKeyKind::P384,
            JwsAlgorithm::EdDsa => JwtKeyKind::Ed25519,
        }
    }

    /// Whether Dapr sidecars accept tokens signed this way (they take RS*, ES* and PS*).
    pub fn accepted_by_daprd(self) -> bool {
        self != JwsAlgorithm::EdDsa
    }

    /// The algorithm used with an existing key when none was configured; `None` for
    /// Ed25519, which must be asked for explicitly.
    pub fn default_for(kind: JwtKeyKind) -> Option<Self> {
        match kind {
            JwtKeyKind::Rsa => Some(JwsAlgorithm::Rs256),
            JwtKeyKind::P256 => Some(JwsAlgorithm::Es256),
            JwtKeyKind::P384 => Some(JwsAlgorithm::Es384),
            JwtKeyKind::Ed25519 => None,
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for JwsAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JwsAlgorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = JwsAlgorithm::ALL.iter().map(|a| a.name()).collect();
                format!(
                    "unknown JWT signing algorithm {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

enum Signer {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// Public members of a JWK that RFC 7638 hashes, base64url-encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PublicParams {
    Rsa {
        n: String,
        e: String,
    },
    Ec {
        crv: &'static str,
        x: String,
        y: String,
    },
    Okp {
        x: String,
    },
}

impl PublicParams {
    /// RFC 7638 canonical form: required members only, sorted, no whitespace.
    fn canonical_json(&self) -> String {
        // Every value is base64url or a fixed name, so no JSON escaping is needed.
        match self {
            PublicParams::Rsa { n, e } => format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#),
            PublicParams::Ec { crv, x, y } => {
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            PublicParams::Okp { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
        }
    }

    fn thumbprint(&self) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.canonical_json().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            PublicParams::Rsa { n, e } => {
                m.insert("kty".into(), "RSA".into());
                m.insert("n".into(), n.clone().into());
                m.insert("e".into(), e.clone().into());
            }
            PublicParams::Ec { crv, x, y } => {
                m.insert("kty".into(), "EC".into());
                m.insert("crv".into(), (*crv).into());
                m.insert("x".into(), x.clone().into());
                m.insert("y".into(), y.clone().into());
            }
            PublicParams::Okp { x } => {
                m.insert("kty".into(), "OKP".into());
                m.insert("crv".into(), "Ed25519".into());
                m.insert("x".into(), x.clone().into());
            }
        }
        m
    }

    /// Reads the required members of a JWK in JSON; `None` for key types Sigil does not
    /// sign with or JWKs that lack members (such keys are kept but never matched).
    fn from_json(jwk: &Value) -> Option<Self> {
        let s = |k: &str| jwk.get(k).and_then(Value::as_str).map(str::to_owned);
        match jwk.get("kty")?.as_str()? {
            "RSA" => Some(PublicParams::Rsa {
                n: s("n")?,
                e: s("e")?,
            }),
            "EC" => {
                let crv = match jwk.get("crv")?.as_str()? {
                    "P-256" => "P-256",
                    "P-384" => "P-384",
                    "P-521" => "P-521",
                    _ => return None,
                };
                Some(PublicParams::Ec {
                    crv,
                    x: s("x")?,
                    y: s("y")?,
                })
            }
            "OKP" if jwk.get("crv")?.as_str()? == "Ed25519" => {
                Some(PublicParams::Okp { x: s("x")? })
            }
            _ => None,
        }
    }
}

/// The RFC 7638 SHA-256 thumbprint of a JWK given as JSON (only its required members
/// count). Errors for key types Sigil does not know.
pub fn jwk_thumbprint(jwk: &Value) -> Result<[u8; 32], Error> {
    PublicParams::from_json(jwk)
        .map(|p| p.thumbprint())
        .ok_or_else(|| Error::Jwks("JWK lacks the members of an RSA, EC or OKP key".into()))
}

/// Dapr's `kid` for a thumbprint: standard base64 with padding.
pub fn kid_from_thumbprint(thumbprint: &[u8; 32]) -> String {
    STANDARD.encode(thumbprint)
}

/// A key that signs JWT-SVIDs, with its algorithm and key id. Its PKCS#8 bytes are wiped
/// on drop and its `Debug` output names only the algorithm and kid.
pub struct JwtSigningKey {
    alg: JwsAlgorithm,
    signer: Signer,
    pkcs8: Zeroizing<Vec<u8>>,
    public: PublicParams,
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
    pub fn generate(alg: JwsAlgorithm) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let pkcs8: Zeroizing<Vec<u8>> = match alg.key_kind() {
            JwtKeyKind::Rsa => {
                use rsa::pkcs8::EncodePrivateKey as _;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, GENERATED_RSA_BITS)
                    .map_err(key_err)?;
                let doc = key.to_pkcs8_der().map_err(key_err)?;
                Zeroizing::new(doc.as_bytes().to_vec())
            }
            JwtKeyKind::P256 => Zeroizing::new(
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| key_err("P-256 key generation failed"))?
                    .as_ref()
                    .to_vec(),
            ),
            JwtKeyKind::P384 => Zeroizing::new(
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
                    .map_err(|_| key_err("P-384 key generation failed"))?
                    .as_ref()
                    .to_vec(),
            ),
            JwtKeyKind::Ed25519 => Zeroizing::new(
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
    pub fn from_pem(pem_text: &[u8], alg: Option<JwsAlgorithm>) -> Result<Self, Error> {
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

    fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>, alg: Option<JwsAlgorithm>) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let (kind, signer, public) = if let Ok(kp) = RsaKeyPair::from_pkcs8(&pkcs8) {
            let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
            let public = PublicParams::Rsa {
                n: URL_SAFE_NO_PAD.encode(&c.n),
                e: URL_SAFE_NO_PAD.encode(&c.e),
            };
            (JwtKeyKind::Rsa, Signer::Rsa(kp), public)
        } else if let Ok(kp) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
        {
            let public = ec_public("P-256", kp.public_key().as_ref())?;
            (JwtKeyKind::P256, Signer::Ecdsa(kp), public)
        } else if let Ok(kp) =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8, &rng)
        {
            let public = ec_public("P-384", kp.public_key().as_ref())?;
            (JwtKeyKind::P384, Signer::Ecdsa(kp), public)
        } else if let Ok(kp) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8) {
            let public = PublicParams::Okp {
                x: URL_SAFE_NO_PAD.encode(kp.public_key().as_ref()),
            };
            (JwtKeyKind::Ed25519, Signer::Ed25519(kp), public)
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
            None => JwsAlgorithm::default_for(kind).ok_or_else(|| {
                key_err("the key is Ed25519; set --jwt-signing-algorithm EdDSA to use it (daprd does not accept EdDSA tokens)")
            })?,
        };
        // An ECDSA key pair is bound to its curve and hash at parse time: re-parse so the
        // pair signs with the requested algorithm, not only the curve we probed with.
        let signer = match (signer, alg) {
            (Signer::Ecdsa(_), JwsAlgorithm::Es256) | (Signer::Ecdsa(_), JwsAlgorithm::Es384) => {
                let a = if alg == JwsAlgorithm::Es256 {
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING
                } else {
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING
                };
                Signer::Ecdsa(EcdsaKeyPair::from_pkcs8(a, &pkcs8, &rng).map_err(key_err)?)
            }
            (s, _) => s,
        };
        let kid = kid_from_thumbprint(&public.thumbprint());
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
    pub fn algorithm(&self) -> JwsAlgorithm {
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
        let mut m = self.public.to_json();
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
        let mut input = URL_SAFE_NO_PAD.encode(header.to_string());
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig = self.sign_bytes(input.as_bytes())?;
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(input)
    }

    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let fail = |_| Error::Signing(format!("{} signature failed", self.alg));
        match &self.signer {
            Signer::Rsa(kp) => {
                let padding: &'static dyn signature::RsaEncoding = match self.alg {
                    JwsAlgorithm::Rs256 => &signature::RSA_PKCS1_SHA256,
                    JwsAlgorithm::Rs384 => &signature::RSA_PKCS1_SHA384,
                    JwsAlgorithm::Rs512 => &signature::RSA_PKCS1_SHA512,
                    JwsAlgorithm::Ps256 => &signature::RSA_PSS_SHA256,
                    JwsAlgorithm::Ps384 => &signature::RSA_PSS_SHA384,
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

fn ec_public(crv: &'static str, point: &[u8]) -> Result<PublicParams, Error> {
    // ring gives the uncompressed point 0x04 || X || Y.
    let coord = (point.len().saturating_sub(1)) / 2;
    if point.first() != Some(&0x04) || point.len() != 1 + 2 * coord || coord == 0 {
        return Err(key_err("unexpected EC public key encoding"));
    }
    Ok(PublicParams::Ec {
        crv,
        x: URL_SAFE_NO_PAD.encode(&point[1..1 + coord]),
        y: URL_SAFE_NO_PAD.encode(&point[1 + coord..]),
    })
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
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(Error::Jwks(format!(
                "{} bytes; at most {MAX_JWKS_BYTES} are read",
                bytes.len()
            )));
        }
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| Error::Jwks(format!("not JSON: {e}")))?;
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Jwks("no \"keys\" array".into()))?;
        if keys.len() > MAX_JWKS_KEYS {
            return Err(Error::Jwks(format!(
                "{} keys; at most {MAX_JWKS_KEYS} are kept",
                keys.len()
            )));
        }
        for k in keys {
            let obj = k
                .as_object()
                .ok_or_else(|| Error::Jwks("a key is not a JSON object".into()))?;
            if ["d", "p", "q", "dp", "dq", "qi", "k"]
                .iter()
                .any(|m| obj.contains_key(*m))
            {
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
            Some(i) if PublicParams::from_json(&self.keys[i]).as_ref() == Some(&key.public) => {}
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
        self.position(key.kid())
            .map(|i| PublicParams::from_json(&self.keys[i]).as_ref() == Some(&key.public))
            .unwrap_or(false)
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

    /// Verifies a token with ring, using only the public JWK (as a relying party would).
    pub(crate) fn verify_with_jwk(token: &str, jwk: &Value) -> bool {
        let parts: Vec<&str> = token.split('.').collect();
        let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let Ok(sig) = URL_SAFE_NO_PAD.decode(parts[2]) else {
            return false;
        };
        let input = format!("{}.{}", parts[0], parts[1]);
        let b = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
        let alg = h["alg"].as_str().unwrap();
        match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
                let params: &signature::RsaParameters = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                signature::RsaPublicKeyComponents {
                    n: b("n"),
                    e: b("e"),
                }
                .verify(params, input.as_bytes(), &sig)
                .is_ok()
            }
            "ES256" | "ES384" => {
                let a = if alg == "ES256" {
                    &signature::ECDSA_P256_SHA256_FIXED
                } else {
                    &signature::ECDSA_P384_SHA384_FIXED
                };
                let mut point = vec![4u8];
                point.extend(b("x"));
                point.extend(b("y"));
                signature::UnparsedPublicKey::new(a, point)
                    .verify(input.as_bytes(), &sig)
                    .is_ok()
            }
            "EdDSA" => signature::UnparsedPublicKey::new(&signature::ED25519, b("x"))
                .verify(input.as_bytes(), &sig)
                .is_ok(),
            _ => false,
        }
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 section 3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let tp = jwk_thumbprint(&jwk).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(tp),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        // Dapr's kid encoding of the same digest: standard base64 with padding.
        assert_eq!(
            kid_from_thumbprint(&tp),
            "NzbLsXh8uDCcd+6MNwXF4W/7noWXFZAfHkxZsRGC9Xs="
        );
    }

    #[test]
    fn every_algorithm_signs_tokens_that_verify_with_the_published_jwk() {
        for alg in JwsAlgorithm::ALL {
            let key = JwtSigningKey::generate(alg).unwrap();
            assert_eq!(key.algorithm(), alg);
            let jwk = key.public_jwk();
            assert_eq!(jwk["alg"], alg.name());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], key.kid());
            assert_eq!(jwk_thumbprint(&jwk).unwrap(), key.thumbprint());
            assert_eq!(key.kid(), kid_from_thumbprint(&key.thumbprint()));
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
        let key = JwtSigningKey::generate(JwsAlgorithm::Es256).unwrap();
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
        let rsa = JwtSigningKey::generate(JwsAlgorithm::Rs256).unwrap();
        let pem = rsa.to_pem();
        assert_eq!(
            JwtSigningKey::from_pem(pem.as_bytes(), None)
                .unwrap()
                .algorithm(),
            JwsAlgorithm::Rs256
        );
        assert_eq!(
            JwtSigningKey::from_pem(pem.as_bytes(), Some(JwsAlgorithm::Ps512))
                .unwrap()
                .algorithm(),
            JwsAlgorithm::Ps512
        );
        let e = JwtSigningKey::from_pem(pem.as_bytes(), Some(JwsAlgorithm::Es256))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot sign ES256"), "{e}");
        let p384 = JwtSigningKey::generate(JwsAlgorithm::Es384)
            .unwrap()
            .to_pem();
        assert_eq!(
            JwtSigningKey::from_pem(p384.as_bytes(), None)
                .unwrap()
                .algorithm(),
            JwsAlgorithm::Es384
        );
        assert!(JwtSigningKey::from_pem(p384.as_bytes(), Some(JwsAlgorithm::Es256)).is_err());
        let ed = JwtSigningKey::generate(JwsAlgorithm::EdDsa)
            .unwrap()
            .to_pem();
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
                JwsAlgorithm::Rs256,
            ),
            (
                "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 2>/dev/null",
                JwsAlgorithm::Rs256,
            ),
            (
                "openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null",
                JwsAlgorithm::Es256,
            ),
            (
                "openssl ecparam -name secp384r1 -genkey -noout 2>/dev/null",
                JwsAlgorithm::Es384,
            ),
            (
                "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null",
                JwsAlgorithm::Es256,
            ),
        ] {
            let pem = run(cmd);
            let key = JwtSigningKey::from_pem(&pem, None).unwrap_or_else(|e| panic!("{cmd}: {e}"));
            assert_eq!(key.algorithm(), alg, "{cmd}");
        }
        let ed = run("openssl genpkey -algorithm ed25519 2>/dev/null");
        let key = JwtSigningKey::from_pem(&ed, Some(JwsAlgorithm::EdDsa)).unwrap();
        assert_eq!(key.algorithm(), JwsAlgorithm::EdDsa);
    }

    #[test]
    fn jwks_document_round_trips_and_hides_bookkeeping() {
        let a = JwtSigningKey::generate(JwsAlgorithm::Es256).unwrap();
        let b = JwtSigningKey::generate(JwsAlgorithm::Rs256).unwrap();
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
        let imposter = JwtSigningKey::generate(JwsAlgorithm::Es256)
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
        let old = JwtSigningKey::generate(JwsAlgorithm::Es256).unwrap();
        let new = JwtSigningKey::generate(JwsAlgorithm::Es256).unwrap();
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
