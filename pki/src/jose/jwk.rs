//! JSON Web Keys (RFC 7517) and key sets: public keys only, read strictly, written in the
//! form others read, and hashed by their RFC 7638 thumbprint.
//!
//! One reader serves both directions: the JWKS validator reads a relying party's key set
//! with it, and the JWT-SVID store reads its own published set with it, so "this JWK is this
//! key" means the same everywhere.

use base64::Engine as _;
use ring::signature;
use serde_json::{Map, Value};

use super::{Algorithm, KeyKind, JWK_B64, MAX_JWKS_BYTES, MAX_JWKS_KEYS, MAX_KID_BYTES};

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (ring's limit).
pub const MAX_RSA_BITS: usize = 8192;

/// Members that only a private JWK has: a published set must hold none of them.
pub const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// Public key material of a usable JWK, as raw bytes (so two encodings of one key compare
/// equal).
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA modulus and exponent, big-endian without leading zeros.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
    /// P-256 point, uncompressed (`04 || x || y`).
    P256(Vec<u8>),
    /// P-384 point, uncompressed.
    P384(Vec<u8>),
    /// Ed25519 public key.
    Ed25519(Vec<u8>),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicKey::Rsa { n, .. } => write!(f, "RSA-{}", n.len() * 8),
            PublicKey::P256(_) => f.write_str("EC P-256"),
            PublicKey::P384(_) => f.write_str("EC P-384"),
            PublicKey::Ed25519(_) => f.write_str("Ed25519"),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn strip_leading_zeros(bytes: &[u8]) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes[zeros..].to_vec()
}

/// The base64url `x` and `y` of an uncompressed point `04 || x || y`.
fn coordinates(point: &[u8]) -> (String, String) {
    let half = (point.len() - 1) / 2;
    (b64(&point[1..1 + half]), b64(&point[1 + half..]))
}

impl PublicKey {
    /// The JOSE `crv` of an EC or OKP key; empty for RSA.
    fn curve_name(&self) -> &'static str {
        match self {
            PublicKey::Rsa { .. } => "",
            PublicKey::P256(_) => "P-256",
            PublicKey::P384(_) => "P-384",
            PublicKey::Ed25519(_) => "Ed25519",
        }
    }

    /// An RSA key from its big-endian modulus and exponent.
    pub fn rsa(n: &[u8], e: &[u8]) -> Self {
        PublicKey::Rsa {
            n: strip_leading_zeros(n),
            e: strip_leading_zeros(e),
        }
    }

    /// An ECDSA key from ring's uncompressed point; `None` when the point has another
    /// length than the curve's.
    pub fn ec(kind: KeyKind, point: &[u8]) -> Option<Self> {
        let fits = |coord: usize| point.len() == 1 + 2 * coord && point[0] == 0x04;
        match kind {
            KeyKind::P256 if fits(32) => Some(PublicKey::P256(point.to_vec())),
            KeyKind::P384 if fits(48) => Some(PublicKey::P384(point.to_vec())),
            _ => None,
        }
    }

    /// The kind of key, which decides the algorithms it verifies.
    pub fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa { .. } => KeyKind::Rsa,
            PublicKey::P256(_) => KeyKind::P256,
            PublicKey::P384(_) => KeyKind::P384,
            PublicKey::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// The required members of the JWK (`kty` and the key's own), base64url-encoded.
    pub fn to_members(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match self {
            PublicKey::Rsa { n, e } => {
                m.insert("kty".into(), "RSA".into());
                m.insert("n".into(), b64(n).into());
                m.insert("e".into(), b64(e).into());
            }
            PublicKey::P256(p) | PublicKey::P384(p) => {
                let (x, y) = coordinates(p);
                m.insert("kty".into(), "EC".into());
                m.insert("crv".into(), self.curve_name().into());
                m.insert("x".into(), x.into());
                m.insert("y".into(), y.into());
            }
            PublicKey::Ed25519(x) => {
                m.insert("kty".into(), "OKP".into());
                m.insert("crv".into(), "Ed25519".into());
                m.insert("x".into(), b64(x).into());
            }
        }
        m
    }

    /// The RFC 7638 SHA-256 thumbprint: the required members, sorted, without whitespace.
    pub fn thumbprint(&self) -> [u8; 32] {
        // Written out rather than serialised: serde_json keeps insertion order when any crate
        // in the build enables `preserve_order`. Every value is base64url or a fixed name, so
        // nothing needs escaping.
        let canonical = match self {
            PublicKey::Rsa { n, e } => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(e), b64(n))
            }
            PublicKey::P256(p) | PublicKey::P384(p) => {
                let (crv, (x, y)) = (self.curve_name(), coordinates(p));
                format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#)
            }
            PublicKey::Ed25519(x) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
        };
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// Checks `sig` over `message` with `alg`; false for any mismatch, an algorithm that
    /// does not fit the key included.
    pub fn verify(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        if alg.key_kind() != self.kind() {
            return false;
        }
        let unparsed = |a: &'static dyn signature::VerificationAlgorithm, key: &[u8]| {
            signature::UnparsedPublicKey::new(a, key)
                .verify(message, sig)
                .is_ok()
        };
        match self {
            PublicKey::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, message, sig)
                    .is_ok()
            }
            PublicKey::P256(point) => unparsed(&signature::ECDSA_P256_SHA256_FIXED, point),
            PublicKey::P384(point) => unparsed(&signature::ECDSA_P384_SHA384_FIXED, point),
            PublicKey::Ed25519(x) => unparsed(&signature::ED25519, x),
        }
    }
}

