//! End to end over real sockets and real TLS: a standalone `sigil serve` and a tonic client.

mod support;

use support::standalone;

use std::time::Duration;

use rustls_pki_types::pem::PemObject;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

fn parse_pem_chain(pem_bytes: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_bytes)
        .expect("PEM")
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

#[tokio::test]
async fn issues_for_every_key_type_with_daprs_response_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(dir.path(), &[]).await;
    let ca = std::fs::read(standalone::creds(dir.path()).join("ca.crt")).unwrap();
    let issuer = std::fs::read(standalone::creds(dir.path()).join("issuer.crt")).unwrap();
    let mut client = standalone::client(&server, &ca).await;

    let mut csrs: Vec<(&str, String)> = vec![
        ("ed25519", standalone::csr(&rcgen::PKCS_ED25519).1),
        ("p256", standalone::csr(&rcgen::PKCS_ECDSA_P256_SHA256).1),
        ("p384", standalone::csr(&rcgen::PKCS_ECDSA_P384_SHA384).1),
        ("rsa2048", standalone::rsa_csr(2048)),
        ("rsa4096", standalone::rsa_csr(4096)),
    ];
    for (name, csr) in csrs.drain(..) {
        let mut req = standalone::request("orders", "shop", &csr);
        req.trust_domain = "example.org".into();
        let resp = client
            .sign_certificate(req)
            .await
            .unwrap_or_else(|s| panic!("{name}: {s}"))
            .into_inner();

        let chain = parse_pem_chain(&resp.workload_certificate);
        assert_eq!(chain.len(), 2, "{name}: leaf + issuer, root left out");
        assert_eq!(chain[1], parse_pem_chain(&issuer)[0]);
        assert_eq!(
            resp.trust_chain_certificates.len(),
            1,
            "one element with all anchors"
        );
        assert_eq!(resp.trust_chain_certificates[0], ca);
        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::URI("spiffe://example.org/ns/shop/orders")],
            "{name}"
        );
        let valid_until = resp.valid_until.expect("valid_until set");
        assert_eq!(valid_until.seconds, leaf.validity().not_after.timestamp());
        let csr_der = pem::parse(csr.as_bytes()).unwrap().into_contents();
        let (_, parsed_csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der)
                .unwrap();
        assert_eq!(
            leaf.public_key().raw,
            parsed_csr.certification_request_info.subject_pki.raw,
            "{name}: key from the CSR"
        );
        let (_, issuer_cert) = X509Certificate::from_der(&chain[1]).unwrap();
        leaf.verify_signature(Some(issuer_cert.public_key()))
            .unwrap();
    }
    assert_eq!(server.metrics.sign_success.get(), 5);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn refusals_carry_daprs_codes_and_issue_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(dir.path(), &[]).await;
    let ca = std::fs::read(standalone::creds(dir.path()).join("ca.crt")).unwrap();
    let mut client = standalone::client(&server, &ca).await;
    let (_, good) = standalone::csr(&rcgen::PKCS_ED25519);

    let cases: Vec<(&str, sigil_proto::SignCertificateRequest, tonic::Code, &str)> = vec![
        (
            "empty id",
            standalone::request("", "ns", &good),
            tonic::Code::PermissionDenied,
            "parameter app-id cannot be empty",
        ),
        (
            "dotted id",
            standalone::request("a.b", "ns", &good),
            tonic::Code::PermissionDenied,
            "cannot contain dots",
        ),
        (
            "long id",
            standalone::request(&"a".repeat(65), "ns", &good),
            tonic::Code::PermissionDenied,
            "64 characters or less",
        ),
        (
            "no namespace",
            standalone::request("app", "", &good),
            tonic::Code::PermissionDenied,
            "namespace is required",
        ),
        (
            "no csr",
            standalone::request("app", "ns", ""),
            tonic::Code::PermissionDenied,
            "CSR is required",
        ),
        (
            "garbage csr",
            standalone::request("app", "ns", "garbage"),
            tonic::Code::InvalidArgument,
            "invalid certificate signing request",
        ),
        (
            "kubernetes validator",
            {
                let mut r = standalone::request("app", "ns", &good);
                r.token_validator = 2;
                r
            },
            tonic::Code::InvalidArgument,
            "the requested validator is not enabled",
        ),
        (
            "unknown validator",
            {
                let mut r = standalone::request("app", "ns", &good);
                r.token_validator = 99;
                r
            },
            tonic::Code::InvalidArgument,
            "the requested validator is not enabled",
        ),
    ];
    for (name, req, code, fragment) in cases {
        let status = client.sign_certificate(req).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(
            status.message().contains(fragment),
            "{name}: {:?}",
            status.message()
        );
    }
    // A CSR whose signature was tampered with.
    let mut der = pem::parse(good.as_bytes()).unwrap().into_contents();
    let n = der.len();
    der[n - 5] ^= 0xff;
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let status = client
        .sign_certificate(standalone::request("app", "ns", &tampered))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "invalid signature");

    assert_eq!(server.metrics.sign_success.get(), 0);
    let text = reqwest_get(server.metrics_addr.unwrap(), "/metrics").await;
    assert!(
        text.contains("dapr_sentry_cert_sign_failure_total{reason=\"denied\"} 5"),
        "{text}"
    );
    server.shutdown().await.unwrap();
}

