//! The `sigil ca` commands and `sigil serve`'s start-up checks, through the built binary.
//!
//! openssl is the independent judge of what `ca init` and `ca issue` produce. Hostile
//! credential directories (truncated key, key of another certificate, expired issuer,
//! issuer that is not a CA, a loop in the chain) must make `sigil serve` refuse to start
//! with a message naming the problem, without touching the files, and make `sigil ca import`
//! write nothing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

const SIGIL: &str = env!("CARGO_BIN_EXE_sigil");

fn sigil(args: &[&str]) -> Output {
    Command::new(SIGIL)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("sigil runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (.ci/run installs it)")
}

fn openssl_verify(args: &[&str]) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = openssl(&all);
    assert!(
        out.status.success() && text(&out).contains(": OK"),
        "openssl verify {args:?} failed: {}",
        text(&out)
    );
}

fn init(dir: &Path, key_type: &str) {
    let out = sigil(&[
        "ca",
        "init",
        "--out",
        path_str(dir),
        "--key-type",
        key_type,
        "--trust-domain",
        "public",
    ]);
    assert!(out.status.success(), "ca init: {}", text(&out));
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            files.insert(e.path(), std::fs::read(e.path()).unwrap_or_default());
        }
    }
    files
}

#[test]
fn init_output_verifies_with_openssl_for_every_key_type() {
    for kt in ["ed25519", "p256", "p384"] {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), kt);
        let ca = dir.path().join("ca.crt");
        let issuer = dir.path().join("issuer.crt");
        openssl_verify(&["-CAfile", path_str(&ca), path_str(&issuer)]);
        let mode = std::fs::metadata(dir.path().join("issuer.key"))
            .expect("issuer.key exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "issuer.key mode {mode:o} for {kt}");
        // OpenSSL can load the key, and it is the issuer certificate's.
        let key = dir.path().join("issuer.key");
        let from_key = openssl(&["pkey", "-in", path_str(&key), "-pubout"]);
        assert!(
            from_key.status.success(),
            "openssl cannot read the {kt} issuer.key: {}",
            String::from_utf8_lossy(&from_key.stderr)
        );
        let from_cert = openssl(&["x509", "-in", path_str(&issuer), "-noout", "-pubkey"]);
        assert_eq!(from_key.stdout, from_cert.stdout, "{kt}");
    }
}