/// One usable verification key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    /// `kid`, if any.
    pub kid: Option<String>,
    /// The key's own `alg`, if it names one: then only that algorithm is accepted.
    pub alg: Option<Algorithm>,
    /// Key material.
    pub key: PublicKey,
}

fn b64_field(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = obj
        .get(name)
        .ok_or_else(|| format!("missing {name:?}"))?
        .as_str()
        .ok_or_else(|| format!("{name:?} is not a string"))?;
    JWK_B64
        .decode(text)
        .map_err(|_| format!("{name:?} is not base64url"))
}

impl Jwk {
    /// Reads one JWK. Strict about everything that decides what verifies: the key type and
    /// curve, coordinate lengths, RSA size (2048 to 8192 bits) and exponent, `use` (only
    /// `sig`), `key_ops` (must allow `verify`), and an `alg` that must fit the key. The
    /// error says why, for a log line.
    pub fn parse(value: &Value) -> Result<Jwk, String> {
        let obj = value.as_object().ok_or("not a JSON object")?;
        let text = |name: &str| -> Result<Option<&str>, String> {
            match obj.get(name) {
                None => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(Some)
                    .ok_or_else(|| format!("{name:?} is not a string")),
            }
        };
        let kty = text("kty")?.ok_or("missing \"kty\"")?;
        if let Some(u) = text("use")? {
            if u != "sig" {
                return Err(format!("\"use\" is {u:?}, not \"sig\""));
            }
        }
        if let Some(ops) = obj.get("key_ops") {
            let allows_verify = ops
                .as_array()
                .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
            if !allows_verify {
                return Err("\"key_ops\" does not allow \"verify\"".into());
            }
        }
        let kid = text("kid")?.map(str::to_owned);
        if kid.as_ref().is_some_and(|k| k.len() > MAX_KID_BYTES) {
            return Err("\"kid\" is too long".into());
        }
        let alg = text("alg")?
            .map(|a| Algorithm::from_jose(a).map_err(|e| format!("\"alg\": {e}")))
            .transpose()?;
        let key = match kty {
            "RSA" => {
                let n = strip_leading_zeros(&b64_field(obj, "n")?);
                let e = strip_leading_zeros(&b64_field(obj, "e")?);
                let bits = n.first().map_or(0, |top| {
                    (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
                });
                if bits < MIN_RSA_BITS {
                    return Err(format!(
                        "RSA key of {bits} bits (at least {MIN_RSA_BITS} required)"
                    ));
                }
                if bits > MAX_RSA_BITS {
                    return Err(format!(
                        "RSA key of {bits} bits (at most {MAX_RSA_BITS} supported)"
                    ));
                }
                // ring accepts odd exponents from 3 up to 2^33 - 1.
                let odd = e.last().is_some_and(|b| b & 1 == 1);
                if e.is_empty() || e.len() > 4 || !odd || e.as_slice() == [1] {
                    return Err("RSA exponent is not an odd number between 3 and 2^32".into());
                }
                PublicKey::Rsa { n, e }
            }
            "EC" => {
                let crv = text("crv")?.ok_or("missing \"crv\"")?;
                let (kind, len) = match crv {
                    "P-256" => (KeyKind::P256, 32),
                    "P-384" => (KeyKind::P384, 48),
                    other => return Err(format!("unsupported curve {other:?}")),
                };
                let x = b64_field(obj, "x")?;
                let y = b64_field(obj, "y")?;
                if x.len() != len || y.len() != len {
                    return Err(format!("{crv} coordinates must be {len} bytes"));
                }
                let point = [&[0x04][..], &x, &y].concat();
                PublicKey::ec(kind, &point).ok_or("malformed EC point")?
            }
            "OKP" => {
                let crv = text("crv")?.ok_or("missing \"crv\"")?;
                if crv != "Ed25519" {
                    return Err(format!("unsupported curve {crv:?}"));
                }
                let x = b64_field(obj, "x")?;
                if x.len() != 32 {
                    return Err("Ed25519 key must be 32 bytes".into());
                }
                PublicKey::Ed25519(x)
            }
            other => return Err(format!("unsupported key type {other:?}")),
        };
        let jwk = Jwk { kid, alg, key };
        if let Some(a) = alg {
            if !jwk.supports(a) {
                return Err(format!("\"alg\" {} does not fit the key", a.name()));
            }
        }
        Ok(jwk)
    }

    /// Whether a token signed with `alg` may be checked with this key.
    pub fn supports(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|own| own == alg) && alg.key_kind() == self.key.kind()
    }

