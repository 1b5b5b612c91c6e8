//! End to end: JWT-SVIDs with certificates and the OIDC discovery server, over real
//! sockets with real TLS. Tokens returned by `SignCertificate` are verified with `ring`
//! against the JWKS fetched from the running OIDC server.

mod support;

use support::standalone;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature;
use serde_json::Value;
use sigil::server::RunningServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed OIDC server certificate for `localhost`, written as PEM files.
fn oidc_tls(dir: &Path) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("oidc.crt");
    let key_path = dir.join("oidc.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
        cert.der().to_vec(),
    )
}

/// A TLS connector that trusts only `anchor` (DER).
fn trusting(anchor: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(anchor.to_vec()))
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// One HTTP/1.1 GET over TLS to the OIDC server, trusting `anchor`. Returns status and body.
async fn https_get(
    server: &RunningServer,
    anchor: &[u8],
    path: &str,
    host: &str,
) -> (u16, Vec<u8>, String) {
    let connector = trusting(anchor);
    let tcp = tokio::net::TcpStream::connect(server.oidc_addr.expect("OIDC is on"))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // The server closes after answering (Connection: close); a TLS close_notify may be
    // missing, so an unexpected EOF after the response is fine.
    let _ = tls.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("complete HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec(), head.to_ascii_lowercase())
}

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

/// Verifies a compact JWS with the key of its `kid` in `jwks`; returns the claims.
fn verify(token: &str, jwks: &Value) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&b64(parts[0])).unwrap();
    let kid = header["kid"].as_str().expect("kid in header");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} is published"));
    assert_eq!(jwk["alg"], header["alg"]);
    let input = format!("{}.{}", parts[0], parts[1]);
    let sig = b64(parts[2]);
    let ok = match header["alg"].as_str().unwrap() {
        "RS256" => signature::RsaPublicKeyComponents {
            n: b64(jwk["n"].as_str().unwrap()),
            e: b64(jwk["e"].as_str().unwrap()),
        }
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            input.as_bytes(),
            &sig,
        )
        .is_ok(),
        "ES256" => {
            let mut point = vec![4u8];
            point.extend(b64(jwk["x"].as_str().unwrap()));
            point.extend(b64(jwk["y"].as_str().unwrap()));
            signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                .verify(input.as_bytes(), &sig)
                .is_ok()
        }
        other => panic!("unexpected alg {other}"),
    };
    assert!(ok, "token signature verifies against the served JWKS");
    serde_json::from_slice(&b64(parts[1])).unwrap()
}

