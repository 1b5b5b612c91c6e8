//! End-to-end tests of `sigil-client` against a real Sigil server (and a fake CA) over real
//! sockets on 127.0.0.1, with real TLS and real certificates. Waits are on watch channels or
//! status polls with generous limits; nothing asserts how fast something happened.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::{CertificateDer, ServerName};
use sigil::server::RunningServer;
use sigil::store::file::{FileNames, FileStore};
use sigil_client::{
    peer_spiffe_id, PeerAuthorizer, SourceConfig, SpiffeId, SvidSource, TrustAnchorSource,
};
use sigil_pki::{Authority, CaFiles, CaParams};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

const LONG: Duration = Duration::from_secs(30);

async fn start_server(creds: &Path, extra: &[&str]) -> RunningServer {
    let creds = creds.to_str().unwrap().to_string();
    let mut argv = vec!["--issuer-credentials", &creds];
    if !extra.contains(&"--port") {
        argv.extend_from_slice(&["--port", "0"]);
    }
    argv.extend_from_slice(&[
        "--healthz-port",
        "0",
        "--enable-metrics=false",
        "--config",
        "/nonexistent/daprsystem",
        "--reload-interval",
        "200ms",
    ]);
    argv.extend_from_slice(extra);
    support::start(support::serve_args(&argv)).await.unwrap()
}

fn source_config(addr: &str, app: &str, td: &str, anchors: &Path) -> SourceConfig {
    let mut c = SourceConfig::new(
        addr,
        app,
        "default",
        TrustAnchorSource::File(anchors.to_path_buf()),
    )
    .unwrap();
    c.trust_domain = td.parse().unwrap();
    c.anchors_poll_interval = Duration::from_millis(200);
    c.renewal.backoff_max = Duration::from_secs(2);
    c
}

fn start_source(addr: SocketAddr, app: &str, td: &str, anchors: &Path) -> SvidSource {
    SvidSource::start(source_config(&addr.to_string(), app, td, anchors)).unwrap()
}