    /// Checks `signature` over `message`; false for any mismatch, including an algorithm
    /// the key does not support.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.supports(alg) && self.key.verify(alg, message, signature)
    }
}

/// A parsed key set: the usable keys and why the others were skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwkSet {
    /// Usable keys, in document order.
    pub keys: Vec<Jwk>,
    /// One line per skipped key (index and reason), for the log.
    pub skipped: Vec<String>,
}

/// Why a JWKS document as a whole is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Over [`MAX_JWKS_BYTES`].
    #[error("JWKS document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// Not JSON.
    #[error("JWKS document is not valid JSON: {0}")]
    NotJson(String),
    /// No `keys` array at the top level.
    #[error("JWKS document has no \"keys\" array")]
    NoKeys,
    /// Over [`MAX_JWKS_KEYS`] entries.
    #[error("JWKS document has more than {MAX_JWKS_KEYS} keys")]
    TooManyKeys,
}

/// The `keys` array of a JWKS document, within the size and count limits: the one way a
/// document is opened, whether a relying party's or Sigil's own.
pub fn key_array(doc: &Value) -> Result<&Vec<Value>, JwksError> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NoKeys)?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(JwksError::TooManyKeys);
    }
    Ok(keys)
}

/// Reads a JWKS document's bytes as JSON, within [`MAX_JWKS_BYTES`].
pub fn document(bytes: &[u8]) -> Result<Value, JwksError> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    serde_json::from_slice(bytes).map_err(|e| JwksError::NotJson(e.to_string()))
}

