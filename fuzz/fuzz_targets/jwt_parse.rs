//! Any string as a compact JWS, through the JOSE parser and verifier the validators use: no panic;
//! `alg: none` and HMAC never parse; and nothing verifies against a key whose private half the
//! fuzzer cannot know.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use sigil_pki::jose::{parse_unverified, Expectations, JwkSet};

fn keys() -> &'static JwkSet {
    static KEYS: OnceLock<JwkSet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("key generation");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let point = pair.public_key().as_ref();
        let doc = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]});
        JwkSet::parse(doc.to_string().as_bytes()).expect("fixed JWKS parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = parse_unverified(text) else {
        return;
    };
    // A token that parsed names an asymmetric algorithm: the header must say so.
    let header = text.split('.').next().unwrap_or("");
    if let Ok(raw) = URL_SAFE_NO_PAD.decode(header) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw) {
            let alg = v.get("alg").and_then(|a| a.as_str()).unwrap_or("");
            assert!(
                alg != "none" && !alg.starts_with("HS"),
                "parsed a token with alg {alg:?}"
            );
        }
    }
    let expect = Expectations {
        audience: "spiffe://localhost/ns/default/dapr-sentry",
        subject: "spiffe://public/ns/default/app",
        now: time::OffsetDateTime::now_utc(),
    };
    assert!(
        token.verify(keys(), &expect).is_err(),
        "a fuzzed token verified against a fresh key"
    );
});
