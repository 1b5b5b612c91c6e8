//! JWT-SVIDs in kubernetes mode: the signing key and JWKS in the Secret `dapr-trust-bundle`,
//! the public JWKS in the ConfigMap, against the fake API server with the real `kube`
//! client. Tokens are verified with `jsonwebtoken`, a JOSE library we did not write,
//! against the JWKS read back from the ConfigMap.

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use sigil::server::RunningServer;
use support::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn secret_entry(fake: &Fake, key: &str) -> Option<Vec<u8>> {
    let secret = fake.get(&secrets(CP_NS), "dapr-trust-bundle")?;
    let text = secret["data"][key].as_str()?;
    Some(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
}

fn configmap_jwks(fake: &Fake) -> Value {
    let cm = fake
        .get(&configmaps(CP_NS), "dapr-trust-bundle")
        .expect("ConfigMap exists");
    serde_json::from_str(
        cm["data"]["jwks.json"]
            .as_str()
            .expect("jwks.json mirrored"),
    )
    .unwrap()
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Verifies `token` with jsonwebtoken against `jwks` (signature, exp/nbf, aud, iss).
fn verify(token: &str, jwks: &Value, audience: &str) -> Value {
    use jsonwebtoken::{decode, decode_header, jwk::JwkSet, DecodingKey, Validation};
    let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let header = decode_header(token).unwrap();
    let kid = header.kid.expect("kid in header");
    let jwk = set.find(&kid).expect("kid published in the JWKS");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["https://sentry.example"]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    decode::<Value>(token, &key, &validation)
        .expect("token verifies with jsonwebtoken")
        .claims
}

async fn sign(fake: &Fake, server: &RunningServer, audiences: &[&str]) -> String {
    fake.add_pod(
        "shop",
        "orders-1",
        "orders",
        json!({"dapr.io/app-id": "orders"}),
    );
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    let mut req = request("orders", "shop", &token);
    req.jwt_audiences = audiences.iter().map(|a| a.to_string()).collect();
    ca_client(server)
        .await
        .sign_certificate(req)
        .await
        .unwrap()
        .into_inner()
        .jwt
        .expect("jwt in the response")
}

const JWT_FLAGS: &[&str] = &[
    "--jwt-enabled",
    "--jwt-signing-algorithm",
    "ES256",
    "--jwt-issuer",
    "https://sentry.example",
];

#[tokio::test]
async fn generated_key_goes_into_the_secret_and_the_public_jwks_into_the_configmap() {
    let fake = Fake::start().await;
    let server = start_sigil(&fake, JWT_FLAGS).await.unwrap();

    let key = secret_entry(&fake, "jwt.key").expect("jwt.key stored in the Secret");
    assert!(key.starts_with(b"-----BEGIN"), "PEM private key");
    // The CA material is still there next to it.
    for k in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert!(secret_entry(&fake, k).is_some_and(|v| !v.is_empty()), "{k}");
    }
    let cm = fake.get(&configmaps(CP_NS), "dapr-trust-bundle").unwrap();
    assert!(
        cm["data"].get("jwt.key").is_none(),
        "no private key in the ConfigMap"
    );
    assert!(cm["data"]["ca.crt"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    let public = configmap_jwks(&fake);
    assert!(
        public.get("sigil_rotation").is_none(),
        "the ConfigMap holds the plain JWKS: {public}"
    );
    let signing_kid = server.jwt.as_ref().unwrap().current().key.kid().to_string();
    assert_eq!(kids(&public), vec![signing_kid.clone()]);
    assert!(public["keys"][0].get("d").is_none(), "no private part");
    let stored: Value = serde_json::from_slice(&secret_entry(&fake, "jwks.json").unwrap()).unwrap();
    assert_eq!(kids(&stored), vec![signing_kid.clone()]);

    let token = sign(&fake, &server, &["api://orders"]).await;
    let claims = verify(&token, &public, "api://orders");
    assert_eq!(claims["sub"], "spiffe://public/ns/shop/orders");
    // A verifier of another audience refuses it.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(public.clone()).unwrap();
    let mut other = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    other.set_audience(&["api://billing"]);
    assert!(jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_jwk(set.find(&signing_kid).unwrap()).unwrap(),
        &other
    )
    .is_err());

    // A restart keeps the key: nothing new is generated.
    server.shutdown().await.unwrap();
    let again = start_sigil(&fake, JWT_FLAGS).await.unwrap();
    assert_eq!(again.jwt.as_ref().unwrap().current().key.kid(), signing_kid);
    assert_eq!(secret_entry(&fake, "jwt.key").unwrap(), key);
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn two_replicas_starting_together_sign_with_one_key() {
    let fake = Fake::start().await;
    let (a, b) = tokio::join!(start_sigil(&fake, JWT_FLAGS), start_sigil(&fake, JWT_FLAGS));
    let (a, b) = (a.unwrap(), b.unwrap());
    let kid_a = a.jwt.as_ref().unwrap().current().key.kid().to_string();
    let kid_b = b.jwt.as_ref().unwrap().current().key.kid().to_string();
    assert_eq!(kid_a, kid_b, "both replicas use the stored key");
    let stored = secret_entry(&fake, "jwt.key").unwrap();
    let parsed = sigil_pki::JwtSigningKey::from_pem(&stored, None).unwrap();
    assert_eq!(parsed.kid(), kid_a);
    // Whatever order the writes landed in, the signing key is published, and a key the
    // losing replica published before it lost is retired (removed once its TTL is over).
    assert!(kids(&configmap_jwks(&fake)).contains(&kid_a));
    let stored: Value = serde_json::from_slice(&secret_entry(&fake, "jwks.json").unwrap()).unwrap();
    eprintln!("JWKS kids after the race: {:?}", kids(&stored));
    for kid in kids(&stored) {
        if kid != kid_a {
            assert!(
                stored["sigil_rotation"]["retired"].get(&kid).is_some(),
                "{kid} is neither signing nor retired: {stored}"
            );
        }
    }
    let token = sign(&fake, &b, &[]).await;
    verify(&token, &configmap_jwks(&fake), "public");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_put_into_the_secret_is_published_before_it_signs_and_the_old_one_stays() {
    let fake = Fake::start().await;
    // The user brings a key (as with `--jwt-key-filename` in standalone mode).
    let first = sigil_pki::JwtSigningKey::generate(sigil_pki::jose::Algorithm::Es256).unwrap();
    fake.put(
        &secrets(CP_NS),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "dapr-trust-bundle", "namespace": CP_NS},
               "data": {"signing.pem": b64(first.to_pem().as_bytes())}}),
    );
    let mut flags = JWT_FLAGS.to_vec();
    flags.extend_from_slice(&[
        "--jwt-key-filename",
        "signing.pem",
        "--reload-interval",
        "100ms",
        // Long enough for the check below that the old key still signs (a signing round
        // trip against the fake takes up to a few seconds on a busy machine).
        "--jwt-key-publish-delay",
        "10s",
    ]);
    let server = start_sigil(&fake, &flags).await.unwrap();
    assert_eq!(
        server.jwt.as_ref().unwrap().current().key.kid(),
        first.kid()
    );
    assert_eq!(kids(&configmap_jwks(&fake)), vec![first.kid().to_string()]);
    let old_token = sign(&fake, &server, &[]).await;

    // Rotate: a person writes a new key into the Secret.
    let second = sigil_pki::JwtSigningKey::generate(sigil_pki::jose::Algorithm::Es256).unwrap();
    let mut secret = fake.get(&secrets(CP_NS), "dapr-trust-bundle").unwrap();
    secret["data"]["signing.pem"] = json!(b64(second.to_pem().as_bytes()));
    fake.put(&secrets(CP_NS), secret);
    // Published first (the ConfigMap has it), while the old key still signs.
    let mut published = false;
    for _ in 0..200 {
        if kids(&configmap_jwks(&fake)).contains(&second.kid().to_string()) {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(published, "the new key is published");
    let token = sign(&fake, &server, &[]).await;
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    assert_eq!(kid, first.kid(), "published, not yet signing");
    let mut rotated = None;
    for _ in 0..200 {
        let token = sign(&fake, &server, &[]).await;
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        if kid == second.kid() {
            rotated = Some(token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new_token = rotated.expect("the new key signs after the reload");
    // By the time the new key signed, the ConfigMap published it, and the old key is
    // still there for the tokens it signed.
    let public = configmap_jwks(&fake);
    assert_eq!(
        kids(&public),
        vec![first.kid().to_string(), second.kid().to_string()]
    );
    verify(&new_token, &public, "public");
    verify(&old_token, &public, "public");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn jwt_file_names_must_be_secret_keys_in_kubernetes_mode() {
    let fake = Fake::start().await;
    let mut flags = JWT_FLAGS.to_vec();
    flags.extend_from_slice(&["--jwt-key-filename", "keys/jwt.key"]);
    let Err(err) = start_sigil(&fake, &flags).await else {
        panic!("a key name with a slash was accepted");
    };
    let err = err.to_string();
    assert!(err.contains("--jwt-key-filename"), "{err}");
    assert!(err.contains("[-._a-zA-Z0-9]+"), "{err}");
    // Nothing was written.
    assert!(fake.get(&secrets(CP_NS), "dapr-trust-bundle").is_none());
}
