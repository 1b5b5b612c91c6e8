//! What an unauthenticated peer can make the listeners hold, over real sockets: streams per
//! connection (advertised), connections, buffered request bytes, time to send headers, and
//! the answer to an oversized message.
//!
//! The raw HTTP/2 client (the `h2` crate over tokio-rustls) does what a well-behaved gRPC
//! client never would: open streams that send part of a message and stall. What even `h2`
//! will not do (streams reset as fast as they are opened, header blocks the server must
//! refuse, PINGs left unanswered) is written frame by frame ([`http2_frames`]).

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

/// HTTP/2 frames written and read by hand (RFC 9113 section 4), with header blocks of HPACK
/// literals that leave the decoder's table alone (RFC 7541 section 6.2.2).
mod http2_frames {
    use tokio::io::{AsyncRead, AsyncReadExt};

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    /// END_STREAM (DATA, HEADERS) and ACK (SETTINGS, PING) share the bit.
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    #[derive(Debug)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM or GOAWAY.
        pub fn error_code(&self) -> Option<u32> {
            let at = match self.kind {
                RST_STREAM => 0,
                GOAWAY => 4,
                _ => return None,
            };
            let code = self.payload.get(at..at + 4)?;
            Some(u32::from_be_bytes(code.try_into().ok()?))
        }
    }

    /// Appends one frame to `out`.
    pub fn write(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).expect("length");
        assert!(
            len <= 16 * 1024,
            "larger than the default SETTINGS_MAX_FRAME_SIZE"
        );
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// A header block of literal fields without indexing, new names, plain strings.
    pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        for (name, value) in fields {
            block.push(0x00);
            for text in [name, value] {
                hpack_string(&mut block, text.as_bytes());
            }
        }
        block
    }

    /// A string literal: the Huffman bit clear and the length as a 7-bit prefix integer.
    fn hpack_string(out: &mut Vec<u8>, text: &[u8]) {
        let mut len = text.len();
        if len < 0x7f {
            out.push(u8::try_from(len).expect("< 127"));
        } else {
            out.push(0x7f);
            len -= 0x7f;
            while len >= 0x80 {
                out.push(u8::try_from(len & 0x7f).expect("7 bits") | 0x80);
                len >>= 7;
            }
            out.push(u8::try_from(len).expect("< 128"));
        }
        out.extend_from_slice(text);
    }

    /// The next frame; `None` at the end of the connection (or when it fails).
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Option<Frame> {
        let mut head = [0u8; 9];
        r.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
        let mut payload = vec![0; usize::try_from(len).ok()?];
        r.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            payload,
        })
    }
}

use http2_frames::{
    ACK, CANCEL, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, GOAWAY, HEADERS, PING,
    PROTOCOL_ERROR, RST_STREAM, SETTINGS,
};

/// A TLS connection with HTTP/2 set up by hand: the client preface and an empty SETTINGS
/// sent, the server's SETTINGS read and acknowledged.
async fn raw_http2(dir: &Path, addr: SocketAddr) -> TlsStream<TcpStream> {
    let mut io = tls(dir, addr).await.expect("TLS");
    let mut out = http2_frames::PREFACE.to_vec();
    http2_frames::write(&mut out, SETTINGS, 0, 0, &[]);
    io.write_all(&out).await.expect("preface");
    io.flush().await.expect("flush");
    loop {
        let frame = http2_frames::read(&mut io)
            .await
            .expect("the server's SETTINGS");
        if frame.kind == SETTINGS && frame.flags & ACK == 0 {
            break;
        }
    }
    let mut ack = Vec::new();
    http2_frames::write(&mut ack, SETTINGS, ACK, 0, &[]);
    io.write_all(&ack).await.expect("SETTINGS ACK");
    io.flush().await.expect("flush");
    io
}

