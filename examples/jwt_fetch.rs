//! Asks a running Sigil (or Dapr Sentry) for an SVID the way a sidecar does, with the
//! insecure validator, and prints the response's JWT-SVIDs as JSON:
//! `{"spiffe_id": ..., "jwt": ..., "per_audience_jwts": {...}}`.
//!
//! Used by `tests/interop/jwt_verify.py` to get tokens for an independent verifier.
#![forbid(unsafe_code)]

use clap::Parser;
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use sigil_proto::sentry::ca_client::CaClient;
use sigil_proto::{SignCertificateRequest, TokenValidator};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[derive(Parser, Debug)]
struct Args {
    /// host:port of the gRPC server.
    #[arg(long, default_value = "127.0.0.1:50001")]
    addr: String,
    /// Trust anchors of the server (its ca.crt).
    #[arg(long)]
    ca: std::path::PathBuf,
    /// TLS name to check.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Trust domain asked for.
    #[arg(long, default_value = "public")]
    trust_domain: String,
    /// Namespace asked for.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// App id asked for.
    #[arg(long, default_value = "app")]
    app_id: String,
    /// Extra JWT audiences (repeat the flag).
    #[arg(long = "audience")]
    audiences: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let ca = std::fs::read(&args.ca)?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(args.server_name.clone());
    let channel = Endpoint::from_shared(format!("https://{}", args.addr))?
        .tls_config(tls)?
        .connect()
        .await?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key)?.pem()?;
    let resp = CaClient::new(channel)
        .sign_certificate(SignCertificateRequest {
            id: args.app_id.clone(),
            token: String::new(),
            trust_domain: args.trust_domain.clone(),
            namespace: args.namespace.clone(),
            certificate_signing_request: csr.into_bytes(),
            token_validator: TokenValidator::Insecure as i32,
            jwt_audiences: args.audiences,
        })
        .await?
        .into_inner();
    let out = serde_json::json!({
        "spiffe_id": format!("spiffe://{}/ns/{}/{}", args.trust_domain, args.namespace, args.app_id),
        "jwt": resp.jwt,
        "per_audience_jwts": resp.per_audience_jwts,
    });
    println!("{out}");
    Ok(())
}