impl JwkSet {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys that cannot be used are skipped with
    /// their reason, not fatal. Pure and total: any bytes give a value or an error, never a
    /// panic.
    pub fn parse(bytes: &[u8]) -> Result<JwkSet, JwksError> {
        let doc = document(bytes)?;
        let mut set = JwkSet::default();
        for (i, k) in key_array(&doc)?.iter().enumerate() {
            match Jwk::parse(k) {
                Ok(jwk) => set.keys.push(jwk),
                Err(reason) => set.skipped.push(format!("key {i}: {reason}")),
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::TestKey;
    use super::*;
    use serde_json::json;

    fn doc(keys: Value) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
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
        let tp = Jwk::parse(&jwk).unwrap().key.thumbprint();
        assert_eq!(b64(&tp), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        // Dapr's kid encoding of the same digest: standard base64 with padding.
        assert_eq!(
            super::super::kid_from_thumbprint(&tp),
            "NzbLsXh8uDCcd+6MNwXF4W/7noWXFZAfHkxZsRGC9Xs="
        );
    }

    #[test]
    fn padded_and_unpadded_encodings_are_one_key() {
        let p = |n: &str| Jwk::parse(&json!({"kty": "OKP", "crv": "Ed25519", "x": n})).unwrap();
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        assert_eq!(p(x).key, p(&format!("{x}=")).key);
        assert_eq!(Value::Object(p(x).key.to_members())["x"], x);
    }

    /// 1024-bit modulus made with `openssl genpkey`.
    const RSA1024_N: &str = "sHElEovV7KVz4LXLkUqXqnyNKbPcv75I1O08WwjzWeRetAdKwo9IasgNJi2FUyLGkMPDbpLCzVmKpILSay7VKlCH1SyenQj01__aFi16JoN3Caczqs3Gilj6PumyJAavFg3xU4ZZImkTsQMMIO6PIfX-MDLc1gARUw0w4hAHxBc";

    #[test]
    fn each_key_type_parses() {
        let rsa = TestKey::rsa();
        let mut rsa_jwk = rsa.jwk(Some("r"));
        rsa_jwk["use"] = "sig".into();
        rsa_jwk["alg"] = "RS256".into();
        let set = JwkSet::parse(&doc(json!([
            rsa_jwk,
            TestKey::p256().jwk(Some("p256")),
            TestKey::p384().jwk(None),
            TestKey::ed25519().jwk(Some("ed")),
        ])))
        .unwrap();
        assert!(set.skipped.is_empty(), "{:?}", set.skipped);
        assert_eq!(set.keys.len(), 4);
        assert!(
            matches!(&set.keys[0].key, PublicKey::Rsa { n, e } if n.len() == 256 && e == &[1, 0, 1])
        );
        assert_eq!(set.keys[0].alg, Some(Algorithm::Rs256));
        assert_eq!(set.keys[0].kid.as_deref(), Some("r"));
        assert!(matches!(&set.keys[1].key, PublicKey::P256(p) if p.len() == 65 && p[0] == 4));
        assert!(matches!(&set.keys[2].key, PublicKey::P384(p) if p.len() == 97));
        assert_eq!(set.keys[2].kid, None);
        assert!(matches!(&set.keys[3].key, PublicKey::Ed25519(x) if x.len() == 32));
        // Debug output shows the key type, never the material.
        assert_eq!(format!("{:?}", set.keys[0].key), "RSA-2048");
    }

    #[test]
    fn padded_base64_in_a_jwk_is_tolerated() {
        let mut j = TestKey::ed25519().jwk(None);
        let x = format!("{}=", j["x"].as_str().unwrap());
        j["x"] = x.into();
        assert_eq!(JwkSet::parse(&doc(json!([j]))).unwrap().keys.len(), 1);
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let good = TestKey::ed25519().jwk(Some("good"));
        let rsa = TestKey::rsa().jwk(None);
        let with = |base: &serde_json::Value, patch: serde_json::Value| {
            let mut v = base.clone();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            v
        };
        let p256 = TestKey::p256().jwk(None);
        let bad = vec![
            json!({"kty": "oct", "k": "c2VjcmV0"}),
            json!({"kty": "RSA", "n": RSA1024_N, "e": "AQAB"}),
            with(&rsa, json!({"e": "AQAA"})), // even exponent
            with(&rsa, json!({"e": "AQ"})),   // exponent 1
            with(&rsa, json!({"e": "AQABAQAB"})),
            with(&rsa, json!({"n": 5})),
            with(&rsa, json!({"alg": "ES256"})),
            with(&rsa, json!({"alg": "HS256"})),
            with(&rsa, json!({"alg": "none"})),
            with(&good, json!({"use": "enc"})),
            with(&good, json!({"key_ops": ["encrypt"]})),
            with(&good, json!({"key_ops": "verify"})),
            with(&good, json!({"crv": "X25519"})),
            with(&good, json!({"x": "AAAA"})),
            with(&good, json!({"x": "not base64!"})),
            with(&good, json!({"kid": "k".repeat(300)})),
            with(&good, json!({"kid": 7})),
            with(&p256, json!({"crv": "P-521"})),
            with(&p256, json!({"crv": "P-384"})),
            with(&p256, json!({"y": null})),
            json!({"n": "AQAB"}),
            json!("a string"),
            json!(null),
            json!([1, 2]),
        ];
        let n = bad.len();
        let mut keys = bad;
        keys.push(good.clone());
        keys.push(with(&good, json!({"key_ops": ["sign", "verify"]})));
        let set = JwkSet::parse(&doc(json!(keys))).unwrap();
        assert_eq!(set.keys.len(), 2, "skipped: {:#?}", set.skipped);
        assert_eq!(set.skipped.len(), n, "{:#?}", set.skipped);
        assert!(set.skipped[1].contains("1024 bits"), "{}", set.skipped[1]);
        assert!(set.skipped[9].contains("\"enc\""), "{}", set.skipped[9]);
    }

    #[test]
    fn hostile_documents_are_refused() {
        assert!(matches!(JwkSet::parse(b""), Err(JwksError::NotJson(_))));
        assert!(matches!(
            JwkSet::parse(b"\xff\x00"),
            Err(JwksError::NotJson(_))
        ));
        assert_eq!(JwkSet::parse(b"{}"), Err(JwksError::NoKeys));
        assert_eq!(JwkSet::parse(b"[]"), Err(JwksError::NoKeys));
        assert_eq!(JwkSet::parse(br#"{"keys": {}}"#), Err(JwksError::NoKeys));
        let many: Vec<_> = (0..=MAX_JWKS_KEYS).map(|_| json!({"kty": "oct"})).collect();
        assert_eq!(
            JwkSet::parse(&doc(json!(many))),
            Err(JwksError::TooManyKeys)
        );
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert_eq!(JwkSet::parse(&big), Err(JwksError::TooLarge));
        // Deep nesting hits serde_json's recursion limit: an error, not a stack overflow.
        let deep = format!("{{\"keys\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            JwkSet::parse(deep.as_bytes()),
            Err(JwksError::NotJson(_))
        ));
        // Empty key set: accepted (it revokes), with nothing usable.
        assert!(JwkSet::parse(br#"{"keys": []}"#).unwrap().keys.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = JwkSet::parse(&bytes);
        }

        #[test]
        fn parsing_arbitrary_key_fields_never_panics(
            kty in "(RSA|EC|OKP|oct|x)", crv in "(P-256|P-384|Ed25519|y)",
            n in "[A-Za-z0-9_=-]{0,400}", e in "[A-Za-z0-9_=-]{0,12}",
            x in "[A-Za-z0-9_=-]{0,70}", y in "[A-Za-z0-9_=-]{0,70}",
        ) {
            let d = doc(json!([{"kty": kty, "crv": crv, "n": n, "e": e, "x": x, "y": y}]));
            let _ = JwkSet::parse(&d);
        }
    }
}