#[tokio::test]
async fn tokens_verify_against_the_jwks_served_by_the_oidc_server() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, anchor) = oidc_tls(dir.path());
    let server = standalone::start(
        dir.path(),
        &[
            "--jwt-enabled",
            "--jwt-issuer",
            "https://localhost",
            "--oidc-enabled",
            "--oidc-server-listen-port",
            "0",
            "--oidc-server-tls-cert-file",
            &cert,
            "--oidc-server-tls-key-file",
            &key,
            "--oidc-allowed-hosts",
            "localhost",
            "--jwt-key-publish-delay",
            "10s",
        ],
    )
    .await;
    let creds = standalone::creds(dir.path());
    assert!(creds.join("jwt.key").exists() && creds.join("jwks.json").exists());
    let ca = std::fs::read(creds.join("ca.crt")).unwrap();
    let mut client = standalone::client(&server, &ca).await;

    let mut req = standalone::request("orders", "shop", &standalone::csr(&rcgen::PKCS_ED25519).1);
    req.trust_domain = "example.org".into();
    req.jwt_audiences = vec![
        "api://a".into(),
        "example.org".into(),
        "b".into(),
        "b".into(),
    ];
    let resp = client.sign_certificate(req).await.unwrap().into_inner();
    assert!(!resp.workload_certificate.is_empty());

    let (status, body, head) = https_get(&server, &anchor, "/jwks.json", "localhost").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        head.contains("cache-control: public, max-age=300"),
        "{head}"
    );
    let jwks: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        jwks["keys"][0]["alg"], "RS256",
        "generated key is RS256 as Dapr's"
    );
    assert_eq!(jwks["keys"][0]["use"], "sig");

    let claims = verify(resp.jwt.as_deref().expect("jwt set"), &jwks);
    assert_eq!(claims["sub"], "spiffe://example.org/ns/shop/orders");
    assert_eq!(
        claims["aud"],
        serde_json::json!(["example.org", "api://a", "b"])
    );
    assert_eq!(claims["iss"], "https://localhost");
    assert_eq!(claims["use"], "sig");
    let (iat, nbf, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["nbf"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 24 * 3600, "default --jwt-ttl 24h");
    assert_eq!(iat - nbf, 15 * 60, "nbf backdated by the clock skew");
    assert_eq!(
        server.metrics.jwt_issued.get(),
        4,
        "one token for all audiences and one per audience"
    );
    let mut auds: Vec<&String> = resp.per_audience_jwts.keys().collect();
    auds.sort();
    assert_eq!(auds, vec!["api://a", "b", "example.org"]);
    for (aud, token) in &resp.per_audience_jwts {
        let c = verify(token, &jwks);
        assert_eq!(c["aud"], serde_json::json!([aud]));
        assert_eq!(c["sub"], "spiffe://example.org/ns/shop/orders");
    }

    // Discovery document.
    let (status, body, _) = https_get(
        &server,
        &anchor,
        "/.well-known/openid-configuration",
        "localhost",
    )
    .await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["issuer"], "https://localhost");
    assert_eq!(doc["jwks_uri"], "https://localhost/jwks.json");
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );

    // A Host outside the allow-list is refused.
    let (status, _, _) = https_get(&server, &anchor, "/jwks.json", "evil.example").await;
    assert_eq!(status, 403);

    // Too many audiences: refused before anything is signed.
    let before = server.metrics.sign_success.get();
    let mut req = standalone::request("orders", "shop", &standalone::csr(&rcgen::PKCS_ED25519).1);
    req.jwt_audiences = (0..17).map(|i| format!("a{i}")).collect();
    let status = client.sign_certificate(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(server.metrics.sign_success.get(), before);

    // Rotation: a new key file is published, then signs; the old key stays published.
    let old_kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
    let new_key = sigil_pki::JwtSigningKey::generate(sigil_pki::jose::Algorithm::Es256).unwrap();
    sigil::store::atomic::write_file(&creds.join("jwt.key"), new_key.to_pem().as_bytes(), 0o600)
        .unwrap();
    // Published first: the served JWKS gains the new key while the old one still signs.
    let mut published = false;
    for _ in 0..200 {
        let (_, body, _) = https_get(&server, &anchor, "/jwks.json", "localhost").await;
        let jwks: Value = serde_json::from_slice(&body).unwrap();
        if jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == new_key.kid())
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "the new key is published");
    let req = standalone::request("orders", "shop", &standalone::csr(&rcgen::PKCS_ED25519).1);
    let token = client
        .sign_certificate(req)
        .await
        .unwrap()
        .into_inner()
        .jwt
        .unwrap();
    let header: Value = serde_json::from_slice(&b64(token.split('.').next().unwrap())).unwrap();
    assert_eq!(
        header["kid"],
        old_kid.as_str(),
        "published, not yet signing"
    );
    let mut rotated = None;
    for _ in 0..200 {
        let req = standalone::request("orders", "shop", &standalone::csr(&rcgen::PKCS_ED25519).1);
        let resp = client.sign_certificate(req).await.unwrap().into_inner();
        let token = resp.jwt.unwrap();
        let header: Value = serde_json::from_slice(&b64(token.split('.').next().unwrap())).unwrap();
        if header["kid"] == new_key.kid() {
            rotated = Some(token);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = rotated.expect("the new key signs after the reload");
    let (_, body, _) = https_get(&server, &anchor, "/jwks.json", "localhost").await;
    let jwks: Value = serde_json::from_slice(&body).unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![old_kid.as_str(), new_key.kid()]);
    // The watcher records the change right after switching keys.
    for _ in 0..50 {
        if server.metrics.jwks_keys.get() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.metrics.jwks_keys.get(), 2);
    assert_eq!(server.metrics.jwt_key_changed.get(), 1);
    let claims = verify(&token, &jwks);
    assert_eq!(claims["sub"], "spiffe://public/ns/shop/orders");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_jwt_the_response_has_no_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(dir.path(), &[]).await;
    assert!(server.oidc_addr.is_none() && server.jwt.is_none());
    let ca = std::fs::read(standalone::creds(dir.path()).join("ca.crt")).unwrap();
    let mut client = standalone::client(&server, &ca).await;
    let mut req = standalone::request("orders", "shop", &standalone::csr(&rcgen::PKCS_ED25519).1);
    req.jwt_audiences = vec!["ignored".into()];
    let resp = client.sign_certificate(req).await.unwrap().into_inner();
    assert!(resp.jwt.is_none() && resp.per_audience_jwts.is_empty());
    assert!(!standalone::creds(dir.path()).join("jwt.key").exists());
    server.shutdown().await.unwrap();
}