/// The header block of a SignCertificate call, with `extra` fields after gRPC's own.
fn sign_header_block(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut fields = vec![
        (":method", "POST"),
        (":scheme", "https"),
        (":path", SIGN),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    fields.extend_from_slice(extra);
    http2_frames::header_block(&fields)
}

/// How a connection ended, read frame by frame.
#[derive(Debug, Default)]
struct Ending {
    /// The GOAWAY's error code, when one came.
    goaway: Option<u32>,
    /// Its debug data.
    debug: String,
    /// RST_STREAM(PROTOCOL_ERROR) frames before it.
    protocol_error_resets: usize,
    /// Whether a GOAWAY or the end of the connection came in time.
    in_time: bool,
}

/// Reads frames until a GOAWAY or the end of the connection, for at most `wait`.
async fn read_until_goaway<R: tokio::io::AsyncRead + Unpin>(r: &mut R, wait: Duration) -> Ending {
    read_frames(r, wait, false).await
}

/// Reads frames until a RST_STREAM(PROTOCOL_ERROR), a GOAWAY or the end of the connection,
/// for at most `wait`.
async fn read_until_goaway_or_reset<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    wait: Duration,
) -> Ending {
    read_frames(r, wait, true).await
}

async fn read_frames<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    wait: Duration,
    stop_at_reset: bool,
) -> Ending {
    let mut ending = Ending::default();
    let read = tokio::time::timeout(wait, async {
        while let Some(frame) = http2_frames::read(r).await {
            match frame.kind {
                GOAWAY => {
                    ending.goaway = frame.error_code();
                    ending.debug =
                        String::from_utf8_lossy(frame.payload.get(8..).unwrap_or_default())
                            .into_owned();
                    return;
                }
                RST_STREAM if frame.error_code() == Some(PROTOCOL_ERROR) => {
                    ending.protocol_error_resets += 1;
                    if stop_at_reset {
                        return;
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    ending.in_time = read.is_ok();
    ending
}

/// Writes `streams` streams made by `frames_of` (given the stream id), in batches, until
/// the write fails or `stop` is set; the number of streams written.
async fn open_streams<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    streams: u32,
    stop: &std::sync::atomic::AtomicBool,
    frames_of: impl Fn(&mut Vec<u8>, u32),
) -> u32 {
    // 50 streams of about 170 bytes: one TLS record.
    const BATCH: u32 = 50;
    let mut sent = 0;
    while sent < streams && !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let mut out = Vec::new();
        for n in sent..(sent + BATCH).min(streams) {
            frames_of(&mut out, 2 * n + 1);
        }
        if w.write_all(&out).await.is_err() || w.flush().await.is_err() {
            break;
        }
        sent = (sent + BATCH).min(streams);
        tokio::task::yield_now().await;
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_starts_or_stalls_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), &["--header-timeout", "1s"]).await;
    let start_time = Instant::now();
    let silent = TcpStream::connect(server.grpc_addr).await.expect("connect");
    let mut partial = TcpStream::connect(server.grpc_addr).await.expect("connect");
    // A TLS record header (handshake, version 3.1) without its length: a ClientHello that
    // stops after three bytes.
    partial.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    let close_of = |mut tcp: TcpStream| async move {
        closed_within(&mut tcp, Duration::from_secs(5))
            .await
            .map(|()| start_time.elapsed())
    };
    let (silent, partial) = tokio::join!(close_of(silent), close_of(partial));
    // `None`: still open after 5 s.
    assert!(
        silent.is_some() && partial.is_some(),
        "--header-timeout 1s: no ClientHello closed after {silent:?}, 3 bytes of one after {partial:?}"
    );
    for closed in [silent, partial].into_iter().flatten() {
        assert!(
            closed >= Duration::from_millis(800),
            "closed after {closed:?}, before --header-timeout"
        );
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_streams_get_a_goaway() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No stream ever reaches a handler; a long --header-timeout keeps the listener's own
    // deadline out of it.
    let server = start(dir.path(), &["--header-timeout", "60s"]).await;
    let io = raw_http2(dir.path(), server.grpc_addr).await;
    let (mut rd, mut wr) = tokio::io::split(io);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let block = sign_header_block(&[]);
            let sent = open_streams(&mut wr, 5000, &stop, |out, id| {
                http2_frames::write(out, HEADERS, END_HEADERS, id, &block);
                http2_frames::write(out, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
            })
            .await;
            (sent, wr)
        }
    });
    let ending = read_until_goaway(&mut rd, Duration::from_secs(20)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (sent, _wr) = writer.await.expect("writer");
    assert!(
        ending.in_time,
        "{sent} streams opened and reset, and the connection is still served after 20 s"
    );
    assert_eq!(
        (ending.goaway, ending.debug.as_str()),
        (Some(ENHANCE_YOUR_CALM), "too_many_resets"),
        "{sent} streams opened and reset: {ending:?}"
    );
    // Every other caller is still served.
    let ca = std::fs::read(standalone::creds(dir.path()).join("ca.crt")).expect("ca");
    let (_, csr) = standalone::csr(&rcgen::PKCS_ED25519);
    standalone::client(&server, &ca)
        .await
        .sign_certificate(standalone::request("orders", "default", &csr))
        .await
        .expect("a legitimate request after the flood");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_the_server_must_reset_end_in_a_goaway() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No stream ever reaches a handler; a long --header-timeout keeps the listener's own
    // deadline out of it.
    let server = start(dir.path(), &["--header-timeout", "60s"]).await;
    let mut io = raw_http2(dir.path(), server.grpc_addr).await;
    // END_STREAM on HEADERS that declare a body is malformed (RFC 9113 section 8.1.1): h2
    // answers RST_STREAM(PROTOCOL_ERROR) before the stream is accepted. One stream at a
    // time, each answer read before the next, so every reset the server sends is counted.
    let block = sign_header_block(&[("content-length", "1")]);
    let mut resets = 0;
    let mut ending = Ending::default();
    for n in 0..400 {
        let mut out = Vec::new();
        http2_frames::write(
            &mut out,
            HEADERS,
            END_HEADERS | END_STREAM,
            2 * n + 1,
            &block,
        );
        if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
            break;
        }
        ending = read_until_goaway_or_reset(&mut io, Duration::from_secs(5)).await;
        if ending.protocol_error_resets == 0 {
            break;
        }
        resets += 1;
    }
    assert!(
        ending.in_time,
        "{resets} malformed streams reset, then no answer for 5 s"
    );
    assert_eq!(
        (ending.goaway, ending.debug.as_str()),
        (Some(ENHANCE_YOUR_CALM), "too_many_internal_resets"),
        "after {resets} malformed streams reset: {ending:?}"
    );
    assert_eq!(resets, 128, "streams reset before the GOAWAY");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let interval = Duration::from_secs(2);
    let timeout = Duration::from_secs(1);
    // The stalled request would hold the connection for --request-timeout: far longer.
    let server = start(
        dir.path(),
        &[
            "--keepalive-interval",
            "2s",
            "--keepalive-timeout",
            "1s",
            "--request-timeout",
            "60s",
        ],
    )
    .await;
    let mut io = raw_http2(dir.path(), server.grpc_addr).await;
    // One request in flight, so the connection is not idle: 60 bytes declared, 10 sent.
    let mut out = Vec::new();
    http2_frames::write(&mut out, HEADERS, END_HEADERS, 1, &sign_header_block(&[]));
    http2_frames::write(&mut out, DATA, 0, 1, &partial_message(60, 10));
    // The server reads the client's last frame after this instant: its keepalive clock
    // starts no earlier.
    let quiet_since = Instant::now();
    io.write_all(&out).await.expect("request");
    io.flush().await.expect("flush");
    let mut first_ping = None;
    let closed = tokio::time::timeout(interval + timeout + Duration::from_secs(5), async {
        while let Some(frame) = http2_frames::read(&mut io).await {
            if frame.kind == PING && frame.flags & ACK == 0 && first_ping.is_none() {
                first_ping = Some(quiet_since.elapsed());
            }
        }
        quiet_since.elapsed()
    })
    .await
    .unwrap_or_else(|_| {
        panic!("PINGs unanswered (first at {first_ping:?}), and the connection is open after 8 s")
    });
    let ping = first_ping.expect("the server sent a keepalive PING");
    let slack = Duration::from_millis(100);
    assert!(
        ping + slack >= interval,
        "PING after {ping:?}, before --keepalive-interval"
    );
    assert!(
        closed + slack >= interval + timeout,
        "closed after {closed:?}, before --keepalive-interval + --keepalive-timeout"
    );
    server.shutdown().await.expect("shutdown");
}
