//! Load generator for Sigil and Dapr Sentry (gRPC over TLS, like a sidecar) and, for
//! side-by-side comparisons, for cfssl's HTTP signing API.
//!
//! Every request carries a fresh CSR (empty subject, no attributes, as daprd sends),
//! generated before the clock starts. Reports requests/s, latency percentiles, errors and —
//! given `--server-pid` — the server's CPU seconds per certificate and peak RSS read from
//! /proc. Request count and wall time are both bounded.
//!
//! The gRPC server is accepted as daprd accepts Sentry: by the SPIFFE ID it presents
//! (`--server-id`), chained to the trust anchors (`--ca`), with no host name check and no
//! TLS session resumption (every new connection is a full handshake, as daprd's are).
//! `--probe` waits until the first certificate is signed and prints how long that took.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use sigil_proto::sentry::ca_client::CaClient;
use sigil_proto::{SignCertificateRequest, TokenValidator};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Target {
    /// Sigil / Dapr Sentry gRPC API over TLS (server checked by SPIFFE ID).
    Grpc,
    /// cfssl's `POST /api/v1/cfssl/sign` over plain HTTP.
    Cfssl,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Key {
    Ed25519,
    P256,
}

#[derive(Parser, Debug)]
#[command(about = "Load generator for Sigil and cfssl")]
struct Args {
    /// What to load.
    #[arg(long, value_enum, default_value_t = Target::Grpc)]
    target: Target,
    /// host:port of the server.
    #[arg(long, default_value = "127.0.0.1:50001")]
    addr: String,
    /// Trust anchors for the gRPC server (its ca.crt).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// SPIFFE ID the gRPC server must present (checked against --ca; no host name check).
    #[arg(long, default_value = "spiffe://localhost/ns/default/dapr-sentry")]
    server_id: String,
    /// Number of requests.
    #[arg(short = 'n', long, default_value_t = 2000)]
    requests: usize,
    /// Concurrent workers.
    #[arg(short = 'c', long, default_value_t = 8)]
    concurrency: usize,
    /// Key type of the CSRs.
    #[arg(long, value_enum, default_value_t = Key::Ed25519)]
    key: Key,
    /// Open a new connection (TCP + TLS) for every request, as Dapr sidecars do.
    #[arg(long)]
    new_conn: bool,
    /// Stop after this many seconds even if requests remain.
    #[arg(long, default_value_t = 120)]
    max_seconds: u64,
    /// PID of the server, to report its CPU time and peak RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Label printed with the results.
    #[arg(long, default_value = "")]
    label: String,
    /// Instead of a load run: retry (every 2 ms, --ca re-read each try, as it may not exist
    /// yet) until one certificate is signed, then print the time since --since-ns.
    #[arg(long)]
    probe: bool,
    /// Start of the clock for --probe, in nanoseconds since the Unix epoch (`date +%s%N`).
    #[arg(long)]
    since_ns: Option<u128>,
    /// Print one CSR as generated and exit.
    #[arg(long)]
    print_csr: bool,
    /// Flood: TLS connections that each open `--flood-streams` SignCertificate streams,
    /// every one sending part of a message and stalling; when the server has ended them all,
    /// the connection is replaced by a new one that does the same. 0 disables the flood.
    #[arg(long, default_value_t = 0)]
    flood_connections: usize,
    /// Flood: stalled streams per flood connection.
    #[arg(long, default_value_t = 250)]
    flood_streams: usize,
    /// Flood: message length each stalled stream declares, and how much of it it sends.
    #[arg(long, default_value_t = 4096)]
    flood_declared_bytes: u32,
    /// Flood: bytes of the declared message actually sent.
    #[arg(long, default_value_t = 1024)]
    flood_sent_bytes: usize,
    /// Flood: connections that complete TLS and HTTP/2 and then send nothing (re-opened
    /// when closed).
    #[arg(long, default_value_t = 0)]
    idle_connections: usize,
    /// Flood: connections that send part of a request head and stall (re-opened when
    /// closed): on the health port given by `--healthz-addr`, else half a TLS ClientHello
    /// on the gRPC port.
    #[arg(long, default_value_t = 0)]
    slow_header_connections: usize,
    /// Flood: the health endpoint, for slow-header connections.
    #[arg(long)]
    healthz_addr: Option<String>,
    /// Flood: how long it lasts; the legitimate load starts 2 s in.
    #[arg(long, default_value_t = 30)]
    flood_seconds: u64,
    /// Soak: every Nth request is hostile (bad id, namespace, CSR, validator, or the CA's own
    /// identity) and must be refused with its gRPC code; 0 sends only valid requests.
    #[arg(long, default_value_t = 0)]
    hostile_every: usize,
}

/// The valid request number `i` (insecure validator, one of 1000 app ids).
fn valid_request(i: usize, csr_pem: &str) -> SignCertificateRequest {
    SignCertificateRequest {
        id: format!("app{}", i % 1000),
        token: String::new(),
        trust_domain: "public".into(),
        namespace: "default".into(),
        certificate_signing_request: csr_pem.as_bytes().to_vec(),
        token_validator: TokenValidator::Insecure as i32,
        jwt_audiences: vec![],
    }
}

/// The hostile requests of a soak, each with the code it must get.
fn hostile(i: usize, csr_pem: &str) -> (SignCertificateRequest, tonic::Code, &'static str) {
    let mut req = valid_request(i, csr_pem);
    let kinds = 6;
    let (code, what) = match (i / 7) % kinds {
        0 => {
            req.id = String::new();
            (tonic::Code::PermissionDenied, "empty app id")
        }
        1 => {
            req.id = "a.b".into();
            (tonic::Code::PermissionDenied, "dotted app id")
        }
        2 => {
            req.namespace = String::new();
            (tonic::Code::PermissionDenied, "no namespace")
        }
        3 => {
            req.certificate_signing_request = b"-----BEGIN CERTIFICATE REQUEST-----\ngarbage\n-----END CERTIFICATE REQUEST-----\n".to_vec();
            (tonic::Code::InvalidArgument, "garbage CSR")
        }
        4 => {
            req.id = "dapr-sentry".into();
            (tonic::Code::PermissionDenied, "the CA's own identity")
        }
        _ => {
            req.token_validator = 99;
            (tonic::Code::InvalidArgument, "unknown validator")
        }
    };
    (req, code, what)
}

/// Sends one hostile request; `Ok` when it was refused with the expected code.
async fn one_hostile(conn: &mut Conn, csr_pem: &str, i: usize) -> Result<(), String> {
    let Conn::Grpc(client) = conn else {
        return Err("hostile requests need the gRPC target".into());
    };
    let (req, want, what) = hostile(i, csr_pem);
    match client.sign_certificate(req).await {
        Ok(_) => Err(format!("hostile request ({what}) was issued a certificate")),
        Err(s) if s.code() == want => Ok(()),
        Err(s) => Err(format!(
            "hostile request ({what}): wanted {want:?}, got {s}"
        )),
    }
}

fn csr(key: Key) -> String {
    let alg = match key {
        Key::Ed25519 => &rcgen::PKCS_ED25519,
        Key::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let kp = KeyPair::generate_for(alg).expect("key generation");
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.serialize_request(&kp).expect("csr").pem().expect("pem")
}

/// (user+system CPU seconds, peak RSS KiB, current RSS KiB) of a process.
fn proc_stats(pid: u32) -> Option<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; index 11 and 12 after the comm.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    // Linux reports clock ticks at 100 Hz on every architecture we run on.
    Some((ticks / 100.0, kib("VmHWM:")?, kib("VmRSS:")?))
}

/// Accepts the server only when its leaf chains to the anchors (server-auth usage) and its
/// only URI SAN is the expected SPIFFE ID. Host names are not looked at (daprd's rule).
#[derive(Debug)]
struct SpiffeVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    expected: String,
    algorithms: WebPkiSupportedAlgorithms,
}

