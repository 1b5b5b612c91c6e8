//! Hostile signing requests against a real standalone server over real TLS.
//!
//! Each case sends one `SignCertificateRequest` and states the exact gRPC code, a fragment
//! of the message, and whether a certificate may be issued. "Not issued" is checked on the
//! server's own `dapr_sentry_cert_sign_success_total` counter, not only on the answer. The
//! cases that a lenient CA would get wrong by copying from the CSR (CA:TRUE, extra SANs,
//! extra extensions) are issued, and the leaf is checked to carry only what Sigil decides.
//!
//! Dapr's codes: the common request checks run inside the validator and are answered with
//! PERMISSION_DENIED ("invalid request: ..."); CSR problems and validator selection with
//! INVALID_ARGUMENT.
//!
//! Needs `openssl` on PATH (RSA-1024 and curves that ring cannot make).

mod support;

use std::process::Command;

use sigil::server::RunningServer;
use sigil_proto::sentry::ca_client::CaClient;
use sigil_proto::SignCertificateRequest;
use tonic::transport::Channel;
use tonic::Code;
use x509_parser::prelude::*;

async fn start_server(dir: &std::path::Path) -> RunningServer {
    support::start(support::serve_args(&[
        "--issuer-credentials",
        dir.to_str().expect("utf-8 temp path"),
        "--config",
        "/nonexistent/sigil-test-config.yaml",
        "--port",
        "0",
        "--healthz-port",
        "0",
        "--metrics-port",
        "0",
    ]))
    .await
    .expect("server starts")
}

async fn client(server: &RunningServer, ca_pem: &[u8]) -> CaClient<Channel> {
    // Large enough to send the 1 MiB case: the server, not the client, must refuse it.
    CaClient::new(support::standalone::channel(server, ca_pem).await)
        .max_encoding_message_size(4 * 1024 * 1024)
}

fn openssl(script: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ed25519_csr_pem() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .serialize_request(&key)
        .expect("csr")
        .pem()
        .expect("pem")
}

/// A CSR whose body names one key and whose signature comes from another.
fn csr_signed_by_another_key() -> Vec<u8> {
    let der = |s: String| ::pem::parse(s).expect("pem").into_contents();
    let a = der(ed25519_csr_pem());
    let b = der(ed25519_csr_pem());
    // An Ed25519 signature is the last 64 bytes of the DER (inside the BIT STRING).
    let mut spliced = a.clone();
    spliced[a.len() - 64..].copy_from_slice(&b[b.len() - 64..]);
    ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", spliced)).into_bytes()
}

