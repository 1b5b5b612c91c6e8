//! Compact JWS (RFC 7515) and the JWT claims Sigil reads (RFC 7519): split, parse, verify
//! and assemble, strictly.
//!
//! - Public-key signatures only ([`Algorithm`]): `alg: none` and every HMAC algorithm are
//!   refused by name, before any key is looked at, so an HS256 token "signed" with a public
//!   key can never verify (key confusion).
//! - The token's `alg` must fit the key (`kty`/`crv`, and the key's own `alg` when it names
//!   one); see [`Jwk::supports`].
//! - A `crit` header is refused: no extension is implemented, so none may be critical.
//! - Key selection: a `kid` selects the keys with that id (a `kid` absent from the set is
//!   [`JwtError::UnknownKid`], which lets the caller refresh its keys once). Without a `kid`
//!   each key that fits the algorithm is tried in turn, as the common JOSE libraries do; the
//!   set is bounded ([`super::MAX_JWKS_KEYS`]), so this costs at most that many checks.
//! - Base64url without padding, header and payload must be JSON objects, the whole token
//!   is at most [`MAX_TOKEN_BYTES`].
//! - Keys come only from the caller's key set: `jwk`, `jku`, `x5u` and `x5c` headers are
//!   ignored, never fetched or trusted.
//! - Time claims: `exp` is required (a token that never expires is refused), `nbf` and
//!   `iat` are checked when present, each with [`CLOCK_SKEW`] of tolerance, against the
//!   `now` the caller passes.
//!
//! [`parse_unverified`] is a pure function over a string, suitable for fuzzing.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::jwk::{Jwk, JwkSet};
use super::{shorten, Algorithm, B64URL, CLOCK_SKEW, MAX_KID_BYTES, MAX_TOKEN_BYTES};

/// Why a token was refused. The texts go back to the caller (inside PERMISSION_DENIED), so
/// they quote token content only shortened and escaped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Over [`MAX_TOKEN_BYTES`].
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Not three non-empty dot-separated parts.
    #[error("token is not a JWS in compact form (three non-empty parts separated by dots)")]
    Malformed,
    /// A part is not unpadded base64url.
    #[error("token {0} is not valid unpadded base64url")]
    BadBase64(&'static str),
    /// Header or payload is not the JSON object expected.
    #[error("token {0} is not a valid JSON object: {1}")]
    BadJson(&'static str, String),
    /// `alg: none`.
    #[error("unsigned tokens (alg \"none\") are refused")]
    AlgNone,
    /// An HMAC algorithm.
    #[error("HMAC-signed tokens (alg {0:?}) are refused; only public-key signatures are accepted")]
    Hmac(String),
    /// Any other algorithm we do not implement.
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    // The messages name the claim in quotes and say "could not verify message" for a bad
    // signature, as Dapr's (whose suite and users match on those words).
    /// The header lists critical extensions.
    #[error("token header has critical extensions (crit), which are not supported")]
    Crit,
    /// `kid` longer than [`MAX_KID_BYTES`].
    #[error("token kid is longer than {MAX_KID_BYTES} bytes")]
    KidTooLong,
    /// No key in the set has the token's `kid`.
    #[error("could not verify message: no key with kid {0:?} in the JWKS")]
    UnknownKid(String),
    /// Keys were found, but none fits the algorithm.
    #[error("could not verify message: no key in the JWKS can verify an {0} signature")]
    NoCompatibleKey(&'static str),
    /// No candidate key verifies the signature.
    #[error("could not verify message: no key in the JWKS verifies the signature")]
    BadSignature,
    /// `exp` is missing.
    #[error("token has no \"exp\" claim")]
    MissingExp,
    /// `exp` passed (beyond the skew).
    #[error("\"exp\" not satisfied: token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the skew).
    #[error("\"nbf\" not satisfied: token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the skew).
    #[error("\"iat\" not satisfied: token was issued in the future")]
    IssuedInFuture,
    /// `aud` does not contain the expected audience.
    #[error("\"aud\" not satisfied: token audience does not include {0:?}")]
    WrongAudience(String),
    /// `sub` is missing or not the expected SPIFFE ID.
    #[error("\"sub\" not satisfied: token subject {got:?} does not match the requested identity {want:?}")]
    WrongSubject {
        /// The token's `sub` (shortened), empty when missing.
        got: String,
        /// What the request asks for.
        want: String,
    },
}

/// A token's protected header, as far as we read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Signature algorithm.
    pub alg: Algorithm,
    /// Key id, if any.
    pub kid: Option<String>,
}

/// The registered claims we read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenClaims {
    /// `sub`.
    pub sub: Option<String>,
    /// `aud` (a single string becomes one element).
    pub aud: Vec<String>,
    /// `iss`.
    pub iss: Option<String>,
    /// `exp`.
    pub exp: Option<OffsetDateTime>,
    /// `nbf`.
    pub nbf: Option<OffsetDateTime>,
    /// `iat`.
    pub iat: Option<OffsetDateTime>,
}

