//! `sigil ca rotate` and `sigil ca bundle`, through the built binary, checked with openssl.

use std::path::Path;
use std::process::Command;

fn sigil(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("sigil runs")
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl_verify(cwd: &Path, ca: &str, untrusted: Option<&str>, cert: &str) -> bool {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(cwd).args(["verify", "-CAfile", ca]);
    if let Some(u) = untrusted {
        cmd.args(["-untrusted", u]);
    }
    cmd.arg(cert)
        .output()
        .expect("openssl runs")
        .status
        .success()
}

#[test]
fn root_rotation_end_to_end_with_openssl() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    ok(sigil(
        &[
            "ca",
            "init",
            "--out",
            "old",
            "--root-key-out",
            "old-root.key",
        ],
        p,
    ));
    ok(sigil(
        &[
            "ca",
            "init",
            "--out",
            "new",
            "--root-key-out",
            "new-root.key",
        ],
        p,
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p.join("old-root.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::create_dir(p.join("live")).unwrap();
    for f in ["ca.crt", "issuer.crt", "issuer.key"] {
        std::fs::copy(p.join("old").join(f), p.join("live").join(f)).unwrap();
    }
    std::fs::write(
        p.join("csr.pem"),
        Command::new("sh")
            .arg("-c")
            .arg("openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null -subj / 2>/dev/null")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();

    // Step 2: trust both roots.
    let out = ok(sigil(
        &[
            "ca",
            "bundle",
            "add",
            "--dir",
            "live",
            "--root",
            "new/ca.crt",
        ],
        p,
    ));
    assert!(out.contains("2 root(s)"), "{out}");
    // A leaf from the old issuer verifies against the two-root bundle.
    ok(sigil(
        &[
            "ca",
            "issue",
            "--dir",
            "live",
            "--csr",
            "csr.pem",
            "--spiffe-id",
            "spiffe://localhost/ns/a/b",
            "--out",
            "leaf-old.pem",
        ],
        p,
    ));
    assert!(openssl_verify(
        p,
        "live/ca.crt",
        Some("live/issuer.crt"),
        "leaf-old.pem"
    ));

    // Step 3: switch to the new issuer.
    ok(sigil(
        &[
            "ca",
            "import",
            "--ca",
            "live/ca.crt",
            "--issuer-cert",
            "new/issuer.crt",
            "--issuer-key",
            "new/issuer.key",
            "--out",
            "live",
            "--force",
        ],
        p,
    ));
    ok(sigil(
        &[
            "ca",
            "issue",
            "--dir",
            "live",
            "--csr",
            "csr.pem",
            "--spiffe-id",
            "spiffe://localhost/ns/a/b",
            "--out",
            "leaf-new.pem",
        ],
        p,
    ));
    assert!(openssl_verify(
        p,
        "live/ca.crt",
        Some("live/issuer.crt"),
        "leaf-new.pem"
    ));
    assert!(
        !openssl_verify(p, "old/ca.crt", Some("live/issuer.crt"), "leaf-new.pem"),
        "new leaf must not chain to the old root alone"
    );

    // The new root cannot be removed while the issuer chains to it; the old one can.
    let refused = sigil(
        &[
            "ca",
            "bundle",
            "remove",
            "--dir",
            "live",
            "--root",
            "new/ca.crt",
        ],
        p,
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not lead to any trust anchor"));
    let out = ok(sigil(
        &[
            "ca",
            "bundle",
            "remove",
            "--dir",
            "live",
            "--root",
            "old/ca.crt",
        ],
        p,
    ));
    assert!(out.contains("1 root(s)"), "{out}");
    assert_eq!(
        std::fs::read(p.join("live/ca.crt")).unwrap(),
        std::fs::read(p.join("new/ca.crt")).unwrap()
    );

    // Issuer rotation under the kept root.
    let before = std::fs::read(p.join("live/issuer.crt")).unwrap();
    ok(sigil(
        &[
            "ca",
            "rotate",
            "--dir",
            "live",
            "--root-cert",
            "new/ca.crt",
            "--root-key",
            "new-root.key",
        ],
        p,
    ));
    assert_ne!(std::fs::read(p.join("live/issuer.crt")).unwrap(), before);
    assert!(openssl_verify(p, "live/ca.crt", None, "live/issuer.crt"));
    let mode = std::fs::metadata(p.join("live/issuer.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Rotation with the wrong root key writes nothing.
    let before = std::fs::read(p.join("live/issuer.crt")).unwrap();
    let refused = sigil(
        &[
            "ca",
            "rotate",
            "--dir",
            "live",
            "--root-cert",
            "new/ca.crt",
            "--root-key",
            "old-root.key",
        ],
        p,
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not match"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(std::fs::read(p.join("live/issuer.crt")).unwrap(), before);
}
