//! Flags of `sigil serve`, with Dapr Sentry's names and defaults, read as Go's `flag`
//! package reads them. [`ServeArgs::into_config`] turns them into the typed
//! [`Config`](super::Config); nothing reads them after that.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use sigil_pki::KeyType;

use super::duration::parse_duration;
use crate::validator::pod_lookup::PodLookup;

/// Where the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Mode {
    /// Files on disk, insecure validator by default.
    #[default]
    Standalone,
    /// Secret/ConfigMap in the cluster, Kubernetes validator by default.
    Kubernetes,
}

/// A boolean flag value as Go's `flag` package reads it (`1`, `t`, `T`, `TRUE`, `true`,
/// `True`, and the same for false), so Dapr's `--enable-metrics`, `--enable-metrics=false` and
/// `--jwt-enabled=true` all work as they do for Sentry.
pub fn parse_go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true or false)")),
    }
}

/// Flags of `sigil serve`. Names and defaults are Dapr Sentry's unless marked as Sigil's.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Dapr Configuration: a YAML file in standalone mode, the name of the Configuration
    /// object in kubernetes mode.
    #[arg(long, default_value = "daprsystem", env = "SIGIL_CONFIG")]
    pub config: String,
    /// Directory of the issuer credentials. Standalone default: the Sigil data directory
    /// ($SIGIL_DATA_DIR, else $XDG_DATA_HOME/sigil, else ~/.local/share/sigil) + /credentials.
    #[arg(long)]
    pub issuer_credentials: Option<PathBuf>,
    /// Trust anchors file name inside the credentials directory.
    #[arg(long, default_value = "ca.crt")]
    pub issuer_ca_filename: String,
    /// Issuer certificate file name.
    #[arg(long, default_value = "issuer.crt")]
    pub issuer_certificate_filename: String,
    /// Issuer key file name.
    #[arg(long, default_value = "issuer.key")]
    pub issuer_key_filename: String,
    /// Trust domain of the control plane (Sentry's own identity and the CA's subject).
    #[arg(long, default_value = "localhost")]
    pub trust_domain: String,
    /// gRPC port.
    #[arg(long, default_value_t = 50001)]
    pub port: u16,
    /// gRPC listen address. Default: 127.0.0.1 standalone, 0.0.0.0 in kubernetes mode.
    #[arg(long)]
    pub listen_address: Option<IpAddr>,
    /// Health server port (`GET /healthz`).
    #[arg(long, default_value_t = 8080)]
    pub healthz_port: u16,
    /// Health server listen address (default as --listen-address).
    #[arg(long)]
    pub healthz_listen_address: Option<IpAddr>,
    /// Metrics port (Prometheus text at `/` and `/metrics`).
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Metrics listen address (default as --listen-address).
    #[arg(long)]
    pub metrics_listen_address: Option<IpAddr>,
    /// Serve metrics (`--enable-metrics`, `--enable-metrics=false`).
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, action = clap::ArgAction::Set)]
    pub enable_metrics: bool,
    /// standalone or kubernetes.
    #[arg(long, value_enum, default_value_t = Mode::Standalone)]
    pub mode: Mode,
    /// Kubeconfig file (kubernetes mode; default: in-cluster configuration).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Log as JSON lines.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, action = clap::ArgAction::Set)]
    pub log_as_json: bool,
    /// Namespace of the control plane.
    #[arg(
        long = "namespace",
        env = "NAMESPACE",
        default_value = "default",
        hide = true
    )]
    pub namespace: String,

    /// Issue a JWT-SVID with every certificate.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, action = clap::ArgAction::Set)]
    pub jwt_enabled: bool,
    /// JWT signing key file (PKCS#8 PEM). Default `jwt.key`; a relative name is inside the
    /// credentials directory.
    #[arg(long)]
    pub jwt_key_filename: Option<String>,
    /// JWKS file published for verifiers. Default `jwks.json`; a relative name is inside
    /// the credentials directory.
    #[arg(long)]
    pub jwks_filename: Option<String>,
    /// JWT `iss` claim (no `iss` when unset).
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// JWT signing algorithm: RS256 (default for RSA keys and for a generated key), RS384,
    /// RS512, PS256, PS384, PS512, ES256, ES384, or EdDSA (daprd refuses EdDSA tokens).
    #[arg(long)]
    pub jwt_signing_algorithm: Option<String>,
    /// JWT key id (`kid`). Default: base64 SHA-256 JWK thumbprint of the key (as Dapr).
    #[arg(long)]
    pub jwt_key_id: Option<String>,
    /// JWT lifetime (default 24h).
    #[arg(long)]
    pub jwt_ttl: Option<String>,
    /// Sigil: how long a new JWT signing key is published before it signs, so that every
    /// replica serves it and verifiers' caches hold it. Default: the OIDC cache lifetime
    /// (300s) plus two --reload-interval.
    #[arg(long, value_parser = parse_duration)]
    pub jwt_key_publish_delay: Option<Duration>,
    /// Serve OIDC discovery and the JWKS over HTTP(S) (requires --jwt-enabled).
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, action = clap::ArgAction::Set)]
    pub oidc_enabled: bool,
    /// OIDC server port (default 9080).
    #[arg(long)]
    pub oidc_server_listen_port: Option<u16>,
    /// OIDC server listen address (default 127.0.0.1, as Dapr's `localhost`).
    #[arg(long)]
    pub oidc_server_listen_address: Option<IpAddr>,
    /// Serve OIDC over TLS (default true); `--oidc-server-tls-enabled=false` serves plain HTTP.
    #[arg(
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub oidc_server_tls_enabled: Option<bool>,
    /// OIDC server certificate chain (PEM); required while TLS is on.
    #[arg(long)]
    pub oidc_server_tls_cert_file: Option<PathBuf>,
    /// OIDC server private key (PEM); required while TLS is on.
    #[arg(long)]
    pub oidc_server_tls_key_file: Option<PathBuf>,
    /// Public JWKS URI announced in the discovery document (default: derived from the
    /// request's Host).
    #[arg(long)]
    pub oidc_jwks_uri: Option<String>,
    /// Path prefix of the OIDC endpoints (e.g. `/sentry`).
    #[arg(long)]
    pub oidc_path_prefix: Option<String>,
    /// Host names the OIDC endpoints answer for (comma-separated; `*` for any). Other Host
    /// headers get 403.
    #[arg(long, value_delimiter = ',')]
    pub oidc_allowed_hosts: Option<Vec<String>>,

    // ---- Sigil's own flags ---------------------------------------------------------------
    /// Sigil: workload certificate lifetime; overrides the Configuration's workloadCertTTL.
    #[arg(long, value_parser = parse_duration)]
    pub workload_cert_ttl: Option<Duration>,
    /// Sigil: NotBefore backdating; overrides the Configuration's allowedClockSkew.
    #[arg(long, value_parser = parse_duration)]
    pub allowed_clock_skew: Option<Duration>,
    /// Sigil: cluster DNS domain, for the server certificate's DNS names.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Sigil: key algorithm for a CA generated at first start.
    #[arg(long, default_value = "ed25519")]
    pub ca_key_type: KeyType,
    /// Sigil: let the insecure validator serve on a non-loopback address.
    #[arg(long, default_value_t = false)]
    pub insecure_allow_remote: bool,
    /// Sigil: how long a successful Kubernetes validation is reused (0 disables).
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub token_cache_ttl: Duration,
    /// Sigil: most entries in the validation cache.
    #[arg(long, default_value_t = 10_000)]
    pub token_cache_size: usize,
    /// Sigil: most signing requests processed at once; more wait.
    #[arg(long, default_value_t = 256)]
    pub max_concurrent_requests: usize,
    /// Sigil: deadline for one request.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// Sigil: how often the credential store is checked for changed CA material.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub reload_interval: Duration,
    /// Sigil (kubernetes mode): how pods are read. `watch`: a local copy kept by a
    /// cluster-wide list and watch, as Dapr (needs list and watch on pods); `get`: one GET per
    /// validation (needs only get).
    #[arg(long, value_enum, default_value_t = PodLookup::Watch)]
    pub pod_lookup: PodLookup,
    /// Sigil (kubernetes mode): accept a TokenReview that confirms no audiences, as Dapr
    /// does. Only for an API server whose token authenticator is not audience-aware.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, action = clap::ArgAction::Set)]
    pub token_review_audiences_optional: bool,
    /// Sigil: let the watcher swap in CA material whose trust anchors share no root with the
    /// ones in force. Off by default: such a swap breaks mTLS between every workload holding
    /// a certificate from the old root and every one holding a new certificate. A root
    /// rotation that keeps the old root in `ca.crt` next to the new one is always accepted.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, action = clap::ArgAction::Set)]
    pub allow_ca_root_replacement: bool,
    /// Sigil (kubernetes mode): let callers proven by a JWKS get identities in the
    /// control-plane namespace (never Dapr's control-plane identities, which a JWT cannot
    /// prove). Standalone, the control plane shares `default` with the apps: always allowed.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = parse_go_bool, action = clap::ArgAction::Set)]
    pub jwks_allow_control_plane_namespace: bool,
    /// Sigil: signing requests one client address may send per second, sustained (0 turns
    /// the limit off). Over it: RESOURCE_EXHAUSTED with the time to wait.
    #[arg(long, default_value_t = 20.0)]
    pub peer_rate_limit: f64,
    /// Sigil: requests one client address may send at once before its rate applies.
    #[arg(long, default_value_t = 200)]
    pub peer_rate_burst: u32,
    /// Sigil: signing requests per second for one proven identity (trust domain, namespace,
    /// app id), sustained; all replicas of an app share it (0 turns it off).
    #[arg(long, default_value_t = 50.0)]
    pub identity_rate_limit: f64,
    /// Sigil: requests one identity may send at once before its rate applies (a mass
    /// restart of an app's replicas is such a burst).
    #[arg(long, default_value_t = 2000)]
    pub identity_rate_burst: u32,
    /// Sigil: most connections open at once on the gRPC port (and on the OIDC port); more
    /// are closed as soon as they are accepted.
    #[arg(long, default_value_t = 512)]
    pub max_connections: usize,
    /// Sigil: most concurrent streams on one gRPC connection (advertised as HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, default_value_t = 100)]
    pub max_concurrent_streams: u32,
    /// Sigil: time a client gets for its TLS handshake and for its request headers (on a
    /// gRPC connection: until its first request starts).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub header_timeout: Duration,
    /// Sigil: a gRPC connection with no request in flight for this long is closed.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,
    /// Sigil: on a gRPC connection, an HTTP/2 PING after this long without a frame from the
    /// client, idle or not; a client that vanished is found this way.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub keepalive_interval: Duration,
    /// Sigil: time a client gets to answer a keepalive PING before its gRPC connection is
    /// closed.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub keepalive_timeout: Duration,
    /// Sigil (kubernetes mode): sign Kubernetes PodCertificateRequests for this signer name
    /// (domain-qualified, e.g. `sigil.example.com/spiffe`). Off when unset.
    #[arg(long)]
    pub pod_certificate_signer: Option<String>,
}

