//! Shared pieces of the end-to-end tests: start a real server on loopback port 0 with a
//! temporary credentials directory, and talk to it with a real TLS gRPC client.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use sigil::config::ServeArgs;
use sigil::server::RunningServer;
use sigil_proto::sentry::ca_client::CaClient;
use sigil_proto::{SignCertificateRequest, TokenValidator};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

/// Serve flags for a loopback test server using `dir` for its credentials.
pub fn serve_args(dir: &Path, extra: &[&str]) -> ServeArgs {
    let creds = dir.join("credentials");
    let cfg = dir.join("no-such-config.yaml");
    let mut argv = vec![
        "sigil".to_string(),
        "--port".into(),
        "0".into(),
        "--healthz-port".into(),
        "0".into(),
        "--metrics-port".into(),
        "0".into(),
        "--issuer-credentials".into(),
        creds.display().to_string(),
        "--config".into(),
        cfg.display().to_string(),
        "--reload-interval".into(),
        "200ms".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Args::try_parse_from(argv).expect("test flags parse").serve
}

/// Starts a standalone server in `dir`.
pub async fn start(dir: &Path, extra: &[&str]) -> RunningServer {
    let config = serve_args(dir, extra).into_config(None).expect("config");
    sigil::server::start(config, Arc::new(sigil_pki::SystemClock))
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
