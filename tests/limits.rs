//! What an unauthenticated peer can make the listeners hold, over real sockets: streams per
//! connection (advertised), connections, buffered request bytes, time to send headers, and
//! the answer to an oversized message.
//!
//! The raw HTTP/2 client (the `h2` crate over tokio-rustls) does what a well-behaved gRPC
//! client never would: open streams that send part of a message and stall.

mod support;

use support::standalone;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sigil::server::RunningServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::Code;

const SIGN: &str = "/dapr.proto.sentry.v1.CA/SignCertificate";

fn connector(dir: &Path) -> TlsConnector {
    let ca = std::fs::read(standalone::creds(dir).join("ca.crt")).expect("ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("PEM")).expect("anchor");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(cfg))
}

async fn tls(dir: &Path, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector(dir)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

/// An HTTP/2 connection; the task drives it and ends when the server closes it.
async fn h2_client(
    dir: &Path,
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let io = tls(dir, addr).await.expect("TLS");
    let (send, conn) = h2::client::handshake(io).await.expect("h2 handshake");
    (send, tokio::spawn(conn))
}

fn grpc_request(path: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// A gRPC message prefix declaring `len` bytes, followed by `sent` of them.
fn partial_message(len: u32, sent: usize) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend(std::iter::repeat_n(0x0a, sent));
    Bytes::from(v)
}

fn grpc_status(resp: &http::Response<h2::RecvStream>) -> Option<String> {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn start(dir: &Path, extra: &[&str]) -> RunningServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    standalone::start(dir, extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_limit_is_advertised() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &["--max-concurrent-streams", "7"]).await;
    let (send, _conn) = h2_client(dir.path(), server.grpc_addr).await;
    let mut send = send.ready().await.expect("ready");
    let deadline = Instant::now() + Duration::from_secs(3);
    while send.current_max_send_streams() != 7 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        send = send.ready().await.expect("ready");
    }
    assert_eq!(
        send.current_max_send_streams(),
        7,
        "SETTINGS_MAX_CONCURRENT_STREAMS as the client sees it"
    );
    // What a client does beyond the limit is the client's h2 (it queues); the server's part
    // is the advertised setting checked above.
    drop(send);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_resource_exhausted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &[]).await;
    let ca = std::fs::read(standalone::creds(dir.path()).join("ca.crt")).expect("ca");
    let mut client = standalone::client(&server, &ca)
        .await
        .max_encoding_message_size(4 * 1024 * 1024);
    let mut req = standalone::request("orders", "default", "");
    req.certificate_signing_request = vec![b'A'; 1024 * 1024];
    let err = client.sign_certificate(req).await.expect_err("refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("grpc: received message larger than max"),
        "{}",
        err.message()
    );
    // The largest valid request gets through the transport: a 64 KiB CSR (garbage here, so
    // the CSR check answers) with a 16 KiB token.
    let mut req = standalone::request("orders", "default", "");
    req.certificate_signing_request = vec![b'A'; 64 * 1024];
    req.token = "t".repeat(16 * 1024);
    req.jwt_audiences = (0..16).map(|i| format!("{i:0>512}")).collect();
    let err = client.sign_certificate(req).await.expect_err("bad CSR");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_flood_is_bounded_by_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Budget: 16 x 112 KiB = 1.75 MiB; each connection's share 448 KiB.
    let server = start(dir.path(), &["--max-concurrent-requests", "16"]).await;
    let limit = 16 * (96 + 16) * 1024;
    let mut conns = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..3 {
        let (mut send, conn) = h2_client(dir.path(), server.grpc_addr).await;
        for _ in 0..40 {
            send = send.ready().await.expect("ready");
            let (resp, mut body) = send
                .send_request(grpc_request(SIGN), false)
                .expect("stream");
            // 60 KiB declared, 100 bytes sent, then nothing.
            body.send_data(partial_message(60 * 1024, 100), false)
                .expect("data");
            pending.push((resp, body));
        }
        conns.push((send, conn));
    }
    // Each connection's share holds 5 such requests (77 KiB each); the others are refused at
    // once instead of waiting for --request-timeout.
    let mut exhausted = 0;
    let mut stalled = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    for (resp, body) in pending {
        match tokio::time::timeout_at(deadline, resp).await {
            Ok(Ok(r)) => {
                assert_eq!(grpc_status(&r).as_deref(), Some("8"), "{r:?}");
                exhausted += 1;
            }
            Ok(Err(e)) => panic!("stream failed: {e}"),
            Err(_) => stalled.push(body),
        }
    }
    let used = server.metrics.request_buffer_bytes.get();
    assert!(
        stalled.len() <= 3 * 5,
        "{} stalled streams are held, {exhausted} refused",
        stalled.len()
    );
    assert!(exhausted >= 120 - 15, "{exhausted} refused");
    assert!(
        used >= 0 && used as usize <= limit,
        "budget in use {used} of {limit}"
    );
    // Every other caller still gets a certificate.
    let ca = std::fs::read(standalone::creds(dir.path()).join("ca.crt")).expect("ca");
    let (_, csr) = standalone::csr(&rcgen::PKCS_ED25519);
    standalone::client(&server, &ca)
        .await
        .sign_certificate(standalone::request("orders", "default", &csr))
        .await
        .expect("a legitimate request during the flood");
    // The flood ends: every byte is given back.
    drop(stalled);
    drop(conns);
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.metrics.request_buffer_bytes.get() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.metrics.request_buffer_bytes.get(), 0);
    server.shutdown().await.expect("shutdown");
}