/// A syntactically valid token whose signature has not been checked yet.
#[derive(Clone, Debug)]
pub struct UnverifiedToken<'a> {
    /// Header.
    pub header: Header,
    /// Claims; not to be trusted before [`UnverifiedToken::verify`].
    pub claims: TokenClaims,
    signing_input: &'a [u8],
    signature: Vec<u8>,
}

/// What a token must say to be accepted.
#[derive(Clone, Copy, Debug)]
pub struct Expectations<'a> {
    /// Must be one of the token's `aud` values.
    pub audience: &'a str,
    /// Must equal the token's `sub`.
    pub subject: &'a str,
    /// The current time.
    pub now: OffsetDateTime,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawAudience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<RawAudience>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
    #[serde(default)]
    iat: Option<serde_json::Number>,
}

fn numeric_date(
    n: Option<serde_json::Number>,
    what: &'static str,
) -> Result<Option<OffsetDateTime>, JwtError> {
    let Some(n) = n else { return Ok(None) };
    let bad = || JwtError::BadJson("payload", format!("{what} is not a valid NumericDate"));
    let secs = match n.as_i64() {
        Some(s) => s,
        None => {
            // RFC 7519 allows fractional seconds; whole seconds are all we need.
            let f = n.as_f64().ok_or_else(bad)?;
            if !f.is_finite() || f.abs() > 1e15 {
                return Err(bad());
            }
            f.floor() as i64
        }
    };
    OffsetDateTime::from_unix_timestamp(secs)
        .map(Some)
        .map_err(|_| bad())
}

/// The three parts of a compact JWS, still encoded.
#[derive(Clone, Copy, Debug)]
pub struct Compact<'a> {
    /// The protected header, base64url.
    pub header: &'a str,
    /// The payload, base64url.
    pub payload: &'a str,
    /// The signature, base64url.
    pub signature: &'a str,
}

impl<'a> Compact<'a> {
    /// Splits a token into its three non-empty parts, within [`MAX_TOKEN_BYTES`].
    pub fn split(token: &'a str) -> Result<Self, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(JwtError::Malformed);
        }
        Ok(Compact {
            header,
            payload,
            signature,
        })
    }

    /// The decoded payload: for a reader that only looks at claims (the Kubernetes
    /// precheck), never a substitute for [`parse_unverified`] and a verification.
    pub fn payload_json(&self) -> Result<Value, JwtError> {
        json_object(&decode_part(self.payload, "payload")?, "payload")
    }
}

/// Assembles a compact JWS: `header.payload` base64url-encoded, signed by `sign`, which gets
/// the signing input. The one place tokens are put together, for Sigil's signer and for
/// tests.
pub fn assemble<E>(
    header: &Value,
    payload: &Value,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<String, E> {
    let mut token = B64URL.encode(header.to_string());
    token.push('.');
    token.push_str(&B64URL.encode(payload.to_string()));
    let signature = sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&B64URL.encode(signature));
    Ok(token)
}

fn decode_part(part: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    B64URL.decode(part).map_err(|_| JwtError::BadBase64(what))
}

/// serde accepts a JSON array for a struct; a JOSE header or claim set must be an object.
fn json_object<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, JwtError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(JwtError::BadJson(what, "not an object".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| JwtError::BadJson(what, e.to_string()))
}