#[test]
fn issue_output_verifies_with_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    init(dir.path(), "p256");
    let key = dir.path().join("leaf.key");
    let csr = dir.path().join("leaf.csr");
    let out = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ed25519",
        "-nodes",
        "-subj",
        "/",
        "-keyout",
        path_str(&key),
        "-out",
        path_str(&csr),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let leaf = dir.path().join("leaf.pem");
    let out = sigil(&[
        "ca",
        "issue",
        "--dir",
        path_str(dir.path()),
        "--csr",
        path_str(&csr),
        "--spiffe-id",
        "spiffe://public/ns/default/orders",
        "--out",
        path_str(&leaf),
    ]);
    assert!(out.status.success(), "ca issue: {}", text(&out));
    openssl_verify(&[
        "-CAfile",
        path_str(&dir.path().join("ca.crt")),
        "-untrusted",
        path_str(&dir.path().join("issuer.crt")),
        path_str(&leaf),
    ]);
    let out = openssl(&[
        "x509",
        "-in",
        path_str(&leaf),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(
        text(&out).contains("URI:spiffe://public/ns/default/orders"),
        "{}",
        text(&out)
    );
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    init(dir.path(), "ed25519");
    let before = snapshot(dir.path());
    let out = sigil(&["ca", "init", "--out", path_str(dir.path())]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refusing to overwrite"),
        "{}",
        text(&out)
    );
    assert_eq!(
        snapshot(dir.path()),
        before,
        "files changed without --force"
    );
    let out = sigil(&["ca", "init", "--out", path_str(dir.path()), "--force"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = snapshot(dir.path());
    assert_ne!(
        after[&dir.path().join("issuer.key")],
        before[&dir.path().join("issuer.key")],
        "--force did not replace the key"
    );
}

/// Hand-made CA material for the cases `sigil ca init` would never produce.
struct Crafted {
    ca_crt: String,
    issuer_crt: String,
    issuer_key: String,
}

fn name(org: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn
}

fn ca_params(org: &str, nb: OffsetDateTime, na: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = name(org);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = nb;
    p.not_after = na;
    p
}

enum Flaw {
    ExpiredIssuer,
    IssuerNotCa,
    LoopInChain,
}

fn craft(flaw: Flaw) -> Crafted {
    let now = OffsetDateTime::now_utc();
    let year = time::Duration::days(365);
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let root_key = KeyPair::generate_for(alg).expect("key");
    let root_params = ca_params("public", now - year, now + year);
    let root = root_params.self_signed(&root_key).expect("root");
    let root_issuer = rcgen::Issuer::new(root_params, &root_key);

    let issuer_key = KeyPair::generate_for(alg).expect("key");
    let mut ip = ca_params(
        "spiffe://public/ns/default/dapr-sentry",
        now - year,
        now + year,
    );
    match flaw {
        Flaw::ExpiredIssuer => ip.not_after = now - time::Duration::days(1),
        Flaw::IssuerNotCa => {
            ip.is_ca = IsCa::ExplicitNoCa;
            ip.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
        Flaw::LoopInChain => {}
    }
    let issuer_crt = match flaw {
        Flaw::LoopInChain => {
            // root -> intermediate -> issuer, and issuer.crt lists issuer, intermediate,
            // issuer: a chain that comes back on itself.
            let inter_key = KeyPair::generate_for(alg).expect("key");
            let inter_params = ca_params("intermediate", now - year, now + year);
            let inter = inter_params
                .signed_by(&inter_key, &root_issuer)
                .expect("intermediate");
            let inter_issuer = rcgen::Issuer::new(inter_params, &inter_key);
            let issuer = ip.signed_by(&issuer_key, &inter_issuer).expect("issuer");
            format!("{}{}{}", issuer.pem(), inter.pem(), issuer.pem())
        }
        _ => ip
            .signed_by(&issuer_key, &root_issuer)
            .expect("issuer")
            .pem(),
    };
    Crafted {
        ca_crt: root.pem(),
        issuer_crt,
        issuer_key: issuer_key.serialize_pem(),
    }
}

fn write_dir(dir: &Path, c: &Crafted) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join("ca.crt"), &c.ca_crt).expect("write");
    std::fs::write(dir.join("issuer.crt"), &c.issuer_crt).expect("write");
    std::fs::write(dir.join("issuer.key"), &c.issuer_key).expect("write");
    std::fs::set_permissions(
        dir.join("issuer.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
}

/// Each hostile credentials directory, with the words the refusal must contain.
fn hostile_dirs(root: &Path) -> Vec<(&'static str, PathBuf, &'static str)> {
    let good = root.join("good");
    init(&good, "ed25519");
    let other = root.join("other");
    init(&other, "ed25519");
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).expect("read");
    let from_good = |key: String| Crafted {
        ca_crt: read(&good, "ca.crt"),
        issuer_crt: read(&good, "issuer.crt"),
        issuer_key: key,
    };
    let key = read(&good, "issuer.key");
    let cases = vec![
        (
            "truncated key",
            from_good(key[..key.len() / 2].to_string()),
            "private key could not be read",
        ),
        (
            "truncated key (valid PEM, cut DER)",
            from_good({
                let der = ::pem::parse(&key).expect("key pem").into_contents();
                ::pem::encode(&::pem::Pem::new(
                    "PRIVATE KEY",
                    der[..der.len() - 8].to_vec(),
                ))
            }),
            "private key could not be read",
        ),
        (
            "key for another certificate",
            from_good(read(&other, "issuer.key")),
            "issuer key does not match issuer certificate",
        ),
        ("expired issuer", craft(Flaw::ExpiredIssuer), "expired at"),
        (
            "issuer not a CA",
            craft(Flaw::IssuerNotCa),
            "cannot act as a CA",
        ),
        (
            "loop in chain",
            craft(Flaw::LoopInChain),
            "appears twice (a loop)",
        ),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(i, (label, crafted, words))| {
            let dir = root.join(format!("hostile-{i}"));
            write_dir(&dir, &crafted);
            (label, dir, words)
        })
        .collect()
}

/// Runs `sigil serve` on the directory; it must exit by itself (it never gets to listen).
fn serve_refuses(dir: &Path) -> Output {
    let mut child = Command::new(SIGIL)
        .args([
            "serve",
            "--issuer-credentials",
            path_str(dir),
            "--config",
            "/nonexistent/sigil-test-config.yaml",
            "--port",
            "0",
            "--healthz-port",
            "0",
            "--metrics-port",
            "0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sigil serve starts");
    // A guard, not a timing assertion: a server that did start would otherwise run forever.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "sigil serve started on hostile credentials in {}: {}",
                dir.display(),
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn hostile_credentials_are_refused_by_serve_and_import() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for (label, dir, words) in hostile_dirs(root.path()) {
        let before = snapshot(&dir);
        let out = serve_refuses(&dir);
        let said = text(&out);
        let serve_said = said.trim().lines().last().unwrap_or_default().to_string();
        if out.status.success() || !said.contains(words) {
            failures.push(format!(
                "serve, {label}: exit {:?}, want a refusal containing {words:?}: {said}",
                out.status.code()
            ));
        }
        if snapshot(&dir) != before {
            failures.push(format!("serve, {label}: the credential files were changed"));
        }

        let dest = root.path().join(format!(
            "import-{}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        ));
        let out = sigil(&[
            "ca",
            "import",
            "--ca",
            path_str(&dir.join("ca.crt")),
            "--issuer-cert",
            path_str(&dir.join("issuer.crt")),
            "--issuer-key",
            path_str(&dir.join("issuer.key")),
            "--out",
            path_str(&dest),
        ]);
        let said = text(&out);
        if out.status.success() || !said.contains(words) {
            failures.push(format!(
                "import, {label}: exit {:?}, want a refusal containing {words:?}: {said}",
                out.status.code()
            ));
        }
        if !snapshot(&dest).is_empty() {
            failures.push(format!(
                "import, {label}: wrote files into {}",
                dest.display()
            ));
        }
        println!("{label}\n  serve:  {serve_said}\n  import: {}", said.trim());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn import_accepts_good_material() {
    let root = tempfile::tempdir().expect("tempdir");
    let good = root.path().join("good");
    init(&good, "p384");
    let dest = root.path().join("imported");
    let out = sigil(&[
        "ca",
        "import",
        "--ca",
        path_str(&good.join("ca.crt")),
        "--issuer-cert",
        path_str(&good.join("issuer.crt")),
        "--issuer-key",
        path_str(&good.join("issuer.key")),
        "--out",
        path_str(&dest),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(dest.join("issuer.crt")).expect("written"),
        std::fs::read(good.join("issuer.crt")).expect("read")
    );
}

#[test]
fn inspect_exit_codes() {
    let root = tempfile::tempdir().expect("tempdir");
    let good = root.path().join("good");
    init(&good, "ed25519");
    let out = sigil(&["ca", "inspect", path_str(&good)]);
    assert_eq!(out.status.code(), Some(0), "healthy: {}", text(&out));
    assert!(text(&out).contains("chain: OK"), "{}", text(&out));

    let expired = root.path().join("expired");
    write_dir(&expired, &craft(Flaw::ExpiredIssuer));
    let out = sigil(&["ca", "inspect", path_str(&expired)]);
    assert_eq!(out.status.code(), Some(1), "expired: {}", text(&out));
    assert!(text(&out).contains("expired at"), "{}", text(&out));

    let broken = root.path().join("broken");
    let other = root.path().join("other");
    init(&other, "ed25519");
    std::fs::create_dir_all(&broken).expect("mkdir");
    for f in ["ca.crt", "issuer.crt"] {
        std::fs::copy(good.join(f), broken.join(f)).expect("copy");
    }
    std::fs::copy(other.join("issuer.key"), broken.join("issuer.key")).expect("copy");
    let out = sigil(&["ca", "inspect", "--json", path_str(&broken)]);
    assert_eq!(out.status.code(), Some(1), "broken: {}", text(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
    assert_eq!(json["healthy"], serde_json::Value::Bool(false));
}
