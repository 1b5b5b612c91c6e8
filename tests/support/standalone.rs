//! Standalone mode: a real server on loopback port 0 with a temporary credentials
//! directory, and a real TLS gRPC client to talk to it.

use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use sigil::config::ServeArgs;
use sigil::server::RunningServer;
use sigil_proto::sentry::ca_client::CaClient;
use sigil_proto::{SignCertificateRequest, TokenValidator};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Serve flags for a loopback test server using `dir` for its credentials.
pub fn serve_args(dir: &Path, extra: &[&str]) -> ServeArgs {
    let creds = dir.join("credentials").display().to_string();
    let cfg = dir.join("no-such-config.yaml").display().to_string();
    let mut argv = vec![
        "--port",
        "0",
        "--healthz-port",
        "0",
        "--metrics-port",
        "0",
        "--issuer-credentials",
        &creds,
        "--config",
        &cfg,
        "--reload-interval",
        "200ms",
    ];
    argv.extend_from_slice(extra);
    super::serve_args(&argv)
}

/// Starts a standalone server in `dir`.
pub async fn start(dir: &Path, extra: &[&str]) -> RunningServer {
    super::start(serve_args(dir, extra))
        .await
        .expect("server starts")
}

/// The credentials directory of a server started with [`start`].
pub fn creds(dir: &Path) -> PathBuf {
    dir.join("credentials")
}

/// A TLS channel trusting the anchors in `ca_pem`, checking the `localhost` DNS name.
pub async fn channel(server: &RunningServer, ca_pem: &[u8]) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    Endpoint::from_shared(format!("https://{}", server.grpc_addr))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("connect")
}

/// A client over a fresh connection.
pub async fn client(server: &RunningServer, ca_pem: &[u8]) -> CaClient<Channel> {
    CaClient::new(channel(server, ca_pem).await)
}

/// A CSR (PEM) for a fresh key of `alg`, and the key.
pub fn csr(alg: &'static rcgen::SignatureAlgorithm) -> (KeyPair, String) {
    let key = KeyPair::generate_for(alg).expect("key");
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    let pem = p.serialize_request(&key).expect("csr").pem().expect("pem");
    (key, pem)
}

/// An RSA CSR made by openssl.
pub fn rsa_csr(bits: u32) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl req -new -newkey rsa:{bits} -nodes -keyout /dev/null -subj / 2>/dev/null"
        ))
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl req failed");
    String::from_utf8(out.stdout).expect("PEM is ASCII")
}

/// An insecure-validator request.
pub fn request(id: &str, ns: &str, csr_pem: &str) -> SignCertificateRequest {
    SignCertificateRequest {
        id: id.into(),
        token: String::new(),
        trust_domain: String::new(),
        namespace: ns.into(),
        certificate_signing_request: csr_pem.as_bytes().to_vec(),
        token_validator: TokenValidator::Insecure as i32,
        jwt_audiences: vec![],
    }
}