/// A P-256 CSR made by openssl with the given `-addext` arguments.
fn greedy_csr(addext: &[&str]) -> Vec<u8> {
    let exts: String = addext.iter().map(|e| format!(" -addext '{e}'")).collect();
    let csr = openssl(&format!(
        "openssl ecparam -name prime256v1 -genkey -noout | openssl req -new -key /dev/stdin -subj '/CN=greedy/O=evil'{exts}"
    ));
    // Make sure the request really asks for what the case claims.
    let der = ::pem::parse(&csr).expect("pem").into_contents();
    let (_, req) = X509CertificationRequest::from_der(&der).expect("csr parses");
    let n = req
        .requested_extensions()
        .map(|e| e.count())
        .unwrap_or_default();
    assert_eq!(
        n,
        addext.len(),
        "openssl did not put every extension in the CSR"
    );
    csr
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Refused(Code, &'static str),
    /// Issued; the leaf must be exactly Sigil's SVID shape for this SPIFFE ID.
    Issued(&'static str),
}

struct Case {
    name: &'static str,
    req: SignCertificateRequest,
    expect: Expect,
}

fn request(id: &str, ns: &str, td: &str, csr: Vec<u8>) -> SignCertificateRequest {
    SignCertificateRequest {
        id: id.into(),
        token: String::new(),
        trust_domain: td.into(),
        namespace: ns.into(),
        certificate_signing_request: csr,
        token_validator: 0,
        jwt_audiences: Vec::new(),
    }
}

fn cases() -> Vec<Case> {
    let good = ed25519_csr_pem().into_bytes();
    let ok = |csr: Vec<u8>| request("orders", "default", "public", csr);
    let with_id = |id: &str| request(id, "default", "public", good.clone());
    let with_validator = |v: i32| {
        let mut r = ok(good.clone());
        r.token_validator = v;
        r
    };
    let rsa1024 =
        openssl("openssl req -new -newkey rsa:1024 -nodes -subj / -keyout /dev/null 2>/dev/null");
    let curve = |name: &str| {
        openssl(&format!(
            "openssl ecparam -name {name} -genkey -noout | openssl req -new -key /dev/stdin -subj /"
        ))
    };
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"trailing junk\n");
    let mut two = good.clone();
    two.extend_from_slice(&good);
    let mut big_pem = good.clone();
    // Over the CSR limit (64 KiB), under the message limit (96 KiB).
    big_pem.extend(std::iter::repeat_n(b' ', 70 * 1024));

    use Code::*;
    use Expect::*;
    vec![
        Case { name: "baseline: valid Ed25519 CSR", req: ok(good.clone()), expect: Issued("spiffe://public/ns/default/orders") },
        Case { name: "CSR signed by another key", req: ok(csr_signed_by_another_key()), expect: Refused(InvalidArgument, "invalid signature") },
        Case {
            name: "CSR asks for CA:TRUE",
            req: ok(greedy_csr(&["basicConstraints=critical,CA:TRUE"])),
            expect: Issued("spiffe://public/ns/default/orders"),
        },
        Case {
            name: "CSR asks for extra SANs",
            req: ok(greedy_csr(&["subjectAltName=DNS:evil.example,URI:spiffe://evil/ns/kube-system/admin,IP:10.0.0.1,email:a@evil.example"])),
            expect: Issued("spiffe://public/ns/default/orders"),
        },
        Case {
            name: "CSR asks for extra extensions",
            req: ok(greedy_csr(&[
                "keyUsage=critical,keyCertSign,cRLSign",
                "extendedKeyUsage=codeSigning,OCSPSigning",
                "1.2.3.4.5=ASN1:UTF8String:smuggled",
                "nameConstraints=permitted;DNS:evil.example",
            ])),
            expect: Issued("spiffe://public/ns/default/orders"),
        },
        Case { name: "RSA-1024 key", req: ok(rsa1024), expect: Refused(InvalidArgument, "RSA key of 1024 bits") },
        Case { name: "P-521 key", req: ok(curve("secp521r1")), expect: Refused(InvalidArgument, "EC curve 1.3.132.0.35") },
        Case { name: "secp256k1 key", req: ok(curve("secp256k1")), expect: Refused(InvalidArgument, "EC curve 1.3.132.0.10") },
        Case { name: "1 MiB CSR", req: ok(vec![b'A'; 1024 * 1024]), expect: Refused(ResourceExhausted, "grpc: received message larger than max") },
        Case { name: "70 KiB CSR (over the CSR limit)", req: ok(big_pem), expect: Refused(InvalidArgument, "more than the limit of 65536") },
        Case { name: "garbage", req: ok(b"\x01\x02garbage\xff".to_vec()), expect: Refused(InvalidArgument, "neither DER nor ASCII PEM") },
        Case { name: "garbage DER", req: ok(vec![0x30, 0x82, 0xff, 0xff, 0x01]), expect: Refused(InvalidArgument, "invalid certificate signing request: could not be parsed") },
        Case { name: "PEM with trailing junk", req: ok(trailing), expect: Refused(InvalidArgument, "outside the PEM block") },
        Case { name: "several PEM blocks", req: ok(two), expect: Refused(InvalidArgument, "expected one PEM block, found 2") },
        Case {
            name: "PEM of a private key",
            req: ok(rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key").serialize_pem().into_bytes()),
            expect: Refused(InvalidArgument, "PEM block is \"PRIVATE KEY\""),
        },
        Case { name: "empty CSR", req: ok(Vec::new()), expect: Refused(PermissionDenied, "invalid request: CSR is required") },
        Case { name: "app id with /", req: with_id("a/b"), expect: Refused(PermissionDenied, "invalid request: app ID may only contain") },
        Case { name: "app id ..", req: with_id(".."), expect: Refused(PermissionDenied, "invalid request: parameter app-id cannot contain dots") },
        Case { name: "app id with dots", req: with_id("orders.v2"), expect: Refused(PermissionDenied, "invalid request: parameter app-id cannot contain dots") },
        Case { name: "app id unicode", req: with_id("ördérs"), expect: Refused(PermissionDenied, "invalid request: app ID may only contain") },
        Case { name: "app id with NUL", req: with_id("a\0b"), expect: Refused(PermissionDenied, "invalid request: app ID may only contain") },
        Case { name: "app id 10 000 chars", req: with_id(&"a".repeat(10_000)), expect: Refused(PermissionDenied, "invalid request: app ID must be 64 characters or less") },
        Case { name: "app id empty", req: with_id(""), expect: Refused(PermissionDenied, "invalid request: parameter app-id cannot be empty") },
        Case { name: "empty namespace", req: request("orders", "", "public", good.clone()), expect: Refused(PermissionDenied, "invalid request: namespace is required") },
        Case { name: "namespace with /", req: request("orders", "default/../kube-system", "public", good.clone()), expect: Refused(PermissionDenied, "invalid request: invalid namespace") },
        Case { name: "namespace ..", req: request("orders", "..", "public", good.clone()), expect: Refused(PermissionDenied, "invalid request: invalid namespace") },
        Case { name: "bad trust domain (upper case, port)", req: request("orders", "default", "Evil.Example:443", good.clone()), expect: Refused(PermissionDenied, "invalid request: invalid trust domain") },
        Case { name: "bad trust domain (slash)", req: request("orders", "default", "public/ns/x", good.clone()), expect: Refused(PermissionDenied, "invalid request: invalid trust domain") },
        Case { name: "validator KUBERNETES not enabled", req: with_validator(2), expect: Refused(InvalidArgument, "the requested validator is not enabled") },
        Case { name: "validator JWKS not enabled", req: with_validator(3), expect: Refused(InvalidArgument, "the requested validator is not enabled") },
        Case { name: "validator 99 (unknown number)", req: with_validator(99), expect: Refused(InvalidArgument, "the requested validator is not enabled") },
        Case { name: "validator INSECURE named explicitly", req: with_validator(1), expect: Issued("spiffe://public/ns/default/orders") },
    ]
}

/// The leaf must be the SVID Sigil decides: the requested URI and nothing else, not a CA,
/// digitalSignature only, no extension Sigil does not write, an empty subject.
fn check_leaf(chain_pem: &[u8], want_id: &str) -> Result<(), String> {
    let blocks = ::pem::parse_many(chain_pem).map_err(|e| e.to_string())?;
    if blocks.len() != 2 {
        return Err(format!(
            "chain has {} certificates, want leaf + issuer",
            blocks.len()
        ));
    }
    let (_, leaf) = X509Certificate::from_der(blocks[0].contents()).map_err(|e| e.to_string())?;
    if leaf.is_ca() {
        return Err("leaf is a CA".into());
    }
    if !leaf.subject().to_string().is_empty() {
        return Err(format!(
            "leaf subject {:?} copied from the CSR",
            leaf.subject().to_string()
        ));
    }
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| e.to_string())?
        .ok_or("no SAN")?;
    if san.value.general_names != vec![GeneralName::URI(want_id)] {
        return Err(format!("SANs {:?}", san.value.general_names));
    }
    let ku = leaf
        .key_usage()
        .map_err(|e| e.to_string())?
        .ok_or("no key usage")?;
    if !ku.value.digital_signature() || ku.value.key_cert_sign() || ku.value.crl_sign() {
        return Err(format!("key usage {}", ku.value));
    }
    let eku = leaf
        .extended_key_usage()
        .map_err(|e| e.to_string())?
        .ok_or("no EKU")?;
    if !(eku.value.server_auth && eku.value.client_auth)
        || eku.value.code_signing
        || eku.value.ocsp_signing
        || eku.value.any
        || !eku.value.other.is_empty()
    {
        return Err(format!("extended key usage {:?}", eku.value));
    }
    use x509_parser::oid_registry::*;
    let allowed = [
        OID_X509_EXT_BASIC_CONSTRAINTS,
        OID_X509_EXT_KEY_USAGE,
        OID_X509_EXT_EXTENDED_KEY_USAGE,
        OID_X509_EXT_SUBJECT_ALT_NAME,
        OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
        OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER,
    ];
    for ext in leaf.extensions() {
        if !allowed.contains(&ext.oid) {
            return Err(format!("unexpected extension {}", ext.oid.to_id_string()));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_exact_codes_and_no_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_server(dir.path()).await;
    let ca_pem = std::fs::read(dir.path().join("ca.crt")).expect("server wrote ca.crt");
    let mut client = client(&server, &ca_pem).await;

    let mut table = Vec::new();
    let mut failures = Vec::new();
    for case in cases() {
        let before = server.metrics.sign_success.get();
        let result = client.sign_certificate(case.req.clone()).await;
        let issued = server.metrics.sign_success.get() - before;
        let (observed, message) = match &result {
            Ok(_) => (Code::Ok, String::new()),
            Err(s) => (s.code(), s.message().to_string()),
        };
        let verdict = match (case.expect, &result) {
            (Expect::Refused(code, fragment), Err(status)) => {
                if status.code() != code {
                    Err(format!(
                        "want {code:?}, got {:?}: {}",
                        status.code(),
                        status.message()
                    ))
                } else if !status.message().contains(fragment) {
                    Err(format!("message {:?} lacks {fragment:?}", status.message()))
                } else if issued != 0 {
                    Err(format!("refused, yet sign_success moved by {issued}"))
                } else {
                    Ok(())
                }
            }
            (Expect::Refused(code, _), Ok(_)) => {
                Err(format!("want {code:?}, but a certificate was issued"))
            }
            (Expect::Issued(_), Err(status)) => Err(format!(
                "want a certificate, got {:?}: {}",
                status.code(),
                status.message()
            )),
            (Expect::Issued(id), Ok(resp)) => {
                let resp = resp.get_ref();
                if issued != 1 {
                    Err(format!("sign_success moved by {issued}, want 1"))
                } else {
                    check_leaf(&resp.workload_certificate, id)
                }
            }
        };
        let shown: String = message.chars().take(70).collect();
        table.push(format!(
            "{:<40} {:<18} {:<6} {}",
            case.name,
            format!("{observed:?}"),
            if issued > 0 { "yes" } else { "no" },
            shown
        ));
        if let Err(why) = verdict {
            failures.push(format!("{}: {why}", case.name));
        }
    }

    println!("\n{:<40} {:<18} {:<6} message", "case", "code", "issued");
    for row in &table {
        println!("{row}");
    }
    server.shutdown().await.expect("clean shutdown");
    assert!(
        failures.is_empty(),
        "hostile cases failed:\n{}",
        failures.join("\n")
    );
}
