//! `sigil request`: obtain a workload certificate from Sigil (or Dapr Sentry) and write it
//! to a directory as `cert.pem` (leaf + issuer chain), `key.pem` (PKCS#8, mode 0600) and
//! `ca.crt` (trust anchors). With `--watch` it keeps the certificate fresh and rewrites the
//! files after every renewal. Built on `sigil-client`, so the certificate is checked (our
//! identity, our key, chain to the anchors) before anything is written.
//!
//! Each file is replaced atomically, but the three are not replaced as one: a reader that
//! finds `cert.pem` and `key.pem` not matching should read both again.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sigil_client::{KeyType, SourceConfig, SvidSource, TrustAnchorSource, Validator};

use crate::config::default_data_dir;
use crate::config::duration::parse_duration;

fn parse_key_type(s: &str) -> Result<KeyType, String> {
    if s.to_ascii_lowercase().starts_with("rsa") {
        return Err(
            "RSA keys cannot be generated: the ring crypto library used by Sigil has no RSA key generation; use ed25519, p256 or p384".into(),
        );
    }
    s.parse()
}

/// `sigil request`
#[derive(Args, Debug, Clone)]
pub struct RequestArgs {
    /// Address of Sigil / Dapr Sentry (`host:port`).
    #[arg(long, env = "SENTRY_ADDRESS", default_value = "127.0.0.1:50001")]
    pub sentry: String,
    /// App id to request a certificate for.
    #[arg(long, env = "APP_ID")]
    pub app_id: String,
    /// Namespace of the workload.
    #[arg(long, env = "NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Trust domain to ask for (the insecure validator honours it; Kubernetes decides it).
    #[arg(long, default_value = "public")]
    pub trust_domain: String,
    /// File holding the token to present (read on every request).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Validator to ask for: insecure, kubernetes or jwks (default: the server's default).
    #[arg(long)]
    pub validator: Option<Validator>,
    /// Trust anchors PEM. Default: the credentials of a local `sigil serve`
    /// ($SIGIL_DATA_DIR or ~/.local/share/sigil, then /credentials/ca.crt).
    #[arg(long)]
    pub trust_anchors: Option<PathBuf>,
    /// Directory to write cert.pem, key.pem and ca.crt into.
    #[arg(long)]
    pub out: PathBuf,
    /// Key algorithm: ed25519, p256 or p384.
    #[arg(long, default_value = "ed25519", value_parser = parse_key_type)]
    pub key_type: KeyType,
    /// Trust domain of the CA's own identity.
    #[arg(
        long,
        env = "DAPR_CONTROLPLANE_TRUST_DOMAIN",
        default_value = "localhost"
    )]
    pub control_plane_trust_domain: String,
    /// Namespace of the CA's own identity.
    #[arg(long, env = "DAPR_CONTROLPLANE_NAMESPACE", default_value = "default")]
    pub control_plane_namespace: String,
    /// Keep running: renew before expiry and rewrite the files each time.
    #[arg(long)]
    pub watch: bool,
    /// Without --watch: how long to keep trying for the first certificate.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
    /// Log level for --watch progress: debug, info, warn, error.
    #[arg(long, default_value = "warn")]
    pub log_level: String,
}

impl RequestArgs {
    fn source_config(&self) -> Result<SourceConfig, String> {
        let anchors = self
            .trust_anchors
            .clone()
            .unwrap_or_else(|| default_data_dir().join("credentials").join("ca.crt"));
        let e = |what: &str, err: &dyn std::fmt::Display| format!("--{what}: {err}");
        let mut c = SourceConfig::new(
            self.sentry.clone(),
            &self.app_id,
            &self.namespace,
            TrustAnchorSource::File(anchors),
        )
        .map_err(|err| err.to_string())?;
        c.trust_domain = self
            .trust_domain
            .parse()
            .map_err(|err| e("trust-domain", &err))?;
        c.control_plane_trust_domain = self
            .control_plane_trust_domain
            .parse()
            .map_err(|err| e("control-plane-trust-domain", &err))?;
        c.control_plane_namespace = self
            .control_plane_namespace
            .parse()
            .map_err(|err| e("control-plane-namespace", &err))?;
        c.token_file = self.token_file.clone();
        c.validator = self.validator;
        c.key_type = self.key_type;
        Ok(c)
    }
}

fn write_files(out: &Path, source: &SvidSource) -> Result<String, String> {
    let svid = source
        .current()
        .ok_or_else(|| "no certificate yet".to_string())?;
    // One change for all three: a reader never pairs a new certificate with an old key.
    crate::store::atomic::write_set(
        out,
        &[
            ("ca.crt", source.trust_anchors().to_pem().as_bytes(), 0o644),
            ("key.pem", svid.private_key_pem().as_bytes(), 0o600),
            ("cert.pem", svid.chain_pem().as_bytes(), 0o644),
        ],
    )
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote {}/{{cert.pem,key.pem,ca.crt}} for {} (serial {}, valid until {})",
        out.display(),
        svid.spiffe_id(),
        svid.serial_hex(),
        svid.not_after()
    ))
}

/// Runs the command inside an existing runtime; returns a message for the user on failure.
pub async fn execute(args: RequestArgs) -> Result<(), String> {
    let config = args.source_config()?;
    let source = SvidSource::start(config).map_err(|e| e.to_string())?;
    let result = if args.watch {
        watch(&args.out, &source).await
    } else {
        match tokio::time::timeout(args.timeout, source.wait_for_svid()).await {
            Ok(Ok(_)) => write_files(&args.out, &source).map(|msg| eprintln!("{msg}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no certificate within {:?}; last error: {}",
                args.timeout,
                source.status().last_error.unwrap_or_else(|| "none".into())
            )),
        }
    };
    source.stop();
    result
}

async fn watch(out: &Path, source: &SvidSource) -> Result<(), String> {
    let mut svids = source.subscribe();
    let mut anchors = source.subscribe_trust_anchors();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    loop {
        tokio::select! {
            r = svids.changed() => {
                if r.is_err() { return Ok(()) }
                svids.borrow_and_update();
                match write_files(out, source) {
                    Ok(msg) => eprintln!("{msg}"),
                    Err(e) => eprintln!("error: {e}"),
                }
            }
            r = anchors.changed() => {
                if r.is_err() { return Ok(()) }
                anchors.borrow_and_update();
                if source.current().is_some() {
                    if let Err(e) = write_files(out, source) {
                        eprintln!("error: {e}");
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
        }
    }
}

/// Runs `sigil request`, printing any error.
pub fn run(args: RequestArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
        .and_then(|rt| rt.block_on(execute(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
