//! A token signer for tests only (feature `testing`): ring keys of every supported type and
//! hand-assembled tokens, including the ones a verifier must refuse (any header, any `alg`
//! claimed, HMAC). Never compiled into Sigil itself.

use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair as _};
use serde_json::{json, Value};

use super::jwk::PublicKey;
use super::{jws, KeyKind};

/// The openssl-generated RSA-2048 key in the repository's `tests/data` (ring cannot
/// generate RSA keys, and generating one in a debug build takes seconds).
pub const RSA2048_PKCS8: &[u8] = include_bytes!("../../../tests/data/rsa2048.pk8.der");

/// A signing key of one of the supported types.
pub enum TestKey {
    /// RSA-2048 ([`RSA2048_PKCS8`]).
    Rsa(signature::RsaKeyPair),
    /// ECDSA P-256.
    P256(signature::EcdsaKeyPair),
    /// ECDSA P-384.
    P384(signature::EcdsaKeyPair),
    /// Ed25519.
    Ed25519(signature::Ed25519KeyPair),
}

fn ecdsa(alg: &'static signature::EcdsaSigningAlgorithm) -> signature::EcdsaKeyPair {
    let rng = SystemRandom::new();
    let doc = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("ECDSA key generation");
    signature::EcdsaKeyPair::from_pkcs8(alg, doc.as_ref(), &rng).expect("generated PKCS#8")
}

impl TestKey {
    /// The RSA-2048 test key.
    pub fn rsa() -> Self {
        TestKey::Rsa(signature::RsaKeyPair::from_pkcs8(RSA2048_PKCS8).expect("tests/data key"))
    }

    /// A fresh P-256 key.
    pub fn p256() -> Self {
        TestKey::P256(ecdsa(&signature::ECDSA_P256_SHA256_FIXED_SIGNING))
    }

    /// A fresh P-384 key.
    pub fn p384() -> Self {
        TestKey::P384(ecdsa(&signature::ECDSA_P384_SHA384_FIXED_SIGNING))
    }

    /// A fresh Ed25519 key.
    pub fn ed25519() -> Self {
        let doc = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .expect("Ed25519 key generation");
        TestKey::Ed25519(signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("PKCS#8"))
    }

    /// The algorithm this key signs with by default.
    pub fn alg(&self) -> &'static str {
        match self {
            TestKey::Rsa(_) => "RS256",
            TestKey::P256(_) => "ES256",
            TestKey::P384(_) => "ES384",
            TestKey::Ed25519(_) => "EdDSA",
        }
    }

    /// The public key's bytes as ring gives them (an RSA key's DER `RSAPublicKey`): the
    /// "secret" of a key-confusion attack.
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            TestKey::Rsa(k) => k.public().as_ref().to_vec(),
            TestKey::P256(k) | TestKey::P384(k) => k.public_key().as_ref().to_vec(),
            TestKey::Ed25519(k) => k.public_key().as_ref().to_vec(),
        }
    }

    /// The public JWK, as JSON, with `kid` when given.
    pub fn jwk(&self, kid: Option<&str>) -> Value {
        let key =
            match self {
                TestKey::Rsa(k) => {
                    let c: signature::RsaPublicKeyComponents<Vec<u8>> = k.public().into();
                    PublicKey::rsa(&c.n, &c.e)
                }
                TestKey::P256(k) => PublicKey::ec(KeyKind::P256, k.public_key().as_ref())
                    .expect("ring's P-256 point"),
                TestKey::P384(k) => PublicKey::ec(KeyKind::P384, k.public_key().as_ref())
                    .expect("ring's P-384 point"),
                TestKey::Ed25519(k) => PublicKey::Ed25519(k.public_key().as_ref().to_vec()),
            };
        let mut v = Value::Object(key.to_members());
        if let Some(kid) = kid {
            v["kid"] = kid.into();
        }
        v
    }

    /// Signs `input` as `alg` would. Panics when `alg` cannot be made with this key: a test
    /// that wants a mismatched signature signs with another key instead.
    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            TestKey::Rsa(k) => {
                let pad: &dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    other => panic!("RSA cannot sign {other}"),
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(pad, &rng, input, &mut sig).expect("RSA signature");
                sig
            }
            TestKey::P256(k) | TestKey::P384(k) => k
                .sign(&rng, input)
                .expect("ECDSA signature")
                .as_ref()
                .to_vec(),
            TestKey::Ed25519(k) => k.sign(input).as_ref().to_vec(),
        }
    }
}

/// A token with any `header` and `payload`, signed by `key` with the header's `alg` (the
/// key's own when the header names none).
pub fn token(key: &TestKey, header: &Value, payload: &Value) -> String {
    let alg = header["alg"].as_str().unwrap_or(key.alg());
    jws::assemble(header, payload, |input| {
        Ok::<_, std::convert::Infallible>(key.sign(alg, input))
    })
    .unwrap_or_else(|never| match never {})
}

/// The usual test token: the key's algorithm, `kid`, `typ: JWT`, and `claims`.
pub fn token_with_kid(key: &TestKey, kid: &str, claims: &Value) -> String {
    token(
        key,
        &json!({"alg": key.alg(), "kid": kid, "typ": "JWT"}),
        claims,
    )
}

/// A token with an HMAC-SHA256 tag under `secret`, whatever the header claims.
pub fn hmac_token(secret: &[u8], header: &Value, payload: &Value) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    jws::assemble(header, payload, |input| {
        Ok::<_, std::convert::Infallible>(ring::hmac::sign(&key, input).as_ref().to_vec())
    })
    .unwrap_or_else(|never| match never {})
}