fn tls_refusal(msg: String) -> rustls::Error {
    rustls::Error::General(msg)
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| tls_refusal(format!("server certificate: {e}")))?;
        cert.verify_for_usage(
            self.algorithms.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| tls_refusal(format!("server chain: {e}")))?;
        let (_, x509) = X509Certificate::from_der(end_entity)
            .map_err(|e| tls_refusal(format!("server certificate: {e}")))?;
        let san = x509
            .subject_alternative_name()
            .ok()
            .flatten()
            .ok_or_else(|| tls_refusal("server certificate has no SAN".into()))?;
        let uris: Vec<&str> = san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(*u),
                _ => None,
            })
            .collect();
        if uris != [self.expected.as_str()] {
            return Err(tls_refusal(format!(
                "server presented {uris:?}, expected {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn tls_connector(ca_pem: &[u8], expected: &str) -> Result<TlsConnector, String> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("trust anchors: {e}"))?;
    if certs.is_empty() {
        return Err("trust anchors: no certificate".into());
    }
    let anchors = certs
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("trust anchors: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = SpiffeVerifier {
        anchors,
        expected: expected.to_string(),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    // daprd never resumes: every new connection is a full handshake.
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// TCP to the fixed address, then TLS with the SPIFFE verifier; tonic gets an h2 stream.
#[derive(Clone)]
struct Connector {
    address: String,
    tls: TlsConnector,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let (address, tls) = (self.address.clone(), self.tls.clone());
        Box::pin(async move {
            let tcp = TcpStream::connect(&address).await?;
            let _ = tcp.set_nodelay(true);
            // SNI only; the certificate is checked by SPIFFE ID.
            let name = ServerName::try_from("dapr-sentry").expect("constant DNS name");
            Ok(TokioIo::new(tls.connect(name, tcp).await?))
        })
    }
}

enum Conn {
    Grpc(CaClient<Channel>),
    Http(hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>),
}

async fn connect(args: &Args, endpoint: &Option<(Endpoint, Connector)>) -> Result<Conn, String> {
    match args.target {
        Target::Grpc => {
            let (endpoint, connector) = endpoint.as_ref().expect("endpoint for grpc");
            let ch = endpoint
                .connect_with_connector(connector.clone())
                .await
                .map_err(|e| format!("connect: {}", error_chain(&e)))?;
            Ok(Conn::Grpc(CaClient::new(ch)))
        }
        Target::Cfssl => {
            let tcp = tokio::net::TcpStream::connect(&args.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            tcp.set_nodelay(true).ok();
            let (send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("http handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Conn::Http(send))
        }
    }
}

async fn one(conn: &mut Conn, csr_pem: &str, i: usize, addr: &str) -> Result<(), String> {
    match conn {
        Conn::Grpc(client) => {
            let req = valid_request(i, csr_pem);
            let resp = client
                .sign_certificate(req)
                .await
                .map_err(|s| s.to_string())?;
            if resp.get_ref().workload_certificate.is_empty() {
                return Err("empty certificate".into());
            }
            Ok(())
        }
        Conn::Http(send) => {
            let body = serde_json::json!({ "certificate_request": csr_pem }).to_string();
            let req = hyper::Request::post(format!("http://{addr}/api/v1/cfssl/sign"))
                .header("content-type", "application/json")
                .header("host", addr)
                .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            use http_body_util::BodyExt;
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() || !bytes.windows(14).any(|w| w == b"\"success\":true") {
                return Err(format!("cfssl answered {status}"));
            }
            Ok(())
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn grpc_endpoint(args: &Args, ca_pem: &[u8]) -> Result<(Endpoint, Connector), String> {
    let tls = tls_connector(ca_pem, &args.server_id)?;
    // The URI only feeds the HTTP/2 pseudo-headers; the connector decides where to dial.
    let endpoint = Endpoint::from_shared(format!("http://{}", args.addr))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5));
    Ok((
        endpoint,
        Connector {
            address: args.addr.clone(),
            tls,
        },
    ))
}

/// Retries until one certificate is signed; prints the time since `--since-ns`.
async fn probe(args: Args) {
    let csr_pem = csr(args.key);
    let since = args.since_ns.unwrap_or_else(now_ns);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let mut tries = 0u32;
    let mut last = String::new();
    while Instant::now() < deadline {
        tries += 1;
        let attempt = async {
            let conn = match args.target {
                Target::Grpc => {
                    let ca_path = args
                        .ca
                        .as_ref()
                        .ok_or("--ca is required for --target grpc")?;
                    let ca = std::fs::read(ca_path).map_err(|e| format!("read --ca: {e}"))?;
                    connect(&args, &Some(grpc_endpoint(&args, &ca)?)).await?
                }
                Target::Cfssl => connect(&args, &None).await?,
            };
            let mut conn = conn;
            one(&mut conn, &csr_pem, 0, &args.addr).await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(())) => {
                let ms = (now_ns().saturating_sub(since)) as f64 / 1e6;
                println!("{} first_sign_ms={ms:.0} tries={tries}", args.label);
                return;
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = "timeout".into(),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    println!(
        "{} first_sign_ms=never tries={tries} last_error={last:?}",
        args.label
    );
    std::process::exit(1);
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _ = rustls::crypto::ring::default_provider().install_default();
    if args.print_csr {
        print!("{}", csr(args.key));
        return;
    }
    if args.probe {
        rt.block_on(probe(args));
    } else {
        rt.block_on(run(args));
    }
}

async fn run(args: Args) {
    eprintln!("generating {} {:?} CSRs...", args.requests, args.key);
    let csrs: Arc<Vec<String>> = Arc::new((0..args.requests).map(|_| csr(args.key)).collect());
    let endpoint = match args.target {
        Target::Grpc => {
            let ca_path = args.ca.clone().expect("--ca is required for --target grpc");
            let ca = std::fs::read(&ca_path).expect("read --ca");
            Some(grpc_endpoint(&args, &ca).unwrap_or_else(|e| panic!("{e}")))
        }
        Target::Cfssl => None,
    };
    let args = Arc::new(args);
    let flood_started = Instant::now();
    let flood = if args.flood_connections + args.idle_connections + args.slow_header_connections > 0
    {
        let tls = flood::tls_connector(
            args.ca.as_deref().expect("--ca is required"),
            &args.server_id,
        );
        let end = tokio::time::Instant::now() + Duration::from_secs(args.flood_seconds);
        let f = tokio::spawn(flood::run(args.clone(), tls, end));
        // Let the flood build up before the legitimate requests start.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some(f)
    } else {
        None
    };
    let next = Arc::new(AtomicUsize::new(0));
    let before = args.server_pid.and_then(proc_stats);
    let client_before = proc_stats(std::process::id());
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (args, next, csrs, endpoint) =
            (args.clone(), next.clone(), csrs.clone(), endpoint.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = Vec::new();
            let (mut hostile_ok, mut hostile_wrong) = (0usize, Vec::new());
            let mut conn = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= csrs.len() || Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                if conn.is_none() || args.new_conn {
                    match connect(&args, &endpoint).await {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            errors.push(e);
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("connected above");
                if args.hostile_every > 0 && i % args.hostile_every == args.hostile_every - 1 {
                    match one_hostile(c, &csrs[i], i).await {
                        Ok(()) => hostile_ok += 1,
                        Err(e) => hostile_wrong.push(e),
                    }
                    continue;
                }
                match one(c, &csrs[i], i, &args.addr).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors.push(e);
                        conn = None;
                    }
                }
            }
            (lat, errors, hostile_ok, hostile_wrong)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    let (mut hostile_ok, mut hostile_wrong) = (0usize, Vec::new());
    for w in workers {
        let (l, e, ho, hw) = w.await.expect("worker");
        lat.extend(l);
        errors.extend(e);
        hostile_ok += ho;
        hostile_wrong.extend(hw);
    }
    let elapsed = started.elapsed();
    let after = args.server_pid.and_then(proc_stats);
    let client_after = proc_stats(std::process::id());
    lat.sort();
    let ok = lat.len();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut line = format!(
        "{label} target={target:?} key={key:?} c={c} new_conn={nc} ok={ok} errors={err} elapsed_s={el:.2} rps={rps:.0} p50_ms={p50:.2} p90_ms={p90:.2} p99_ms={p99:.2} max_ms={max:.2}",
        label = args.label,
        target = args.target,
        key = args.key,
        c = args.concurrency,
        nc = args.new_conn,
        err = errors.len(),
        el = elapsed.as_secs_f64(),
        rps = ok as f64 / elapsed.as_secs_f64(),
        p50 = ms(percentile(&lat, 0.50)),
        p90 = ms(percentile(&lat, 0.90)),
        p99 = ms(percentile(&lat, 0.99)),
        max = ms(lat.last().copied().unwrap_or_default()),
    );
    if let (Some(b), Some(a)) = (before, after) {
        let cpu = a.0 - b.0;
        line.push_str(&format!(
            " server_cpu_s={cpu:.2} server_cpu_ms_per_cert={per:.3} server_peak_rss_mib={peak:.1} server_rss_mib={rss:.1}",
            per = if ok > 0 { cpu * 1000.0 / ok as f64 } else { 0.0 },
            peak = a.1 as f64 / 1024.0,
            rss = a.2 as f64 / 1024.0,
        ));
    }
    if args.hostile_every > 0 {
        line.push_str(&format!(
            " hostile_refused_as_expected={hostile_ok} hostile_wrong={}",
            hostile_wrong.len()
        ));
        for e in hostile_wrong.iter().take(5) {
            eprintln!("hostile: {e}");
        }
    }
    if let (Some(b), Some(a)) = (client_before, client_after) {
        // The generator's own CPU: when it nears 1000 ms per second of elapsed time on its
        // core, the client, not the server, limits requests/s.
        line.push_str(&format!(
            " client_cpu_ms_per_req={:.3}",
            if ok > 0 {
                (a.0 - b.0) * 1000.0 / ok as f64
            } else {
                0.0
            }
        ));
    }
    if let Some(flood) = flood {
        let stats = flood.await.expect("flood task");
        line.push_str(&format!(
            " flood_s={:.1} flood_streams_opened={} flood_streams_answered={} flood_conns_opened={} flood_conns_refused={} success_rate={:.4}",
            flood_started.elapsed().as_secs_f64(),
            stats.streams_opened,
            stats.streams_answered,
            stats.connections_opened,
            stats.connections_refused,
            ok as f64 / (ok + errors.len()).max(1) as f64,
        ));
        if let Some(pid) = args.server_pid {
            let peak = proc_stats(pid).map(|s| s.1);
            // The flood's connections are closed; give the server a moment to drop them.
            tokio::time::sleep(Duration::from_secs(3)).await;
            if let (Some(peak), Some(after)) = (peak, proc_stats(pid)) {
                line.push_str(&format!(
                    " server_peak_rss_during_flood_mib={:.1} server_rss_after_flood_mib={:.1}",
                    peak as f64 / 1024.0,
                    after.2 as f64 / 1024.0
                ));
            }
        }
    }
    println!("{line}");
    if let Some(e) = errors.first() {
        eprintln!("first error: {e}");
    }
}

/// The hostile side of a flood run: stalled streams, idle connections, slow headers.
mod flood {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use hyper::body::Bytes;
    use rustls_pki_types::ServerName;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    use tokio::time::Instant;
    use tokio_rustls::TlsConnector;

    use super::Args;

    #[derive(Default)]
    pub struct Stats {
        pub streams_opened: usize,
        pub streams_answered: usize,
        pub connections_opened: usize,
        pub connections_refused: usize,
    }

    #[derive(Default)]
    struct Counters {
        streams_opened: AtomicUsize,
        streams_answered: AtomicUsize,
        connections_opened: AtomicUsize,
        connections_refused: AtomicUsize,
    }

    /// The same server check as the load (the SPIFFE ID against the anchors), with h2 ALPN.
    pub fn tls_connector(ca: &std::path::Path, server_id: &str) -> TlsConnector {
        let pem = std::fs::read(ca).expect("read --ca");
        super::tls_connector(&pem, server_id).expect("trust anchors")
    }

    async fn h2_connect(args: &Args, tls: &TlsConnector) -> Option<h2::client::SendRequest<Bytes>> {
        let tcp = TcpStream::connect(&args.addr).await.ok()?;
        let name = ServerName::try_from("dapr-sentry").ok()?;
        let io = tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp))
            .await
            .ok()?
            .ok()?;
        let (send, conn) = h2::client::handshake(io).await.ok()?;
        tokio::spawn(conn);
        Some(send)
    }

    fn stalled_request(args: &Args) -> http::Request<()> {
        http::Request::builder()
            .method("POST")
            .uri(format!(
                "https://{}/dapr.proto.sentry.v1.CA/SignCertificate",
                args.addr
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("static request")
    }

    /// One stalled stream: open it, send part of a message, wait until the server ends it
    /// or the flood does.
    async fn stalled_stream(
        args: Arc<Args>,
        send: h2::client::SendRequest<Bytes>,
        counters: Arc<Counters>,
        end: Instant,
    ) {
        let mut partial = vec![0u8];
        partial.extend_from_slice(&args.flood_declared_bytes.to_be_bytes());
        partial.extend(std::iter::repeat_n(0x0a, args.flood_sent_bytes));
        let Ok(Ok(mut ready)) = tokio::time::timeout_at(end, send.ready()).await else {
            return;
        };
        let Ok((resp, mut body)) = ready.send_request(stalled_request(&args), false) else {
            return;
        };
        if body.send_data(Bytes::from(partial), false).is_err() {
            return;
        }
        counters.streams_opened.fetch_add(1, Ordering::Relaxed);
        if tokio::time::timeout_at(end, resp).await.is_ok() {
            counters.streams_answered.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn stalled_connection(
        args: Arc<Args>,
        tls: TlsConnector,
        counters: Arc<Counters>,
        end: Instant,
    ) {
        while Instant::now() < end {
            let Some(send) = h2_connect(&args, &tls).await else {
                counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            counters.connections_opened.fetch_add(1, Ordering::Relaxed);
            let streams: Vec<_> = (0..args.flood_streams)
                .map(|_| {
                    tokio::spawn(stalled_stream(
                        args.clone(),
                        send.clone(),
                        counters.clone(),
                        end,
                    ))
                })
                .collect();
            for s in streams {
                let _ = s.await;
            }
            // The next wave on a new connection, at a bounded rate.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// TLS + HTTP/2, then nothing; reconnect when closed.
    async fn idle_connection(
        args: Arc<Args>,
        tls: TlsConnector,
        counters: Arc<Counters>,
        end: Instant,
    ) {
        while Instant::now() < end {
            match h2_connect(&args, &tls).await {
                Some(send) => {
                    counters.connections_opened.fetch_add(1, Ordering::Relaxed);
                    // Ready fails once the connection is gone.
                    let closed = async {
                        let mut s = send;
                        loop {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            match s.ready().await {
                                Ok(again) => s = again,
                                Err(_) => return,
                            }
                        }
                    };
                    let _ = tokio::time::timeout_at(end, closed).await;
                }
                None => {
                    counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Part of a request head (HTTP on the health port, else a TLS record header on the
    /// gRPC port), then nothing; reconnect when closed.
    async fn slow_header_connection(args: Arc<Args>, counters: Arc<Counters>, end: Instant) {
        let (addr, partial): (&str, &[u8]) = match &args.healthz_addr {
            Some(h) => (
                h.as_str(),
                &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "[..],
            ),
            None => (
                args.addr.as_str(),
                &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..],
            ),
        };
        while Instant::now() < end {
            let Ok(mut tcp) = TcpStream::connect(addr).await else {
                counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            counters.connections_opened.fetch_add(1, Ordering::Relaxed);
            if tcp.write_all(partial).await.is_err() {
                continue;
            }
            let mut buf = [0u8; 256];
            let wait = async {
                use tokio::io::AsyncReadExt;
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout_at(end, wait).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn run(args: Arc<Args>, tls: TlsConnector, end: Instant) -> Stats {
        let counters = Arc::new(Counters::default());
        let mut tasks = Vec::new();
        for _ in 0..args.flood_connections {
            tasks.push(tokio::spawn(stalled_connection(
                args.clone(),
                tls.clone(),
                counters.clone(),
                end,
            )));
        }
        for _ in 0..args.idle_connections {
            tasks.push(tokio::spawn(idle_connection(
                args.clone(),
                tls.clone(),
                counters.clone(),
                end,
            )));
        }
        for _ in 0..args.slow_header_connections {
            tasks.push(tokio::spawn(slow_header_connection(
                args.clone(),
                counters.clone(),
                end,
            )));
        }
        for t in tasks {
            let _ = t.await;
        }
        Stats {
            streams_opened: counters.streams_opened.load(Ordering::Relaxed),
            streams_answered: counters.streams_answered.load(Ordering::Relaxed),
            connections_opened: counters.connections_opened.load(Ordering::Relaxed),
            connections_refused: counters.connections_refused.load(Ordering::Relaxed),
        }
    }
}