async fn ready(source: &SvidSource) -> Arc<sigil_client::Svid> {
    tokio::time::timeout(LONG, source.wait_for_svid())
        .await
        .unwrap_or_else(|_| panic!("no certificate: {:?}", source.status()))
        .unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// What an echo server saw of each connection: the client's ID and leaf, or the error.
type Seen = Result<(Option<SpiffeId>, Vec<u8>), String>;

struct Echo {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

async fn echo_server(config: rustls::ServerConfig) -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let conn = tls.get_ref().1;
                        let leaf = conn
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.to_vec())
                            .unwrap_or_default();
                        let _ = tx.send(Ok((peer_spiffe_id(conn.peer_certificates()), leaf)));
                        let mut buf = [0u8; 256];
                        loop {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if tls.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    Echo { addr, seen }
}

type Conn = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects, completes the handshake and one echo round trip. Returns the connection and
/// the server's leaf.
async fn talk(addr: SocketAddr, config: &rustls::ClientConfig) -> Result<(Conn, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(Arc::new(config.clone()))
        .connect(ServerName::try_from("peer").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let server_leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    round_trip(&mut tls).await?;
    Ok((tls, server_leaf))
}

async fn round_trip(tls: &mut Conn) -> Result<(), String> {
    let io = async {
        tls.write_all(b"ping\n").await?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(Duration::from_secs(10), io).await {
        Ok(Ok(buf)) if &buf == b"ping\n" => Ok(()),
        Ok(Ok(buf)) => Err(format!("echo returned {buf:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("echo timed out".into()),
    }
}

async fn next_seen(echo: &mut Echo) -> Seen {
    tokio::time::timeout(LONG, echo.seen.recv())
        .await
        .expect("echo server saw nothing")
        .expect("echo server gone")
}

fn public() -> PeerAuthorizer {
    PeerAuthorizer::trust_domain("public".parse().unwrap())
}

fn first_cert_der(pem: &[u8]) -> Vec<u8> {
    sigil_pki::pem_bundle::parse_certificates("test", pem).unwrap()[0].clone()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_talk_mtls_and_unauthorized_or_foreign_peers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let server = start_server(&creds, &[]).await;
    let anchors = creds.join("ca.crt");

    let started = Instant::now();
    let alpha = start_source(server.grpc_addr, "alpha", "public", &anchors);
    let alpha_svid = ready(&alpha).await;
    eprintln!(
        "time from start to first certificate (local server): {:?}",
        started.elapsed()
    );
    let beta = start_source(server.grpc_addr, "beta", "public", &anchors);
    ready(&beta).await;
    assert_eq!(
        alpha_svid.spiffe_id(),
        &id("spiffe://public/ns/default/alpha")
    );

    // alpha serves to beta only; beta accepts any server in `public`.
    let beta_id = id("spiffe://public/ns/default/beta");
    let mut echo = echo_server(
        alpha
            .server_config(PeerAuthorizer::one_of([beta_id.clone()]))
            .unwrap(),
    )
    .await;
    let beta_client = beta.client_config(public()).unwrap();
    let (conn, server_leaf) = talk(echo.addr, &beta_client).await.unwrap();
    assert_eq!(server_leaf, alpha_svid.chain()[0].to_vec());
    assert_eq!(
        peer_spiffe_id(conn.get_ref().1.peer_certificates()),
        Some(alpha_svid.spiffe_id().clone())
    );
    let (client_id, _) = next_seen(&mut echo).await.unwrap();
    assert_eq!(client_id, Some(beta_id.clone()));

    // Same CA, same trust domain, but not on alpha's list: refused by alpha.
    let mallory = start_source(server.grpc_addr, "mallory", "public", &anchors);
    ready(&mallory).await;
    assert!(talk(echo.addr, &mallory.client_config(public()).unwrap())
        .await
        .is_err());
    let refused = next_seen(&mut echo).await.unwrap_err();
    assert!(refused.contains("not authorized"), "{refused}");

    // "beta" from another trust domain (same CA): refused by alpha's exact list.
    let foreign = start_source(server.grpc_addr, "beta", "other", &anchors);
    ready(&foreign).await;
    assert!(talk(echo.addr, &foreign.client_config(public()).unwrap())
        .await
        .is_err());
    assert!(next_seen(&mut echo).await.is_err());

    // A trust-domain authorizer refuses it too, from the server side ...
    let mut td_echo = echo_server(beta.server_config(public()).unwrap()).await;
    assert!(
        talk(td_echo.addr, &foreign.client_config(public()).unwrap())
            .await
            .is_err()
    );
    assert!(next_seen(&mut td_echo).await.is_err());
    // ... and the client side refuses a server whose ID it does not expect.
    let picky = beta
        .client_config(PeerAuthorizer::one_of([id(
            "spiffe://public/ns/default/gamma",
        )]))
        .unwrap();
    let e = talk(echo.addr, &picky).await.unwrap_err();
    assert!(e.contains("not authorized"), "{e}");
    let aborted = next_seen(&mut echo).await.unwrap_err();
    assert!(aborted.contains("alert"), "{aborted}");

    // A workload of another Sigil (another CA) is refused even with the right name.
    let dir2 = tempfile::tempdir().unwrap();
    let creds2 = dir2.path().join("creds");
    let server2 = start_server(&creds2, &[]).await;
    // It trusts our root too, so that it is alpha's check that refuses it.
    let impostor_anchors = dir2.path().join("anchors.pem");
    std::fs::write(
        &impostor_anchors,
        [
            std::fs::read(creds2.join("ca.crt")).unwrap(),
            std::fs::read(&anchors).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let impostor = start_source(server2.grpc_addr, "beta", "public", &impostor_anchors);
    ready(&impostor).await;
    assert!(talk(echo.addr, &impostor.client_config(public()).unwrap())
        .await
        .is_err());
    // webpki tries the root with the same name (both CAs are "O=localhost") and finds the
    // signature does not match.
    let refused = next_seen(&mut echo).await.unwrap_err();
    assert!(
        refused.contains("BadSignature") || refused.contains("UnknownIssuer"),
        "{refused}"
    );

    for s in [&alpha, &beta, &mallory, &foreign, &impostor] {
        s.stop();
    }
    server.shutdown().await.unwrap();
    server2.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renews_before_expiry_new_handshakes_use_new_cert_and_open_connections_survive() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    // Default clock skew (15 min backdating) on purpose: the schedule must not be fooled.
    let server = start_server(&creds, &["--workload-cert-ttl", "4s"]).await;
    let anchors = creds.join("ca.crt");
    let alpha = start_source(server.grpc_addr, "alpha", "public", &anchors);
    let beta = start_source(server.grpc_addr, "beta", "public", &anchors);
    let mut alpha_rx = alpha.subscribe();
    let first = ready(&alpha).await;
    ready(&beta).await;

    let mut echo = echo_server(alpha.server_config(public()).unwrap()).await;
    let beta_client = beta.client_config(public()).unwrap();
    let (mut open, leaf) = talk(echo.addr, &beta_client).await.unwrap();
    assert_eq!(leaf, first.chain()[0].to_vec());
    next_seen(&mut echo).await.unwrap();

    // Record renewals until four certificates have been seen.
    let mut timeline = vec![first.clone()];
    alpha_rx.borrow_and_update();
    while timeline.len() < 4 {
        tokio::time::timeout(LONG, alpha_rx.changed())
            .await
            .expect("no renewal")
            .unwrap();
        let svid = alpha_rx.borrow_and_update().clone().unwrap();
        timeline.push(svid);
    }
    eprintln!("renewal timeline (TTL 4s, NotBefore backdated 15m by the server):");
    for (i, s) in timeline.iter().enumerate() {
        let prev_after = i
            .checked_sub(1)
            .map(|p| {
                format!(
                    "{:.2}s before the previous NotAfter",
                    (timeline[p].not_after() - s.received_at()).as_seconds_f64()
                )
            })
            .unwrap_or_default();
        eprintln!(
            "  #{i} received {} not_before {} not_after {} serial {} {}",
            s.received_at(),
            s.not_before(),
            s.not_after(),
            s.serial_hex(),
            prev_after
        );
    }
    for pair in timeline.windows(2) {
        assert_ne!(pair[0].serial_hex(), pair[1].serial_hex());
        assert!(
            pair[1].received_at() < pair[0].not_after(),
            "renewed after expiry: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    let status = alpha.status();
    assert!(status.renewals >= 4, "{status:?}");
    assert_eq!(status.consecutive_failures, 0);

    // A new handshake presents a renewed certificate ...
    let (mut fresh, leaf) = talk(echo.addr, &beta_client).await.unwrap();
    assert_ne!(leaf, first.chain()[0].to_vec());
    let current = alpha.current().unwrap();
    assert!(timeline
        .iter()
        .skip(1)
        .chain(std::iter::once(&current))
        .any(|s| s.chain()[0].to_vec() == leaf));
    // ... the server side saw beta's renewed certificate as well ...
    let (_, beta_leaf) = next_seen(&mut echo).await.unwrap();
    assert_eq!(
        peer_spiffe_id(Some(&[CertificateDer::from(beta_leaf)])),
        Some(id("spiffe://public/ns/default/beta"))
    );
    // ... and the connection opened with the first certificate, now expired, still works.
    assert!(OffsetDateTime::now_utc() > first.not_after());
    round_trip(&mut open).await.unwrap();
    round_trip(&mut fresh).await.unwrap();

    alpha.stop();
    beta.stop();
    server.shutdown().await.unwrap();
}

fn issuer_der(files: &CaFiles) -> Vec<u8> {
    first_cert_der(&files.issuer_crt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rotation_without_a_failed_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let server = start_server(&creds, &["--workload-cert-ttl", "4s"]).await;
    let store = FileStore::new(&creds, FileNames::default());
    let old = store.load_sync().unwrap().unwrap();
    let old_root = first_cert_der(&old.ca_crt);
    // The workloads' anchors file, as a mounted ConfigMap would be.
    let anchors: PathBuf = dir.path().join("trust-anchors.pem");
    std::fs::write(&anchors, &old.ca_crt).unwrap();

    let alpha = start_source(server.grpc_addr, "alpha", "public", &anchors);
    let beta = start_source(server.grpc_addr, "beta", "public", &anchors);
    ready(&alpha).await;
    ready(&beta).await;

    // Traffic all along: a new handshake beta -> alpha every 50 ms.
    let echo = echo_server(alpha.server_config(public()).unwrap()).await;
    let client = beta.client_config(public()).unwrap();
    let running = Arc::new(AtomicBool::new(true));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let traffic = {
        let (running, ok, failures, addr) =
            (running.clone(), ok.clone(), failures.clone(), echo.addr);
        tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                match talk(addr, &client).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    // 1. The new root is added to every trust bundle (workloads and the server's ca.crt).
    let mut params = CaParams::new("localhost".parse().unwrap(), "default".parse().unwrap());
    params.clock_skew = time::Duration::minutes(15);
    let new = Authority::generate(&params, OffsetDateTime::now_utc()).unwrap();
    let new_root = first_cert_der(&new.ca_crt);
    let both = [old.ca_crt.clone(), new.ca_crt.clone()].concat();
    std::fs::write(&anchors, &both).unwrap();
    store
        .write_sync(&CaFiles {
            ca_crt: both.clone(),
            ..old.clone()
        })
        .unwrap();
    wait_for("workloads to trust both roots", || {
        [&alpha, &beta]
            .iter()
            .all(|s| s.trust_anchors().contains(&new_root) && s.trust_anchors().contains(&old_root))
    })
    .await;
    wait_for("the server to load both roots", || {
        server.state.current().trust_bundle().roots().len() == 2
    })
    .await;

    // 2. The issuer changes to one under the new root; workloads move over as they renew.
    store
        .write_sync(&CaFiles {
            ca_crt: both.clone(),
            ..new.clone()
        })
        .unwrap();
    let new_issuer = issuer_der(&new);
    wait_for("workloads to hold certificates from the new issuer", || {
        [&alpha, &beta].iter().all(|s| {
            s.current()
                .map(|c| c.chain().get(1).map(|d| d.to_vec()) == Some(new_issuer.clone()))
                .unwrap_or(false)
        })
    })
    .await;

    // 3. The old root is removed everywhere.
    std::fs::write(&anchors, &new.ca_crt).unwrap();
    store.write_sync(&new).unwrap();
    wait_for("workloads to drop the old root", || {
        [&alpha, &beta].iter().all(|s| {
            let set = s.trust_anchors();
            !set.contains(&old_root) && set.contains(&new_root)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    running.store(false, Ordering::SeqCst);
    traffic.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    let ok = ok.load(Ordering::SeqCst);
    eprintln!("root rotation: {ok} handshakes, {} failed", failures.len());
    assert!(failures.is_empty(), "failed handshakes: {failures:?}");
    assert!(ok >= 10, "too little traffic to mean anything: {ok}");
    // Only the new root is trusted now: a chain under the old root no longer verifies.
    assert_eq!(alpha.trust_anchors().roots().len(), 1);

    alpha.stop();
    beta.stop();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_retrying_while_sigil_is_down_and_recovers_when_it_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let files = Authority::generate(
        &CaParams::new("localhost".parse().unwrap(), "default".parse().unwrap()),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    FileStore::new(&creds, FileNames::default())
        .write_sync(&files)
        .unwrap();
    // A port nobody listens on (yet).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let source = start_source(addr, "alpha", "public", &creds.join("ca.crt"));

    wait_for("a few failed tries", || source.status().failures >= 3).await;
    let status = source.status();
    assert!(source.current().is_none());
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("cannot reach"),
        "{status:?}"
    );
    assert!(status.next_attempt_at.is_some());

    let port_arg = port.to_string();
    let server = start_server(&creds, &["--port", &port_arg]).await;
    let svid = ready(&source).await;
    assert_eq!(svid.spiffe_id(), &id("spiffe://public/ns/default/alpha"));
    let status = source.status();
    assert_eq!(status.consecutive_failures, 0);
    assert!(status.has_valid_certificate(OffsetDateTime::now_utc()));
    source.stop();
    server.shutdown().await.unwrap();
}

// ---- a fake CA that can misbehave ----------------------------------------------------------

const HONEST: u8 = 0;
const WRONG_ID: u8 = 1;
const WRONG_KEY: u8 = 2;
const UNTRUSTED: u8 = 3;

struct FakeCa {
    authority: Authority,
    stranger: Authority,
    mode: Arc<AtomicU8>,
}

#[tonic::async_trait]
impl sigil_proto::sentry::ca_server::Ca for FakeCa {
    async fn sign_certificate(
        &self,
        request: tonic::Request<sigil_proto::SignCertificateRequest>,
    ) -> Result<tonic::Response<sigil_proto::SignCertificateResponse>, tonic::Status> {
        let req = request.into_inner();
        let mode = self.mode.load(Ordering::SeqCst);
        let csr = if mode == WRONG_KEY {
            let other = sigil_pki::PrivateKey::generate(sigil_pki::KeyType::Ed25519).unwrap();
            let mut p = rcgen::CertificateParams::default();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.serialize_request(&other)
                .unwrap()
                .pem()
                .unwrap()
                .into_bytes()
        } else {
            req.certificate_signing_request.clone()
        };
        let csr = sigil_pki::ValidatedCsr::parse(&csr)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let who = if mode == WRONG_ID {
            "spiffe://public/ns/default/mallory".to_string()
        } else {
            format!(
                "spiffe://{}/ns/{}/{}",
                req.trust_domain, req.namespace, req.id
            )
        };
        let signer = if mode == UNTRUSTED {
            &self.stranger
        } else {
            &self.authority
        };
        let issued = signer
            .issue(
                &csr,
                &SpiffeId::parse(&who).unwrap(),
                &Default::default(),
                &sigil_pki::IssuePolicy::default(),
                OffsetDateTime::now_utc(),
            )
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        Ok(tonic::Response::new(sigil_proto::SignCertificateResponse {
            workload_certificate: issued.chain_pem.into_bytes(),
            // Always the real anchors: a stranger's chain must not be made trusted by them.
            trust_chain_certificates: vec![self.authority.trust_bundle().to_pem().into_bytes()],
            valid_until: Some(prost_types::Timestamp {
                seconds: issued.not_after.unix_timestamp(),
                nanos: 0,
            }),
            jwt: None,
            per_audience_jwts: Default::default(),
        }))
    }
}

fn new_authority() -> (Authority, CaFiles) {
    let files = Authority::generate(
        &CaParams::new("localhost".parse().unwrap(), "default".parse().unwrap()),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    (
        Authority::load(&files, OffsetDateTime::now_utc()).unwrap(),
        files,
    )
}

/// Starts the fake CA over TLS with a serving certificate for `serving_id`.
async fn fake_ca(serving_id: &str, mode: Arc<AtomicU8>) -> (SocketAddr, CaFiles) {
    let (authority, files) = new_authority();
    let (stranger, _) = new_authority();
    let serving = sigil::serving_cert::issue(
        &authority,
        &sigil::serving_cert::ServingIdentity {
            id: SpiffeId::parse(serving_id).unwrap(),
            dns_names: vec![],
        },
        &sigil_pki::IssuePolicy::default(),
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(sigil::serving_cert::ServingCert::new(serving)));
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conn_tx, conn_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, conn_tx) = (acceptor.clone(), conn_tx.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = conn_tx.send(Ok::<_, std::io::Error>(tls)).await;
                }
            });
        }
    });
    let service = sigil_proto::sentry::ca_server::CaServer::new(FakeCa {
        authority,
        stranger,
        mode,
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(conn_rx)),
    );
    (addr, files)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_for_another_identity_key_or_ca_are_refused_and_the_old_one_kept() {
    let mode = Arc::new(AtomicU8::new(HONEST));
    let (addr, files) = fake_ca("spiffe://localhost/ns/default/dapr-sentry", mode.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("ca.crt");
    std::fs::write(&anchors, &files.ca_crt).unwrap();
    let source = start_source(addr, "alpha", "public", &anchors);
    let good = ready(&source).await;

    for (m, expect) in [
        (WRONG_ID, "spiffe://public/ns/default/mallory"),
        (WRONG_KEY, "public key"),
        (UNTRUSTED, "trust anchors"),
    ] {
        mode.store(m, Ordering::SeqCst);
        let before = source.status().failures;
        source.renew_now();
        wait_for("a refused renewal", || source.status().failures > before).await;
        let status = source.status();
        let err = status.last_error.clone().unwrap_or_default();
        assert!(err.contains(expect), "mode {m}: {err}");
        assert_eq!(
            source.current().unwrap().serial_hex(),
            good.serial_hex(),
            "a refused certificate replaced the good one"
        );
        assert_eq!(status.serial.as_deref(), Some(good.serial_hex()));
    }

    mode.store(HONEST, Ordering::SeqCst);
    let mut rx = source.subscribe();
    rx.borrow_and_update();
    source.renew_now();
    tokio::time::timeout(LONG, rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(source.current().unwrap().serial_hex(), good.serial_hex());
    source.stop();

    // From the start, a CA that only ever answers for someone else never yields a cert.
    let mode = Arc::new(AtomicU8::new(WRONG_ID));
    let (addr, files) = fake_ca("spiffe://localhost/ns/default/dapr-sentry", mode).await;
    std::fs::write(&anchors, &files.ca_crt).unwrap();
    let source = start_source(addr, "alpha", "public", &anchors);
    wait_for("two refusals", || source.status().failures >= 2).await;
    assert!(source.current().is_none());
    source.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_without_the_sentry_identity_is_not_trusted() {
    let mode = Arc::new(AtomicU8::new(HONEST));
    let (addr, files) = fake_ca("spiffe://localhost/ns/default/not-sentry", mode).await;
    let dir = tempfile::tempdir().unwrap();
    let anchors = dir.path().join("ca.crt");
    std::fs::write(&anchors, &files.ca_crt).unwrap();
    let source = start_source(addr, "alpha", "public", &anchors);
    wait_for("a refused connection", || source.status().failures >= 1).await;
    let err = source.status().last_error.unwrap_or_default();
    assert!(
        err.contains("spiffe://localhost/ns/default/not-sentry")
            && err.contains("expected spiffe://localhost/ns/default/dapr-sentry"),
        "{err}"
    );
    assert!(source.current().is_none());
    source.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigil_request_writes_cert_key_and_anchors() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let server = start_server(&creds, &[]).await;
    let out = dir.path().join("out");
    let args = sigil::cli::request::RequestArgs {
        sentry: server.grpc_addr.to_string(),
        app_id: "orders".into(),
        namespace: "shop".into(),
        trust_domain: "public".into(),
        token_file: None,
        validator: Some(sigil_client::Validator::Insecure),
        trust_anchors: Some(creds.join("ca.crt")),
        out: out.clone(),
        key_type: sigil_pki::KeyType::EcdsaP256,
        control_plane_trust_domain: "localhost".into(),
        control_plane_namespace: "default".into(),
        watch: false,
        timeout: LONG,
        log_level: "warn".into(),
    };
    sigil::cli::request::execute(args).await.unwrap();
    let chain = std::fs::read(out.join("cert.pem")).unwrap();
    let leaf = first_cert_der(&chain);
    assert_eq!(
        peer_spiffe_id(Some(&[CertificateDer::from(leaf)])),
        Some(id("spiffe://public/ns/shop/orders"))
    );
    assert_eq!(
        sigil_pki::pem_bundle::parse_certificates("chain", &chain)
            .unwrap()
            .len(),
        2
    );
    let key = std::fs::read(out.join("key.pem")).unwrap();
    let key = sigil_pki::PrivateKey::from_pem(&key).unwrap();
    assert_eq!(key.key_type(), sigil_pki::KeyType::EcdsaP256);
    let mode = std::fs::metadata(out.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        sigil_pki::pem_bundle::parse_certificates("a", &std::fs::read(out.join("ca.crt")).unwrap())
            .unwrap(),
        sigil_pki::pem_bundle::parse_certificates(
            "b",
            &std::fs::read(creds.join("ca.crt")).unwrap()
        )
        .unwrap()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn jwt_svids_arrive_with_the_certificate_when_the_server_issues_them() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let server = start_server(
        &creds,
        &["--jwt-enabled", "--jwt-signing-algorithm", "ES256"],
    )
    .await;
    let mut config = source_config(
        &server.grpc_addr.to_string(),
        "orders",
        "public",
        &creds.join("ca.crt"),
    );
    config.jwt_audiences = vec!["api://billing".into()];
    let source = SvidSource::start(config).unwrap();
    let svid = ready(&source).await;
    let all = svid.jwt().expect("a token for all audiences");
    assert_eq!(all.split('.').count(), 3);
    let billing = svid
        .jwt_for("api://billing")
        .expect("a token for the extra audience");
    assert_ne!(billing, all, "the per-audience token is its own");
    assert!(svid.jwt_for("api://other").is_none());
    assert!(svid.renew_by() <= svid.not_after());
    server.shutdown().await.unwrap();
}
