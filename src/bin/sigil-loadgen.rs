//! Load generator for Sigil (gRPC over TLS, like a sidecar) and, for side-by-side
//! comparisons, for cfssl's HTTP signing API.
//!
//! Every request carries a fresh CSR, generated before the clock starts. Reports
//! requests/s, latency percentiles, errors and — given `--server-pid` — the server's CPU
//! seconds per certificate and peak RSS read from /proc. Request count and wall time are
//! both bounded.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use sigil_proto::sentry::ca_client::CaClient;
use sigil_proto::{SignCertificateRequest, TokenValidator};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Target {
    /// Sigil / Dapr Sentry gRPC API over TLS.
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
    /// TLS server name to check.
    #[arg(long, default_value = "localhost")]
    server_name: String,
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

enum Conn {
    Grpc(CaClient<Channel>),
    Http(hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>),
}

async fn connect(args: &Args, endpoint: &Option<Endpoint>) -> Result<Conn, String> {
    match args.target {
        Target::Grpc => {
            let ch = endpoint
                .as_ref()
                .expect("endpoint for grpc")
                .connect()
                .await
                .map_err(|e| format!("connect: {e}"))?;
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
            let req = SignCertificateRequest {
                id: format!("app{}", i % 1000),
                token: String::new(),
                trust_domain: "public".into(),
                namespace: "default".into(),
                certificate_signing_request: csr_pem.as_bytes().to_vec(),
                token_validator: TokenValidator::Insecure as i32,
                jwt_audiences: vec![],
            };
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
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    eprintln!("generating {} {:?} CSRs...", args.requests, args.key);
    let csrs: Arc<Vec<String>> = Arc::new((0..args.requests).map(|_| csr(args.key)).collect());
    let endpoint = match args.target {
        Target::Grpc => {
            let ca_path = args.ca.clone().expect("--ca is required for --target grpc");
            let ca = std::fs::read(&ca_path).expect("read --ca");
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .domain_name(args.server_name.clone());
            Some(
                Endpoint::from_shared(format!("https://{}", args.addr))
                    .expect("address")
                    .tls_config(tls)
                    .expect("tls")
                    .connect_timeout(Duration::from_secs(5)),
            )
        }
        Target::Cfssl => None,
    };
    let args = Arc::new(args);
    let next = Arc::new(AtomicUsize::new(0));
    let before = args.server_pid.and_then(proc_stats);
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (args, next, csrs, endpoint) =
            (args.clone(), next.clone(), csrs.clone(), endpoint.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = Vec::new();
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
                match one(c, &csrs[i], i, &args.addr).await {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors.push(e);
                        conn = None;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    for w in workers {
        let (l, e) = w.await.expect("worker");
        lat.extend(l);
        errors.extend(e);
    }
    let elapsed = started.elapsed();
    let after = args.server_pid.and_then(proc_stats);
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
    println!("{line}");
    if let Some(e) = errors.first() {
        eprintln!("first error: {e}");
    }
}
