//! The JWKS validator end to end: `sigil::server::start` with a Dapr Configuration that
//! enables `jwks`, key sets from a file and from a local HTTPS server, and a tonic TLS client.
//! JWKS next to the Kubernetes validator is tested against a real API server
//! (`tests/kube_apiserver/identity.rs`).

mod support;

use support::standalone as harness;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sigil::server::RunningServer;
use sigil_pki::jose::testing::{hmac_token, token, token_with_kid, TestKey as Key};
use sigil_proto::{SignCertificateRequest, TokenValidator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::Code;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Sentry's SPIFFE ID with the default flags: the audience tokens must carry.
const AUD: &str = "spiffe://localhost/ns/default/dapr-sentry";

// ---- signing keys ------------------------------------------------------------------------

/// The public JWK of `key` with `kid` (an RSA key also says `use: sig`, as real sets do).
fn jwk(key: &Key, kid: &str) -> Value {
    let mut v = key.jwk(Some(kid));
    if matches!(key, Key::Rsa(_)) {
        v["use"] = "sig".into();
    }
    v
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims_for(td: &str, ns: &str, id: &str) -> Value {
    let t = now();
    json!({"sub": format!("spiffe://{td}/ns/{ns}/{id}"), "aud": [AUD], "iat": t, "nbf": t, "exp": t + 600, "iss": "test"})
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

// ---- server and client ---------------------------------------------------------------------

/// Starts a standalone server whose Configuration enables `jwks` with `options`.
async fn start(dir: &Path, options: Value) -> Result<RunningServer, sigil::Error> {
    let config_file = dir.join("config.yaml");
    let configuration = json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Configuration",
        "metadata": {"name": "daprsystem"},
        "spec": {"mtls": {"enabled": true, "tokenValidators": [{"name": "jwks", "options": options}]}},
    });
    // JSON is YAML.
    std::fs::write(&config_file, configuration.to_string()).unwrap();
    let creds = dir.join("credentials");
    let argv = [
        "--port",
        "0",
        "--healthz-port",
        "0",
        "--enable-metrics=false",
        "--issuer-credentials",
        creds.to_str().unwrap(),
        "--config",
        config_file.to_str().unwrap(),
    ];
    support::start(support::serve_args(&argv)).await
}

async fn client(
    dir: &Path,
    server: &RunningServer,
) -> sigil_proto::sentry::ca_client::CaClient<tonic::transport::Channel> {
    let ca = std::fs::read(dir.join("credentials/ca.crt")).unwrap();
    harness::client(server, &ca).await
}

fn request(id: &str, ns: &str, token: &str) -> SignCertificateRequest {
    let (_, csr) = harness::csr(&rcgen::PKCS_ED25519);
    let mut r = harness::request(id, ns, &csr);
    r.token = token.into();
    r.token_validator = TokenValidator::Jwks as i32;
    r
}

fn uri_sans(resp: &sigil_proto::SignCertificateResponse) -> Vec<String> {
    let der = pem::parse_many(&resp.workload_certificate)
        .unwrap()
        .remove(0)
        .into_contents();
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

type Client = sigil_proto::sentry::ca_client::CaClient<tonic::transport::Channel>;

async fn issued(client: &mut Client, req: SignCertificateRequest) -> Vec<String> {
    let resp = client
        .sign_certificate(req)
        .await
        .unwrap_or_else(|s| panic!("refused: {s:?}"));
    uri_sans(&resp.into_inner())
}

async fn refused(client: &mut Client, req: SignCertificateRequest) -> tonic::Status {
    match client.sign_certificate(req).await {
        Ok(_) => panic!("a certificate was issued"),
        Err(s) => s,
    }
}

async fn denied(client: &mut Client, req: SignCertificateRequest, why: &str) {
    let s = refused(client, req).await;
    assert_eq!(s.code(), Code::PermissionDenied, "{why}: {s:?}");
    assert!(
        s.message().contains(why),
        "expected {why:?} in {:?}",
        s.message()
    );
}

// ---- file source -----------------------------------------------------------------------------

#[tokio::test]
async fn file_source_issues_refuses_and_follows_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    let ed = Key::ed25519();
    let rsa = Key::rsa();
    std::fs::write(&jwks_file, jwks(&[jwk(&ed, "ed"), jwk(&rsa, "rsa")])).unwrap();
    let server = start(dir.path(), json!({"source": jwks_file.to_str().unwrap()}))
        .await
        .unwrap();
    let mut c = client(dir.path(), &server).await;

    // Valid tokens: EdDSA with the default trust domain, RS256 with a requested one.
    let t = token_with_kid(&ed, "ed", &claims_for("public", "shop", "orders"));
    assert_eq!(
        issued(&mut c, request("orders", "shop", &t)).await,
        ["spiffe://public/ns/shop/orders"]
    );
    let t = token_with_kid(&rsa, "rsa", &claims_for("example.org", "shop", "orders"));
    let mut r = request("orders", "shop", &t);
    r.trust_domain = "example.org".into();
    assert_eq!(
        issued(&mut c, r).await,
        ["spiffe://example.org/ns/shop/orders"]
    );

    // Validator selection: jwks only, no default.
    let good = token_with_kid(&ed, "ed", &claims_for("public", "shop", "orders"));
    let mut r = request("orders", "shop", &good);
    r.token_validator = TokenValidator::Unknown as i32;
    let s = refused(&mut c, r).await;
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(
        s.message(),
        "a validator name must be specified in this environment"
    );
    for v in [TokenValidator::Insecure, TokenValidator::Kubernetes] {
        let mut r = request("orders", "shop", &good);
        r.token_validator = v as i32;
        let s = refused(&mut c, r).await;
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "the requested validator is not enabled");
    }

    // Every refusal is PERMISSION_DENIED with a reason.
    denied(
        &mut c,
        request("orders", "shop", ""),
        "does not contain a token",
    )
    .await;
    denied(
        &mut c,
        request("orders", "", &good),
        "namespace is required",
    )
    .await;
    denied(&mut c, request("other", "shop", &good), "does not match").await;
    denied(
        &mut c,
        request("orders", "billing", &good),
        "does not match",
    )
    .await;
    let mut r = request("orders", "shop", &good);
    r.trust_domain = "example.org".into();
    denied(&mut c, r, "does not match").await;

    let base = claims_for("public", "shop", "orders");
    let with = |patch: Value| {
        let mut v = base.clone();
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    };
    let t = token_with_kid(
        &ed,
        "ed",
        &with(json!({"aud": ["spiffe://localhost/ns/other/dapr-sentry"]})),
    );
    denied(
        &mut c,
        request("orders", "shop", &t),
        r#""aud" not satisfied"#,
    )
    .await;
    let t = token_with_kid(&ed, "ed", &with(json!({"exp": now() - 600})));
    denied(
        &mut c,
        request("orders", "shop", &t),
        r#""exp" not satisfied"#,
    )
    .await;
    let t = token_with_kid(&ed, "ed", &with(json!({"nbf": now() + 3600})));
    denied(&mut c, request("orders", "shop", &t), "not valid yet").await;
    let t = token_with_kid(&ed, "nope", &base);
    denied(&mut c, request("orders", "shop", &t), "no key with kid").await;
    let t = token_with_kid(&Key::ed25519(), "ed", &base);
    denied(
        &mut c,
        request("orders", "shop", &t),
        "could not verify message",
    )
    .await;
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(base.to_string().as_bytes())
    );
    denied(&mut c, request("orders", "shop", &none), "compact form").await;
    let none = format!(
        "{}.{}.AAAA",
        b64(br#"{"alg":"none"}"#),
        b64(base.to_string().as_bytes())
    );
    denied(&mut c, request("orders", "shop", &none), "alg \"none\"").await;
    // HS256 keyed with the RSA public key: the key-confusion attack.
    let t = hmac_token(
        &rsa.public_bytes(),
        &json!({"alg": "HS256", "kid": "rsa"}),
        &base,
    );
    denied(&mut c, request("orders", "shop", &t), "HMAC").await;
    let t = token(
        &ed,
        &json!({"alg": "EdDSA", "kid": "ed", "crit": ["x"], "x": 1}),
        &base,
    );
    denied(&mut c, request("orders", "shop", &t), "crit").await;
    denied(
        &mut c,
        request("orders", "shop", &good[..good.len() - 10]),
        "token validation failed",
    )
    .await;
    denied(
        &mut c,
        request("orders", "shop", "%%%.%%%.%%%"),
        "base64url",
    )
    .await;
    let big = format!("{}.{}.{}", "a".repeat(10_000), "b".repeat(10_000), "c");
    denied(&mut c, request("orders", "shop", &big), "larger than").await;

    // Rotation: the file is replaced; the new key works at once, the old one is gone.
    let es = Key::p256();
    let tmp = dir.path().join("jwks.json.new");
    std::fs::write(&tmp, jwks(&[jwk(&es, "es")])).unwrap();
    std::fs::rename(&tmp, &jwks_file).unwrap();
    let t = token_with_kid(&es, "es", &base);
    assert_eq!(
        issued(&mut c, request("orders", "shop", &t)).await,
        ["spiffe://public/ns/shop/orders"]
    );
    denied(
        &mut c,
        request("orders", "shop", &good),
        "no key with kid \"ed\"",
    )
    .await;

    // A broken file keeps the last good keys.
    std::fs::write(&jwks_file, "{ this is not JSON").unwrap();
    issued(&mut c, request("orders", "shop", &t)).await;

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_file_is_unavailable_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("later.json");
    let server = start(dir.path(), json!({"source": jwks_file.to_str().unwrap()}))
        .await
        .unwrap();
    let mut c = client(dir.path(), &server).await;
    let key = Key::p256();
    let t = token_with_kid(&key, "k", &claims_for("public", "default", "app"));
    let s = refused(&mut c, request("app", "default", &t)).await;
    assert_eq!(s.code(), Code::Unavailable, "{s:?}");
    std::fs::write(&jwks_file, jwks(&[jwk(&key, "k")])).unwrap();
    issued(&mut c, request("app", "default", &t)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_options_fail_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (options, why) in [
        (json!({}), "\"source\" is required"),
        (json!({"source": "http://127.0.0.1:1/jwks"}), "https"),
        (
            json!({"source": "/x", "minRefreshInterval": "soon"}),
            "minRefreshInterval",
        ),
        (json!({"source": "/x", "surce": "/y"}), "unknown option"),
    ] {
        let e = start(dir.path(), options)
            .await
            .err()
            .expect("start must fail")
            .to_string();
        assert!(e.contains(why), "{why}: {e}");
    }
}

// ---- HTTPS source ----------------------------------------------------------------------------

/// A tiny HTTPS server answering every request with the current status and body.
struct JwksServer {
    url: String,
    ca_pem: String,
    response: Arc<Mutex<(u16, Vec<u8>)>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(body: String) -> JwksServer {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "jwks test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress(
            std::net::Ipv4Addr::LOCALHOST.into(),
        ));
        let cert = params.signed_by(&key, &issuer).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let response = Arc::new(Mutex::new((200u16, body.into_bytes())));
        let hits = Arc::new(AtomicUsize::new(0));
        let (resp, h) = (response.clone(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, resp, h) = (acceptor.clone(), resp.clone(), h.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    assert!(head.starts_with(b"GET /.well-known/jwks.json HTTP/1.1\r\n"));
                    h.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = resp.lock().unwrap().clone();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        JwksServer {
            url,
            ca_pem: ca_cert.pem(),
            response,
            hits,
            task,
        }
    }

    fn serve(&self, status: u16, body: impl Into<Vec<u8>>) {
        *self.response.lock().unwrap() = (status, body.into());
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn https_source_fetches_refreshes_on_unknown_kid_and_keeps_last_good_keys() {
    let old = Key::p256();
    let new = Key::ed25519();
    let jwks_server = JwksServer::start(jwks(&[jwk(&old, "old")])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("jwks-ca.pem");
    std::fs::write(&ca_file, &jwks_server.ca_pem).unwrap();
    // minRefreshInterval 0s is raised to the 1 s floor: an unknown kid may refetch once the
    // floor has passed since the last fetch (the rate limit itself is tested below).
    let server = start(
        dir.path(),
        json!({"source": jwks_server.url, "caCertificate": ca_file.to_str().unwrap(),
               "minRefreshInterval": "0s", "requestTimeout": "5s"}),
    )
    .await
    .unwrap();
    let mut c = client(dir.path(), &server).await;
    let claims = claims_for("public", "default", "app");
    let old_token = token_with_kid(&old, "old", &claims);
    assert_eq!(
        issued(&mut c, request("app", "default", &old_token)).await,
        ["spiffe://public/ns/default/app"]
    );
    assert!(jwks_server.hits() >= 1);

    // Rotation at the source: a token with the new kid triggers a fetch and is accepted.
    jwks_server.serve(200, jwks(&[jwk(&new, "new")]));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let new_token = token_with_kid(&new, "new", &claims);
    issued(&mut c, request("app", "default", &new_token)).await;

    // The source fails (500, then garbage): the last good keys keep serving.
    jwks_server.serve(500, "oops");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let before = jwks_server.hits();
    denied(
        &mut c,
        request("app", "default", &token_with_kid(&old, "gone", &claims)),
        "no key with kid",
    )
    .await;
    assert!(
        jwks_server.hits() > before,
        "unknown kid must trigger a fetch"
    );
    issued(&mut c, request("app", "default", &new_token)).await;
    jwks_server.serve(200, "not json");
    issued(&mut c, request("app", "default", &new_token)).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn https_refresh_is_rate_limited_by_min_refresh_interval() {
    let old = Key::p256();
    let new = Key::ed25519();
    let jwks_server = JwksServer::start(jwks(&[jwk(&old, "old")])).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        json!({"source": jwks_server.url, "caCertificate": jwks_server.ca_pem, "minRefreshInterval": "1h"}),
    )
    .await
    .unwrap();
    let mut c = client(dir.path(), &server).await;
    let claims = claims_for("public", "default", "app");
    for _ in 0..3 {
        issued(
            &mut c,
            request("app", "default", &token_with_kid(&old, "old", &claims)),
        )
        .await;
    }
    assert_eq!(
        jwks_server.hits(),
        1,
        "one fetch for warm-up and requests together"
    );
    jwks_server.serve(200, jwks(&[jwk(&new, "new")]));
    for _ in 0..3 {
        denied(
            &mut c,
            request("app", "default", &token_with_kid(&new, "new", &claims)),
            "no key with kid",
        )
        .await;
    }
    assert_eq!(
        jwks_server.hits(),
        1,
        "unknown kids must not refetch within minRefreshInterval"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn https_source_without_keys_is_unavailable() {
    let key = Key::p256();
    let signed = token_with_kid(&key, "k", &claims_for("public", "default", "app"));

    // Oversized body, wrong CA, non-200, and a closed port: no keys, so UNAVAILABLE.
    let jwks_server = JwksServer::start("x".repeat(600 * 1024)).await;
    let other_ca = JwksServer::start(jwks(&[jwk(&key, "k")])).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://{}/jwks.json", l.local_addr().unwrap())
    };
    let cases = [
        (jwks_server.url.clone(), jwks_server.ca_pem.clone()),
        (other_ca.url.clone(), jwks_server.ca_pem.clone()),
        (closed, jwks_server.ca_pem.clone()),
    ];
    for (url, ca) in cases {
        let dir = tempfile::tempdir().unwrap();
        let server = start(
            dir.path(),
            json!({"source": url, "caCertificate": ca, "requestTimeout": "5s"}),
        )
        .await
        .unwrap();
        let mut c = client(dir.path(), &server).await;
        let s = refused(&mut c, request("app", "default", &signed)).await;
        assert_eq!(s.code(), Code::Unavailable, "{url}: {s:?}");
        assert!(s.message().contains("JWKS"), "{s:?}");
        server.shutdown().await.unwrap();
    }
    assert_eq!(
        other_ca.hits(),
        0,
        "no request may be sent over an untrusted connection"
    );

    // The same server, once it serves keys, is used (after the initial retry gap at most).
    jwks_server.serve(200, jwks(&[jwk(&key, "k")]));
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        json!({"source": jwks_server.url, "caCertificate": jwks_server.ca_pem}),
    )
    .await
    .unwrap();
    let mut c = client(dir.path(), &server).await;
    issued(&mut c, request("app", "default", &signed)).await;
    server.shutdown().await.unwrap();
}