#[test]
fn every_jwt_and_oidc_flag_without_its_feature_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["--jwt-key-filename", "k"],
            "--jwt-key-filename",
            "--jwt-enabled",
        ),
        (
            &["--jwks-filename", "j"],
            "--jwks-filename",
            "--jwt-enabled",
        ),
        (&["--jwt-issuer", "i"], "--jwt-issuer", "--jwt-enabled"),
        (
            &["--jwt-signing-algorithm", "ES256"],
            "--jwt-signing-algorithm",
            "--jwt-enabled",
        ),
        (&["--jwt-key-id", "k"], "--jwt-key-id", "--jwt-enabled"),
        (&["--jwt-ttl", "1h"], "--jwt-ttl", "--jwt-enabled"),
        (&["--oidc-enabled"], "--oidc-enabled", "--jwt-enabled"),
        (
            &["--jwt-enabled", "--oidc-server-listen-port", "9"],
            "--oidc-server-listen-port",
            "--oidc-enabled",
        ),
        (
            &["--jwt-enabled", "--oidc-server-listen-address", "127.0.0.1"],
            "--oidc-server-listen-address",
            "--oidc-enabled",
        ),
        (
            &["--jwt-enabled", "--oidc-server-tls-enabled=false"],
            "--oidc-server-tls-enabled",
            "--oidc-enabled",
        ),
        (
            &["--jwt-enabled", "--oidc-server-tls-cert-file", "c"],
            "--oidc-server-tls-cert-file",
            "--oidc-enabled",
        ),
        (
            &["--jwt-enabled", "--oidc-server-tls-key-file", "k"],
            "--oidc-server-tls-key-file",
            "--oidc-enabled",
        ),
        (
            &["--jwt-enabled", "--oidc-jwks-uri", "https://x/j"],
            "--oidc-jwks-uri",
            "--oidc-enabled",
        ),
        (
            &["--jwt-enabled", "--oidc-path-prefix", "/p"],
            "--oidc-path-prefix",
            "--oidc-enabled",
        ),
        (
            &["--jwt-enabled", "--oidc-allowed-hosts", "a"],
            "--oidc-allowed-hosts",
            "--oidc-enabled",
        ),
        (
            &["--jwt-enabled", "--oidc-enabled"],
            "--oidc-server-tls-cert-file",
            "--oidc-server-tls-enabled=false",
        ),
    ];
    for (flags, named, needs) in cases {
        let e = standalone::serve_args(dir.path(), flags)
            .into_config(None)
            .err()
            .unwrap_or_else(|| panic!("{flags:?} accepted"))
            .to_string();
        assert!(e.contains(named) && e.contains(needs), "{flags:?}: {e}");
    }
}

#[tokio::test]
async fn an_unusable_jwt_key_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let creds = standalone::creds(dir.path());
    std::fs::create_dir_all(&creds).unwrap();
    let ed = sigil_pki::JwtSigningKey::generate(sigil_pki::jose::Algorithm::EdDsa).unwrap();
    std::fs::write(creds.join("jwt.key"), ed.to_pem().as_bytes()).unwrap();
    let config = standalone::serve_args(dir.path(), &["--jwt-enabled"])
        .into_config(None)
        .unwrap();
    let e = sigil::server::start(config, Arc::new(sigil_pki::SystemClock))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("EdDSA") && e.contains("jwt.key"), "{e}");
    // Asked for explicitly, the same key is used.
    let config = standalone::serve_args(
        dir.path(),
        &["--jwt-enabled", "--jwt-signing-algorithm", "EdDSA"],
    )
    .into_config(None)
    .unwrap();
    let server = sigil::server::start(config, Arc::new(sigil_pki::SystemClock))
        .await
        .unwrap();
    assert_eq!(server.jwt.as_ref().unwrap().current().key.kid(), ed.kid());
    server.shutdown().await.unwrap();
}

/// Whether a TLS handshake with the OIDC server succeeds when trusting only `anchor`.
async fn oidc_trusted_by(server: &RunningServer, anchor: &[u8]) -> bool {
    let tcp = tokio::net::TcpStream::connect(server.oidc_addr.unwrap())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    trusting(anchor).connect(name, tcp).await.is_ok()
}

#[tokio::test]
async fn a_renewed_oidc_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first) = oidc_tls(dir.path());
    let server = standalone::start(
        dir.path(),
        &[
            "--jwt-enabled",
            "--jwt-signing-algorithm",
            "ES256",
            "--oidc-enabled",
            "--oidc-server-listen-port",
            "0",
            "--oidc-server-tls-cert-file",
            &cert,
            "--oidc-server-tls-key-file",
            &key,
        ],
    )
    .await;
    assert!(oidc_trusted_by(&server, &first).await);

    // A half-written pair (new certificate, old key) is not taken: the old one stays.
    let staging = tempfile::tempdir().unwrap();
    let (new_cert, new_key, second) = oidc_tls(staging.path());
    std::fs::copy(&new_cert, &cert).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        oidc_trusted_by(&server, &first).await,
        "mismatched pair kept the old certificate"
    );
    assert!(!oidc_trusted_by(&server, &second).await);

    // With the key in place the new certificate is served.
    std::fs::copy(&new_key, &key).unwrap();
    let mut renewed = false;
    for _ in 0..50 {
        if oidc_trusted_by(&server, &second).await {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the renewed certificate is served");
    assert!(!oidc_trusted_by(&server, &first).await);
    server.shutdown().await.unwrap();
}