async fn reqwest_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn health_and_metrics_endpoints_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(dir.path(), &[]).await;
    let health = reqwest_get(server.healthz_addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = reqwest_get(server.metrics_addr.unwrap(), "/").await;
    assert!(
        metrics.contains("dapr_sentry_issuercert_expiry_timestamp"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sigil_ca_certificate_expiry_seconds{role=\"root\""),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_new_tls_connection_per_request_works_like_daprd() {
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(dir.path(), &[]).await;
    let ca = std::fs::read(standalone::creds(dir.path()).join("ca.crt")).unwrap();
    for i in 0..20 {
        let mut client = standalone::client(&server, &ca).await;
        let (_, csr) = standalone::csr(&rcgen::PKCS_ED25519);
        client
            .sign_certificate(standalone::request(&format!("app{i}"), "ns", &csr))
            .await
            .unwrap();
    }
    assert_eq!(server.metrics.sign_success.get(), 20);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_certificate_is_sentrys_spiffe_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(dir.path(), &[]).await;
    let current = server.serving.current();
    let (_, leaf) = X509Certificate::from_der(current.key.cert[0].as_ref()).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|g| g.to_string())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.contains("spiffe://localhost/ns/default/dapr-sentry")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.contains("dapr-sentry.default.svc.cluster.local")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_connection_is_a_full_handshake() {
    // A client that would resume (rustls keeps a session cache by default) still gets a
    // full handshake with the certificate every time: no tickets, no session cache.
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(dir.path(), &[]).await;
    let ca = std::fs::read(standalone::creds(dir.path()).join("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    for _ in 0..3 {
        let tcp = tokio::net::TcpStream::connect(server.grpc_addr)
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        // Read what the server sends after the handshake (tickets would arrive here) until
        // its HTTP/2 SETTINGS frame shows up.
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_millis(200), tls.read(&mut buf)).await;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn insecure_validator_refuses_non_loopback_without_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = standalone::serve_args(dir.path(), &["--listen-address", "0.0.0.0"])
        .into_config(None)
        .unwrap();
    let err = sigil::server::start(config, std::sync::Arc::new(sigil_pki::SystemClock))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--insecure-allow-remote"), "{err}");
}

#[tokio::test]
async fn existing_invalid_material_stops_start_and_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let creds = standalone::creds(dir.path());
    std::fs::create_dir_all(&creds).unwrap();
    for f in ["ca.crt", "issuer.crt", "issuer.key"] {
        std::fs::write(creds.join(f), b"not pem").unwrap();
    }
    let config = standalone::serve_args(dir.path(), &[])
        .into_config(None)
        .unwrap();
    let err = sigil::server::start(config, std::sync::Arc::new(sigil_pki::SystemClock))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("not usable"), "{err}");
    assert_eq!(std::fs::read(creds.join("ca.crt")).unwrap(), b"not pem");
}

/// A root and two issuers under it, made with rcgen, written as Dapr's three files.
struct TestPki {
    root_params: CertificateParams,
    root_key: KeyPair,
    root_pem: String,
}

impl TestPki {
    fn new() -> Self {
        let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::OrganizationName, "test root");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(30 * 3);
        let root_pem = p.self_signed(&root_key).unwrap().pem();
        Self {
            root_params: p,
            root_key,
            root_pem,
        }
    }

    /// (issuer.crt, issuer.key)
    fn issuer(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(60);
        p.use_authority_key_identifier_extension = true;
        let issuer = rcgen::Issuer::from_params(&self.root_params, &self.root_key);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write_issuer(creds: &std::path::Path, cert: &str, key: &str) {
    // Atomic replacement as an operator (or kubelet's secret volume) would do it.
    for (name, data) in [("issuer.key", key), ("issuer.crt", cert)] {
        let tmp = creds.join(format!(".{name}.new"));
        std::fs::write(&tmp, data).unwrap();
        std::fs::rename(&tmp, creds.join(name)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_rotation_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let creds = standalone::creds(dir.path());
    std::fs::create_dir_all(&creds).unwrap();
    let pki = TestPki::new();
    let (c1, k1) = pki.issuer("issuer one");
    std::fs::write(creds.join("ca.crt"), &pki.root_pem).unwrap();
    write_issuer(&creds, &c1, &k1);
    let server = standalone::start(
        dir.path(),
        // All the load comes from one address: the per-caller limits are not under test here.
        &["--peer-rate-limit=0", "--identity-rate-limit=0"],
    )
    .await;
    let ca = pki.root_pem.clone().into_bytes();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let channel = standalone::channel(&server, &ca).await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut client = sigil_proto::sentry::ca_client::CaClient::new(channel);
            let (_, csr) = standalone::csr(&rcgen::PKCS_ED25519);
            let mut issuers = std::collections::BTreeMap::<String, usize>::new();
            let mut failures = 0usize;
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && n < 5000 {
                n += 1;
                match client
                    .sign_certificate(standalone::request(&format!("w{w}"), "ns", &csr))
                    .await
                {
                    Ok(resp) => {
                        let chain = parse_pem_chain(&resp.into_inner().workload_certificate);
                        let (_, issuer) = X509Certificate::from_der(&chain[1]).unwrap();
                        let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
                        leaf.verify_signature(Some(issuer.public_key()))
                            .expect("leaf signed by the issuer sent with it");
                        *issuers.entry(issuer.subject().to_string()).or_default() += 1;
                    }
                    Err(_) => failures += 1,
                }
            }
            (issuers, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (c2, k2) = pki.issuer("issuer two");
    write_issuer(&creds, &c2, &k2);
    // Wait for the reload (debounced polling every 200ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.metrics.issuer_changed.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "issuer change not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Corrupt files: the server keeps signing with issuer two.
    std::fs::write(
        creds.join("issuer.key"),
        b"-----BEGIN PRIVATE KEY-----\ntruncated\n",
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while server.metrics.reload_failures.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bad material not noticed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = std::collections::BTreeMap::<String, usize>::new();
    for w in workers {
        let (issuers, failures) = w.await.unwrap();
        assert_eq!(failures, 0, "requests failed during rotation");
        for (k, v) in issuers {
            *total.entry(k).or_default() += v;
        }
    }
    assert!(
        total.get("O=issuer one").copied().unwrap_or(0) > 0,
        "{total:?}"
    );
    assert!(
        total.get("O=issuer two").copied().unwrap_or(0) > 0,
        "{total:?}"
    );
    assert_eq!(total.len(), 2, "{total:?}");
    // After the corrupt write, new certificates still come from issuer two.
    let mut client = standalone::client(&server, &ca).await;
    let (_, csr) = standalone::csr(&rcgen::PKCS_ED25519);
    let resp = client
        .sign_certificate(standalone::request("after", "ns", &csr))
        .await
        .unwrap()
        .into_inner();
    let chain = parse_pem_chain(&resp.workload_certificate);
    let (_, issuer) = X509Certificate::from_der(&chain[1]).unwrap();
    assert_eq!(issuer.subject().to_string(), "O=issuer two");
    // And the server certificate was reissued under issuer two.
    let serving = server.serving.current();
    let (_, s) = X509Certificate::from_der(serving.key.cert[1].as_ref()).unwrap();
    assert_eq!(s.subject().to_string(), "O=issuer two");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_and_stops_listening() {
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(dir.path(), &[]).await;
    let addr = server.grpc_addr;
    server.shutdown().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test]
async fn per_caller_rate_limits_answer_resource_exhausted() {
    // By client address: a burst of 3, then about one a second.
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(
        dir.path(),
        &[
            "--peer-rate-limit=0.5",
            "--peer-rate-burst=3",
            "--identity-rate-limit=0",
        ],
    )
    .await;
    let ca = std::fs::read(standalone::creds(dir.path()).join("ca.crt")).unwrap();
    let mut client = standalone::client(&server, &ca).await;
    let (_, csr) = standalone::csr(&rcgen::PKCS_ED25519);
    for i in 0..3 {
        client
            .sign_certificate(standalone::request(&format!("app{i}"), "ns", &csr))
            .await
            .unwrap_or_else(|e| panic!("request {i} within the burst: {e:?}"));
    }
    let err = client
        .sign_certificate(standalone::request("app9", "ns", &csr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("127.0.0.1") && err.message().contains("retry in"),
        "{err:?}"
    );
    // Even a request that would be refused anyway is counted before any work is done.
    let err = client
        .sign_certificate(standalone::request("", "ns", &csr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    server.shutdown().await.unwrap();

    // By proven identity: one app id is limited, another is not.
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(
        dir.path(),
        &[
            "--peer-rate-limit=0",
            "--identity-rate-limit=0.5",
            "--identity-rate-burst=2",
        ],
    )
    .await;
    let ca = std::fs::read(standalone::creds(dir.path()).join("ca.crt")).unwrap();
    let mut client = standalone::client(&server, &ca).await;
    for _ in 0..2 {
        client
            .sign_certificate(standalone::request("busy", "ns", &csr))
            .await
            .unwrap();
    }
    let err = client
        .sign_certificate(standalone::request("busy", "ns", &csr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("ns/busy"), "{err:?}");
    client
        .sign_certificate(standalone::request("quiet", "ns", &csr))
        .await
        .expect("another identity is not affected");
    assert_eq!(
        server
            .metrics
            .sign_failure
            .get_or_create(&sigil::observe::ReasonLabel {
                reason: "rate_limited".into()
            })
            .get(),
        1
    );
    server.shutdown().await.unwrap();
}