/// Reads until the server closes the connection; `None` when it has not after `wait`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, wait: Duration) -> Option<()> {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(wait, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_on_health_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &["--header-timeout", "1s"]).await;
    let metrics = server.metrics_addr.expect("metrics enabled");
    for addr in [server.healthz_addr, metrics] {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let t = Instant::now();
        assert!(
            closed_within(&mut tcp, Duration::from_secs(5))
                .await
                .is_some(),
            "{addr}: a client that never finishes its headers is still connected after 5 s"
        );
        assert!(
            t.elapsed() >= Duration::from_millis(800),
            "closed too early"
        );
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &["--max-connections", "2"]).await;
    let a = tls(dir.path(), server.grpc_addr).await.expect("first");
    let _b = tls(dir.path(), server.grpc_addr).await.expect("second");
    let third = tokio::time::timeout(Duration::from_secs(3), tls(dir.path(), server.grpc_addr))
        .await
        .expect("the third connection is answered at once");
    assert!(third.is_err(), "a third connection was served over the cap");
    // A slot comes back when a connection closes.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match tls(dir.path(), server.grpc_addr).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => panic!("no slot came back: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_grpc_connections_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(
        dir.path(),
        &["--header-timeout", "1s", "--idle-timeout", "1s"],
    )
    .await;
    // TLS, then not even the HTTP/2 preface.
    let mut silent = tls(dir.path(), server.grpc_addr).await.expect("TLS");
    assert!(
        closed_within(&mut silent, Duration::from_secs(5))
            .await
            .is_some(),
        "a connection that never sends a request is still open after 5 s"
    );
    // One request, then silence.
    let (send, conn) = h2_client(dir.path(), server.grpc_addr).await;
    let mut send = send.ready().await.expect("ready");
    let (resp, mut body) = send
        .send_request(grpc_request("/grpc.health.v1.Health/Check"), false)
        .expect("stream");
    body.send_data(partial_message(0, 0), true).expect("data");
    let resp = resp.await.expect("answer");
    assert_eq!(resp.status(), 200);
    let mut recv = resp.into_body();
    while let Some(chunk) = recv.data().await {
        let _ = chunk.expect("body");
    }
    let _ = recv.trailers().await;
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("an idle connection is still open after 5 s")
        .expect("task")
        .ok();
    server.shutdown().await.expect("shutdown");
}
