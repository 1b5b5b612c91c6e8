//! `sigil request` as a user runs it: the real binary against a real server on loopback.
//! The files it writes are checked with OpenSSL (chain to the anchors, key matches the
//! certificate) and for their modes; `--watch` must rewrite them after every renewal and
//! exit cleanly on SIGTERM.

mod support;

use support::standalone;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SIGIL: &str = env!("CARGO_BIN_EXE_sigil");

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (.ci/run installs it)")
}

/// The files in `out` form a valid set: the chain verifies against ca.crt, the key is the
/// certificate's, the key file is private. Returns the leaf's serial as OpenSSL prints it.
fn check_files(out: &Path) -> String {
    let (cert, key, ca) = (
        out.join("cert.pem"),
        out.join("key.pem"),
        out.join("ca.crt"),
    );
    let p = |p: &Path| p.display().to_string();
    // cert.pem holds leaf then issuer; the issuer is passed as untrusted intermediate.
    let verify = openssl(&[
        "verify",
        "-CAfile",
        &p(&ca),
        "-untrusted",
        &p(&cert),
        &p(&cert),
    ]);
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let from_cert = openssl(&["x509", "-in", &p(&cert), "-noout", "-pubkey"]);
    let from_key = openssl(&["pkey", "-in", &p(&key), "-pubout"]);
    assert!(from_cert.status.success() && from_key.status.success());
    assert_eq!(
        from_cert.stdout, from_key.stdout,
        "key.pem is cert.pem's key"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key.pem mode");
    let san = openssl(&["x509", "-in", &p(&cert), "-noout", "-ext", "subjectAltName"]);
    assert!(
        String::from_utf8_lossy(&san.stdout).contains("URI:spiffe://public/ns/shop/orders"),
        "{}",
        String::from_utf8_lossy(&san.stdout)
    );
    let serial = openssl(&["x509", "-in", &p(&cert), "-noout", "-serial"]);
    String::from_utf8(serial.stdout).unwrap().trim().to_string()
}

fn request_args(addr: &str, anchors: &str, out: &str) -> Vec<String> {
    [
        "request",
        "--sentry",
        addr,
        "--app-id",
        "orders",
        "--namespace",
        "shop",
        "--trust-anchors",
        anchors,
        "--out",
        out,
        "--timeout",
        "20s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_writes_a_verifiable_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = standalone::start(dir.path(), &[]).await;
    let addr = server.grpc_addr.to_string();
    let anchors = standalone::creds(dir.path())
        .join("ca.crt")
        .display()
        .to_string();
    let out = dir.path().join("out").display().to_string();
    let args = request_args(&addr, &anchors, &out);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(SIGIL)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("spiffe://public/ns/shop/orders"));
    check_files(Path::new(&out));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_a_reachable_server_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A CA's anchors, but nothing listens on the address.
    let server = standalone::start(dir.path(), &[]).await;
    let anchors = standalone::creds(dir.path())
        .join("ca.crt")
        .display()
        .to_string();
    server.shutdown().await.unwrap();
    let out = dir.path().join("out").display().to_string();
    let mut args = request_args("127.0.0.1:9", &anchors, &out);
    let n = args.len();
    args[n - 1] = "2s".into();
    let output = Command::new(SIGIL)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("no certificate within"), "{err}");
    assert!(!Path::new(&out).join("key.pem").exists(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_watch_rewrites_the_files_after_each_renewal_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // 4 s certificates: renewed at about half their life.
    let server = standalone::start(dir.path(), &["--workload-cert-ttl", "4s"]).await;
    let addr = server.grpc_addr.to_string();
    let anchors = standalone::creds(dir.path())
        .join("ca.crt")
        .display()
        .to_string();
    let out_dir = dir.path().join("out");
    let out = out_dir.display().to_string();
    let mut args = request_args(&addr, &anchors, &out);
    args.push("--watch".into());
    let mut child = Command::new(SIGIL)
        .args(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // stderr is read as it comes: a renewal's files can be on disk before its "wrote" line
    // is, so SIGTERM waits for both, not for the files alone.
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let wrote = || log.lock().unwrap().matches("wrote ").count();

    // Collect distinct serials as the files change; each set must be complete and valid
    // whenever it is read.
    let mut serials: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (serials.len() < 3 || wrote() < 3) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(150)).await;
        if !out_dir.join("cert.pem").exists() {
            continue;
        }
        let serial = check_serial_settled(&out_dir);
        if serials.last() != Some(&serial) {
            serials.push(serial);
        }
    }
    assert!(
        serials.len() >= 3,
        "expected the first certificate and two renewals, saw {serials:?}"
    );
    assert!(wrote() >= 3, "{}", log.lock().unwrap());

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if started.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let status = status.expect("sigil request --watch exits after SIGTERM");
    reader.join().unwrap();
    let stderr = log.lock().unwrap().clone();
    assert!(status.success(), "exit status {status:?}: {stderr}");
    server.shutdown().await.unwrap();
}

/// `check_files`, retried once: the three files are replaced one after the other, so a read
/// can fall between the key's and the certificate's rename.
fn check_serial_settled(out: &Path) -> String {
    // The files change as one: read them through the version directory `..data` names at
    // one moment. A pair that disagrees fails the test; only a version removed while being
    // read (a renewal in between) is read again.
    for _ in 0..5 {
        let version = out.join(std::fs::read_link(out.join("..data")).expect("..data link"));
        match std::panic::catch_unwind(|| check_files(&version)) {
            Ok(s) => return s,
            Err(_) if !version.exists() => continue,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    panic!("the files kept changing while being read");
}