/// Parses a compact JWS without checking its signature. Pure and total: any input gives a
/// value or an error, never a panic.
pub fn parse_unverified(token: &str) -> Result<UnverifiedToken<'_>, JwtError> {
    let Compact {
        header: h,
        payload: p,
        signature: s,
    } = Compact::split(token)?;
    let raw_header: RawHeader = json_object(&decode_part(h, "header")?, "header")?;
    let alg = Algorithm::from_jose(&raw_header.alg)?;
    if raw_header.crit.is_some() {
        return Err(JwtError::Crit);
    }
    if raw_header
        .kid
        .as_ref()
        .is_some_and(|k| k.len() > MAX_KID_BYTES)
    {
        return Err(JwtError::KidTooLong);
    }
    let raw: RawClaims = json_object(&decode_part(p, "payload")?, "payload")?;
    let signature = decode_part(s, "signature")?;
    let claims = TokenClaims {
        sub: raw.sub,
        aud: match raw.aud {
            None => Vec::new(),
            Some(RawAudience::One(a)) => vec![a],
            Some(RawAudience::Many(v)) => v,
        },
        iss: raw.iss,
        exp: numeric_date(raw.exp, "exp")?,
        nbf: numeric_date(raw.nbf, "nbf")?,
        iat: numeric_date(raw.iat, "iat")?,
    };
    Ok(UnverifiedToken {
        header: Header {
            alg,
            kid: raw_header.kid,
        },
        claims,
        // `h.len() + 1 + p.len()` is within `token` because both are prefixes split from it.
        signing_input: &token.as_bytes()[..h.len() + 1 + p.len()],
        signature,
    })
}