/// `sigil serve`'s flags alone, as the configuration's tests parse them.
#[cfg(test)]
#[derive(clap::Parser)]
pub(super) struct TestCommand {
    #[command(flatten)]
    pub(super) args: ServeArgs,
}

/// The flags of a command line made of `extra`.
#[cfg(test)]
pub(super) fn parse_for_test(extra: &[&str]) -> ServeArgs {
    use clap::Parser;

    let mut v = vec!["t"];
    v.extend_from_slice(extra);
    TestCommand::try_parse_from(v).unwrap().args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> ServeArgs {
        parse_for_test(extra)
    }

    #[test]
    fn boolean_flags_read_as_go_reads_them() {
        // Dapr's chart style: a bare flag followed by another flag and its value.
        let a = args(&[
            "--enable-metrics",
            "--metrics-port",
            "9091",
            "--log-as-json",
        ]);
        assert!(a.enable_metrics && a.log_as_json);
        assert_eq!(a.metrics_port, 9091);
        let a = args(&[
            "--enable-metrics=false",
            "--jwt-enabled=true",
            "--oidc-enabled=0",
        ]);
        assert!(!a.enable_metrics && a.jwt_enabled && !a.oidc_enabled);
        let a = args(&[
            "--jwt-enabled",
            "--oidc-enabled=T",
            "--oidc-server-tls-enabled=False",
        ]);
        assert!(a.jwt_enabled && a.oidc_enabled);
        assert_eq!(a.oidc_server_tls_enabled, Some(false));
        assert!(args(&[]).enable_metrics && !args(&[]).jwt_enabled);
        for bad in ["--enable-metrics=yes", "--jwt-enabled=2"] {
            assert!(TestCommand::try_parse_from(["t", bad]).is_err(), "{bad}");
        }
    }
}