impl UnverifiedToken<'_> {
    /// Picks the candidate keys and checks the signature; on success returns the key used.
    pub fn verify_signature<'k>(&self, keys: &'k JwkSet) -> Result<&'k Jwk, JwtError> {
        let alg = self.header.alg;
        let mut candidates: Vec<&Jwk> = match &self.header.kid {
            Some(kid) => {
                let with_kid: Vec<&Jwk> = keys
                    .keys
                    .iter()
                    .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if with_kid.is_empty() {
                    return Err(JwtError::UnknownKid(shorten(kid)));
                }
                with_kid
            }
            None => keys.keys.iter().collect(),
        };
        candidates.retain(|k| k.supports(alg));
        if candidates.is_empty() {
            return Err(JwtError::NoCompatibleKey(alg.name()));
        }
        candidates
            .into_iter()
            .find(|k| k.verify(alg, self.signing_input, &self.signature))
            .ok_or(JwtError::BadSignature)
    }

    /// Checks the signature, then the time claims, audience and subject, in that order.
    pub fn verify(self, keys: &JwkSet, expect: &Expectations<'_>) -> Result<TokenClaims, JwtError> {
        self.verify_signature(keys)?;
        let c = self.claims;
        let now = expect.now;
        let exp = c.exp.ok_or(JwtError::MissingExp)?;
        // Saturating: a signed `exp` may be the last second of year 9999, where `+` panics.
        if now >= exp.saturating_add(CLOCK_SKEW) {
            return Err(JwtError::Expired);
        }
        let late = now.saturating_add(CLOCK_SKEW);
        if c.nbf.is_some_and(|nbf| late < nbf) {
            return Err(JwtError::NotYetValid);
        }
        if c.iat.is_some_and(|iat| late < iat) {
            return Err(JwtError::IssuedInFuture);
        }
        if !c.aud.iter().any(|a| a == expect.audience) {
            return Err(JwtError::WrongAudience(expect.audience.to_string()));
        }
        if c.sub.as_deref() != Some(expect.subject) {
            return Err(JwtError::WrongSubject {
                got: shorten(c.sub.as_deref().unwrap_or("")),
                want: expect.subject.to_string(),
            });
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{hmac_token, token, TestKey};
    use super::*;
    use serde_json::json;

    const URL_SAFE_NO_PAD: base64::engine::GeneralPurpose = B64URL;

    const AUD: &str = "spiffe://localhost/ns/default/dapr-sentry";
    const SUB: &str = "spiffe://public/ns/default/app";
    const NOW: i64 = 1_800_000_000;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(NOW).unwrap()
    }

    fn claims() -> serde_json::Value {
        json!({"sub": SUB, "aud": [AUD, "other"], "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 3600})
    }

    fn set(keys: &[serde_json::Value]) -> JwkSet {
        JwkSet::parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    fn expect() -> Expectations<'static> {
        Expectations {
            audience: AUD,
            subject: SUB,
            now: now(),
        }
    }

    fn check(token: &str, keys: &JwkSet) -> Result<TokenClaims, JwtError> {
        parse_unverified(token)?.verify(keys, &expect())
    }

    #[test]
    fn every_supported_algorithm_verifies() {
        let rsa = TestKey::rsa();
        let cases: Vec<(TestKey, &[&str])> = vec![
            (rsa, &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]),
            (TestKey::p256(), &["ES256"]),
            (TestKey::p384(), &["ES384"]),
            (TestKey::ed25519(), &["EdDSA"]),
        ];
        for (key, algs) in cases {
            let keys = set(&[key.jwk(Some("k1"))]);
            for alg in algs {
                let t = token(
                    &key,
                    &json!({"alg": alg, "kid": "k1", "typ": "JWT"}),
                    &claims(),
                );
                let c = check(&t, &keys).unwrap_or_else(|e| panic!("{alg}: {e}"));
                assert_eq!(c.sub.as_deref(), Some(SUB));
                // Without a kid the matching key is found by type.
                let t = token(&key, &json!({"alg": alg}), &claims());
                assert!(check(&t, &keys).is_ok(), "{alg} without kid");
            }
        }
    }

    #[test]
    fn time_claims_at_the_end_of_the_representable_range_do_not_overflow() {
        // 253402300799 is 9999-12-31T23:59:59Z, the last second numeric_date accepts.
        let key = TestKey::p256();
        let keys = set(&[key.jwk(Some("k1"))]);
        let last = 253_402_300_799_i64;
        let mut c = claims();
        c["exp"] = json!(last);
        let t = token(&key, &json!({"alg": "ES256", "kid": "k1"}), &c);
        assert!(check(&t, &keys).is_ok());
        c["nbf"] = json!(last);
        let t = token(&key, &json!({"alg": "ES256", "kid": "k1"}), &c);
        assert_eq!(check(&t, &keys).unwrap_err(), JwtError::NotYetValid);
        // And a verifier whose clock reads that last second.
        let at_the_end = Expectations {
            now: OffsetDateTime::from_unix_timestamp(last).unwrap(),
            ..expect()
        };
        let t = token(&key, &json!({"alg": "ES256", "kid": "k1"}), &claims());
        assert_eq!(
            parse_unverified(&t)
                .unwrap()
                .verify(&keys, &at_the_end)
                .unwrap_err(),
            JwtError::Expired
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let p = URL_SAFE_NO_PAD.encode(claims().to_string());
        assert_eq!(
            parse_unverified(&format!("{h}.{p}.")).unwrap_err(),
            JwtError::Malformed
        );
        assert_eq!(
            parse_unverified(&format!("{h}.{p}.AAAA")).unwrap_err(),
            JwtError::AlgNone
        );
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"NoNe"}"#);
        assert_eq!(
            parse_unverified(&format!("{h}.{p}.AAAA")).unwrap_err(),
            JwtError::AlgNone
        );
    }

    #[test]
    fn hmac_with_the_public_key_as_secret_is_refused() {
        let key = TestKey::rsa();
        let jwk = key.jwk(Some("k1"));
        let keys = set(std::slice::from_ref(&jwk));
        // The classic confusion: the attacker HMACs with bytes of the public key.
        for secret in [
            jwk.to_string().into_bytes(),
            jwk["n"].as_str().unwrap().as_bytes().to_vec(),
        ] {
            for alg in ["HS256", "HS384", "HS512", "hs256"] {
                let t = hmac_token(&secret, &json!({"alg": alg, "kid": "k1"}), &claims());
                assert!(matches!(check(&t, &keys), Err(JwtError::Hmac(_))), "{alg}");
            }
        }
    }

    #[test]
    fn algorithm_must_fit_the_key() {
        let rsa = TestKey::rsa();
        let ec = TestKey::p256();
        let keys = set(&[rsa.jwk(Some("rsa")), ec.jwk(Some("ec"))]);
        // ES256 header pointing at the RSA key.
        let t = token(&ec, &json!({"alg": "ES256", "kid": "rsa"}), &claims());
        assert_eq!(
            check(&t, &keys).unwrap_err(),
            JwtError::NoCompatibleKey("ES256")
        );
        // A key that names its alg accepts only that alg.
        let mut j = rsa.jwk(Some("rsa"));
        j["alg"] = "PS256".into();
        let keys = set(&[j]);
        let t = token(&rsa, &json!({"alg": "RS256", "kid": "rsa"}), &claims());
        assert_eq!(
            check(&t, &keys).unwrap_err(),
            JwtError::NoCompatibleKey("RS256")
        );
        let t = token(&rsa, &json!({"alg": "PS256", "kid": "rsa"}), &claims());
        assert!(check(&t, &keys).is_ok());
        // P-384 key cannot verify ES256.
        let p384 = TestKey::p384();
        let keys = set(&[p384.jwk(None)]);
        let t = token(&ec, &json!({"alg": "ES256"}), &claims());
        assert_eq!(
            check(&t, &keys).unwrap_err(),
            JwtError::NoCompatibleKey("ES256")
        );
    }

    #[test]
    fn unknown_kid_and_wrong_key() {
        let a = TestKey::ed25519();
        let b = TestKey::ed25519();
        let keys = set(&[a.jwk(Some("a"))]);
        let t = token(&a, &json!({"alg": "EdDSA", "kid": "zzz"}), &claims());
        assert_eq!(
            check(&t, &keys).unwrap_err(),
            JwtError::UnknownKid("zzz".into())
        );
        // Signed by b, claims kid a.
        let t = token(&b, &json!({"alg": "EdDSA", "kid": "a"}), &claims());
        assert_eq!(check(&t, &keys).unwrap_err(), JwtError::BadSignature);
        // No kid: every Ed25519 key tried, none fits.
        let t = token(&b, &json!({"alg": "EdDSA"}), &claims());
        assert_eq!(check(&t, &keys).unwrap_err(), JwtError::BadSignature);
        // No kid, two keys: the second one verifies.
        let keys = set(&[a.jwk(Some("a")), b.jwk(Some("b"))]);
        assert!(check(&t, &keys).is_ok());
    }

    #[test]
    fn tampered_signature_and_payload_fail() {
        let k = TestKey::p256();
        let keys = set(&[k.jwk(Some("k"))]);
        let t = token(&k, &json!({"alg": "ES256", "kid": "k"}), &claims());
        let (input, sig) = t.rsplit_once('.').unwrap();
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap();
        raw[10] ^= 1;
        let bad = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(check(&bad, &keys).unwrap_err(), JwtError::BadSignature);
        // Same signature, different payload (sub changed).
        let mut c = claims();
        c["sub"] = "spiffe://public/ns/default/admin".into();
        let h = t.split('.').next().unwrap();
        let forged = format!("{h}.{}.{sig}", URL_SAFE_NO_PAD.encode(c.to_string()));
        assert_eq!(check(&forged, &keys).unwrap_err(), JwtError::BadSignature);
    }

    #[test]
    fn claims_are_checked_with_five_minutes_of_skew() {
        let k = TestKey::ed25519();
        let keys = set(&[k.jwk(None)]);
        let with = |patch: serde_json::Value| {
            let mut c = claims();
            for (name, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(name);
                } else {
                    c[name] = v.clone();
                }
            }
            check(&token(&k, &json!({"alg": "EdDSA"}), &c), &keys)
        };
        // Expired, but within the skew: accepted; beyond: refused.
        assert!(with(json!({"exp": NOW - 299})).is_ok());
        assert_eq!(
            with(json!({"exp": NOW - 300})).unwrap_err(),
            JwtError::Expired
        );
        assert_eq!(
            with(json!({"exp": NOW - 86400})).unwrap_err(),
            JwtError::Expired
        );
        assert_eq!(
            with(json!({"exp": null})).unwrap_err(),
            JwtError::MissingExp
        );
        assert!(with(json!({"exp": (NOW + 60) as f64 + 0.5})).is_ok());
        assert!(with(json!({"nbf": NOW + 300})).is_ok());
        assert_eq!(
            with(json!({"nbf": NOW + 301})).unwrap_err(),
            JwtError::NotYetValid
        );
        assert_eq!(
            with(json!({"iat": NOW + 3000})).unwrap_err(),
            JwtError::IssuedInFuture
        );
        assert!(with(json!({"iat": null, "nbf": null})).is_ok());
        assert!(matches!(
            with(json!({"exp": "tomorrow"})),
            Err(JwtError::BadJson("payload", _))
        ));
        assert!(matches!(
            with(json!({"exp": 1e300})),
            Err(JwtError::BadJson("payload", _))
        ));
        // Audience: string or array; must contain Sentry's ID.
        assert!(with(json!({"aud": AUD})).is_ok());
        assert_eq!(
            with(json!({"aud": ["spiffe://localhost/ns/default/other"]})).unwrap_err(),
            JwtError::WrongAudience(AUD.into())
        );
        assert_eq!(
            with(json!({"aud": null})).unwrap_err(),
            JwtError::WrongAudience(AUD.into())
        );
        assert!(matches!(
            with(json!({"aud": 5})),
            Err(JwtError::BadJson(..))
        ));
        // Subject must be exactly the requested identity.
        assert!(matches!(
            with(json!({"sub": "spiffe://public/ns/default/other"})),
            Err(JwtError::WrongSubject { .. })
        ));
        assert!(matches!(
            with(json!({"sub": null})),
            Err(JwtError::WrongSubject { .. })
        ));
    }

    #[test]
    fn structural_refusals() {
        let k = TestKey::ed25519();
        let good = token(&k, &json!({"alg": "EdDSA"}), &claims());
        // Truncated tokens.
        assert_eq!(parse_unverified("").unwrap_err(), JwtError::Malformed);
        assert_eq!(parse_unverified("abc").unwrap_err(), JwtError::Malformed);
        let two = good.rsplit_once('.').unwrap().0;
        assert_eq!(parse_unverified(two).unwrap_err(), JwtError::Malformed);
        assert_eq!(
            parse_unverified(&format!("{good}.x")).unwrap_err(),
            JwtError::Malformed
        );
        let cut = &good[..good.len() - 5];
        let keys = set(&[k.jwk(None)]);
        assert!(matches!(
            check(cut, &keys),
            Err(JwtError::BadSignature | JwtError::BadBase64("signature"))
        ));
        // Oversized.
        let big = format!("{}.{}.AAAA", "a".repeat(MAX_TOKEN_BYTES), "b");
        assert_eq!(parse_unverified(&big).unwrap_err(), JwtError::TooLarge);
        // Bad base64: invalid characters, padding, standard alphabet.
        assert_eq!(
            parse_unverified("e30=.e30.AAAA").unwrap_err(),
            JwtError::BadBase64("header")
        );
        assert_eq!(
            parse_unverified("e3*.e30.AAAA").unwrap_err(),
            JwtError::BadBase64("header")
        );
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA"}"#);
        assert_eq!(
            parse_unverified(&format!("{h}.e30.AA+/")).unwrap_err(),
            JwtError::BadBase64("signature")
        );
        // Not JSON objects.
        let arr = URL_SAFE_NO_PAD.encode(br#"["EdDSA"]"#);
        assert!(matches!(
            parse_unverified(&format!("{arr}.e30.AAAA")),
            Err(JwtError::BadJson("header", _))
        ));
        let junk = URL_SAFE_NO_PAD.encode(b"\xff\xfe");
        assert!(matches!(
            parse_unverified(&format!("{h}.{junk}.AAAA")),
            Err(JwtError::BadJson("payload", _))
        ));
        let dup = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","alg":"none"}"#);
        assert!(matches!(
            parse_unverified(&format!("{dup}.e30.AAAA")),
            Err(JwtError::BadJson("header", _))
        ));
        // Critical extensions, even empty.
        for crit in [json!(["exp"]), json!([]), json!("b64")] {
            let t = token(&k, &json!({"alg": "EdDSA", "crit": crit}), &claims());
            assert_eq!(parse_unverified(&t).unwrap_err(), JwtError::Crit);
        }
        // Unknown algorithms and overlong kids.
        let t = token(
            &k,
            &json!({"alg": "EdDSA", "kid": "k".repeat(300)}),
            &claims(),
        );
        assert_eq!(parse_unverified(&t).unwrap_err(), JwtError::KidTooLong);
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES512"}"#);
        assert!(matches!(
            parse_unverified(&format!("{h}.e30.AAAA")),
            Err(JwtError::UnsupportedAlgorithm(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn parsing_arbitrary_strings_never_panics(s in "\\PC{0,400}") {
            let _ = parse_unverified(&s);
        }

        #[test]
        fn parsing_dotted_base64ish_strings_never_panics(
            a in "[A-Za-z0-9_=+/-]{0,80}", b in "[A-Za-z0-9_=+/-]{0,80}", c in "[A-Za-z0-9_=+/-]{0,80}"
        ) {
            let _ = parse_unverified(&format!("{a}.{b}.{c}"));
        }

        #[test]
        fn parsing_arbitrary_json_headers_never_panics(h in "\\PC{0,120}", p in "\\PC{0,120}") {
            let t = format!("{}.{}.AAAA", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(p));
            let _ = parse_unverified(&t);
        }
    }
}
