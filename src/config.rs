//! Configuration of `sigil serve`: one typed struct built from flags and environment
//! variables (Dapr Sentry's names and defaults), plus the Dapr `Configuration` document,
//! validated once at start. Nothing reads flags after [`ServeArgs::into_config`].

use sigil_pki::clock::to_time;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;
use sigil_pki::{IssuePolicy, JwsAlgorithm, KeyType, Namespace, TrustDomain};

use crate::validator::pods::PodLookup;
use crate::Error;

/// Control-plane trust domain in kubernetes mode when the Configuration names none (Dapr's).
pub const DEFAULT_CONTROL_PLANE_TRUST_DOMAIN: &str = "cluster.local";

/// Where the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Mode {
    /// Files on disk, insecure validator by default.
    #[default]
    Standalone,
    /// Secret/ConfigMap in the cluster, Kubernetes validator by default.
    Kubernetes,
}

/// A rate-limit flag pair: zero turns the limit off.
fn rate(flag: &str, per_second: f64, burst: u32) -> Result<Option<crate::rate_limit::Rate>, Error> {
    if !per_second.is_finite() || per_second < 0.0 {
        return Err(Error::Config(format!(
            "{flag} must be a number of requests per second, 0 or more"
        )));
    }
    if per_second == 0.0 {
        return Ok(None);
    }
    if burst == 0 {
        return Err(Error::Config(format!(
            "{flag} needs a burst of at least 1 (its -burst flag)"
        )));
    }
    Ok(Some(crate::rate_limit::Rate { per_second, burst }))
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

/// Parses `24h`, `15m`, `90s`, `500ms`, `365d`, or combinations such as `1h30m` and the
/// form Go prints (`2h0m0s`, `1.5µs`), since Dapr passes `-jwt-ttl=` a Go duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("{text:?}: missing unit (use ms, s, m, h or d)"))?;
        if digits == 0 {
            return Err(format!("{text:?}: expected a number"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: bad number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => value / 1e9,
            // Go's time.Duration.String() writes microseconds as `µs`.
            "us" | "µs" | "μs" => value / 1e6,
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86400.0,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                ))
            }
        };
        rest = &rest[unit_len..];
        total = Duration::try_from_secs_f64(seconds)
            .ok()
            .and_then(|d| total.checked_add(d))
            .filter(|d| *d <= MAX_DURATION)
            .ok_or_else(|| {
                format!("{text:?}: out of range (durations end at Go's limit, about 292 years)")
            })?;
    }
    Ok(total)
}

/// The longest duration accepted anywhere: Go's (`math.MaxInt64` nanoseconds), so nothing Dapr
/// can pass is refused, and every deadline and expiry computed from a flag stays in range.
pub const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

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
    /// Sigil (kubernetes mode): sign Kubernetes PodCertificateRequests for this signer name
    /// (domain-qualified, e.g. `sigil.example.com/spiffe`). Off when unset.
    #[arg(long)]
    pub pod_certificate_signer: Option<String>,
}

/// The `mtls` part of a Dapr `Configuration`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MtlsSpec {
    /// Workload certificate lifetime, Go duration syntax.
    #[serde(rename = "workloadCertTTL")]
    pub workload_cert_ttl: Option<String>,
    /// Allowed clock skew, Go duration syntax.
    pub allowed_clock_skew: Option<String>,
    /// Trust domain of the control plane.
    pub control_plane_trust_domain: Option<String>,
    /// Extra validators (`jwks`) and their options.
    #[serde(default)]
    pub token_validators: Vec<TokenValidatorSpec>,
}

/// One entry of `spec.mtls.tokenValidators`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct TokenValidatorSpec {
    /// Validator name (`jwks`).
    pub name: String,
    /// Its options (string map).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, serde_yaml::Value>,
}

/// A Dapr `Configuration` document (only what Sentry reads).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct DaprConfiguration {
    /// `spec`.
    #[serde(default)]
    pub spec: ConfigurationSpec,
}

/// `spec` of a Dapr Configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ConfigurationSpec {
    /// `spec.mtls`.
    #[serde(default)]
    pub mtls: MtlsSpec,
}

impl DaprConfiguration {
    /// Parses YAML (or JSON).
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        serde_yaml::from_str(text).map_err(|e| Error::Config(format!("Dapr Configuration: {e}")))
    }

    /// The `jwks` validator's options, if configured (the name in any case, as Dapr).
    pub fn jwks_options(&self) -> Option<&TokenValidatorSpec> {
        self.spec
            .mtls
            .token_validators
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case("jwks"))
    }

    /// Refuses `tokenValidators` entries Sentry would refuse at start: an unknown name, or a
    /// built-in validator (which cannot be configured). Names match in any case. A name that
    /// is silently ignored would leave a user believing a validator is on.
    pub fn check_token_validators(&self) -> Result<(), Error> {
        for v in &self.spec.mtls.token_validators {
            match v.name.to_ascii_lowercase().as_str() {
                "jwks" => {}
                "kubernetes" | "insecure" => {
                    return Err(Error::Config(format!(
                        "invalid token validator {:?}: the built-in 'kubernetes' and 'insecure' validators cannot be configured manually",
                        v.name
                    )))
                }
                _ => {
                    return Err(Error::Config(format!(
                        "invalid token validator name {:?}; supported values: 'jwks'",
                        v.name
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Validated configuration of the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Mode.
    pub mode: Mode,
    /// gRPC address.
    pub listen: SocketAddr,
    /// Health address.
    pub healthz: SocketAddr,
    /// Metrics address, if enabled.
    pub metrics: Option<SocketAddr>,
    /// Credentials directory (standalone store).
    pub credentials_dir: PathBuf,
    /// File names in it.
    pub file_names: crate::store::file::FileNames,
    /// Control-plane trust domain.
    pub trust_domain: TrustDomain,
    /// Control-plane namespace.
    pub namespace: Namespace,
    /// Leaf policy.
    pub policy: IssuePolicy,
    /// Key type for a generated CA.
    pub ca_key_type: KeyType,
    /// Cluster domain.
    pub cluster_domain: String,
    /// Kubeconfig path.
    pub kubeconfig: Option<PathBuf>,
    /// Name of the Dapr Configuration (kubernetes mode) or its file (standalone).
    pub config_name: String,
    /// The Dapr Configuration in force.
    pub dapr_config: DaprConfiguration,
    /// Insecure validator may listen beyond loopback.
    pub insecure_allow_remote: bool,
    /// Validation cache TTL (zero disables).
    pub token_cache_ttl: Duration,
    /// Validation cache capacity.
    pub token_cache_size: usize,
    /// Concurrency bound.
    pub max_concurrent_requests: usize,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Store polling interval.
    pub reload_interval: Duration,
    /// Where the Kubernetes validator reads pods.
    pub pod_lookup: PodLookup,
    /// A TokenReview may confirm no audiences.
    pub token_review_audiences_optional: bool,
    /// The watcher may swap in CA material with unrelated roots.
    pub allow_ca_root_replacement: bool,
    /// JWKS-proven callers may get control-plane-namespace identities.
    pub jwks_allow_control_plane_namespace: bool,
    /// Rate limit per client address (`None`: off).
    pub peer_rate: Option<crate::rate_limit::Rate>,
    /// Rate limit per proven identity (`None`: off).
    pub identity_rate: Option<crate::rate_limit::Rate>,
    /// Signer name of the PodCertificateRequest signer (kubernetes mode), when enabled.
    pub pod_certificate_signer: Option<String>,
    /// Connection cap of the gRPC and OIDC listeners.
    pub max_connections: usize,
    /// Streams per gRPC connection.
    pub max_concurrent_streams: u32,
    /// TLS handshake and request header deadline.
    pub header_timeout: Duration,
    /// Idle gRPC connection deadline.
    pub idle_timeout: Duration,
    /// Log level.
    pub log_level: String,
    /// JSON logs.
    pub log_as_json: bool,
    /// JWT-SVID issuance, when enabled.
    pub jwt: Option<JwtSettings>,
    /// The OIDC discovery server, when enabled.
    pub oidc: Option<OidcSettings>,
}

/// JWT-SVID issuance settings.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// The signing key file.
    pub key_path: PathBuf,
    /// The published JWKS file.
    pub jwks_path: PathBuf,
    /// `iss` claim.
    pub issuer: Option<String>,
    /// Algorithm; `None` means "from the key", and RS256 for a generated key.
    pub algorithm: Option<JwsAlgorithm>,
    /// Fixed `kid`; `None` means the thumbprint.
    pub key_id: Option<String>,
    /// Token lifetime.
    pub ttl: Duration,
    /// How long a new key is published before it signs (`None`: the default rule).
    pub publish_delay: Option<Duration>,
}

/// OIDC discovery server settings.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Certificate chain and key files; `None` serves plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Path prefix: empty, or `/segment...` without a trailing slash.
    pub path_prefix: String,
    /// Fixed JWKS URI for the discovery document.
    pub jwks_uri: Option<String>,
    /// Allowed Host names (lower case, no port); empty allows any.
    pub allowed_hosts: Vec<String>,
}

/// The Sigil data directory for standalone use.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SIGIL_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Path::new(&d).join("sigil");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return Path::new(&h).join(".local/share/sigil");
    }
    PathBuf::from(".sigil")
}

impl ServeArgs {
    /// Validates the flags and folds in the Dapr Configuration (`dapr_config`, already
    /// loaded by the caller for kubernetes mode; read from the file here in standalone).
    pub fn into_config(self, dapr_config: Option<DaprConfiguration>) -> Result<Config, Error> {
        let jwt_flags = [
            ("--jwt-key-filename", self.jwt_key_filename.is_some()),
            ("--jwks-filename", self.jwks_filename.is_some()),
            ("--jwt-issuer", self.jwt_issuer.is_some()),
            (
                "--jwt-signing-algorithm",
                self.jwt_signing_algorithm.is_some(),
            ),
            ("--jwt-key-id", self.jwt_key_id.is_some()),
            ("--jwt-ttl", self.jwt_ttl.is_some()),
            (
                "--jwt-key-publish-delay",
                self.jwt_key_publish_delay.is_some(),
            ),
            ("--oidc-enabled", self.oidc_enabled),
        ];
        if !self.jwt_enabled {
            if let Some((flag, _)) = jwt_flags.iter().find(|(_, given)| *given) {
                return Err(Error::Config(format!(
                    "{flag} was given but JWT issuance is off (--jwt-enabled is not set)"
                )));
            }
        }
        let oidc_flags = [
            (
                "--oidc-server-listen-port",
                self.oidc_server_listen_port.is_some(),
            ),
            (
                "--oidc-server-listen-address",
                self.oidc_server_listen_address.is_some(),
            ),
            (
                "--oidc-server-tls-enabled",
                self.oidc_server_tls_enabled.is_some(),
            ),
            (
                "--oidc-server-tls-cert-file",
                self.oidc_server_tls_cert_file.is_some(),
            ),
            (
                "--oidc-server-tls-key-file",
                self.oidc_server_tls_key_file.is_some(),
            ),
            ("--oidc-jwks-uri", self.oidc_jwks_uri.is_some()),
            ("--oidc-path-prefix", self.oidc_path_prefix.is_some()),
            ("--oidc-allowed-hosts", self.oidc_allowed_hosts.is_some()),
        ];
        if !self.oidc_enabled {
            if let Some((flag, _)) = oidc_flags.iter().find(|(_, given)| *given) {
                return Err(Error::Config(format!(
                    "{flag} was given but the OIDC server is off (--oidc-enabled is not set)"
                )));
            }
        }

        let namespace = Namespace::new(&self.namespace)
            .map_err(|e| Error::Config(format!("NAMESPACE: {e}")))?;

        let dapr_config = match (dapr_config, self.mode) {
            (Some(c), _) => c,
            (None, Mode::Standalone) => load_config_file(&self.config)?,
            (None, Mode::Kubernetes) => DaprConfiguration::default(),
        };
        dapr_config.check_token_validators()?;
        let mtls = &dapr_config.spec.mtls;
        // Kubernetes mode: the control plane's trust domain is the Configuration's
        // controlPlaneTrustDomain (default cluster.local); an explicit --trust-domain other
        // than the standalone default is honoured when the Configuration names none.
        let trust_domain = match (self.mode, mtls.control_plane_trust_domain.as_deref()) {
            (Mode::Kubernetes, Some(td)) if !td.is_empty() => {
                TrustDomain::new(td).map_err(|e| {
                    Error::Config(format!("Configuration controlPlaneTrustDomain: {e}"))
                })?
            }
            (Mode::Kubernetes, _) if self.trust_domain == "localhost" => {
                TrustDomain::new(DEFAULT_CONTROL_PLANE_TRUST_DOMAIN).map_err(Error::Ca)?
            }
            _ => TrustDomain::new(&self.trust_domain)
                .map_err(|e| Error::Config(format!("--trust-domain: {e}")))?,
        };
        let from_config = |v: &Option<String>, what: &str| -> Result<Option<Duration>, Error> {
            v.as_deref()
                .map(|s| {
                    parse_duration(s)
                        .map_err(|e| Error::Config(format!("Configuration {what}: {e}")))
                })
                .transpose()
        };
        let ttl = self
            .workload_cert_ttl
            .or(from_config(&mtls.workload_cert_ttl, "workloadCertTTL")?)
            .unwrap_or(Duration::from_secs(24 * 3600));
        let skew = self
            .allowed_clock_skew
            .or(from_config(&mtls.allowed_clock_skew, "allowedClockSkew")?)
            .unwrap_or(Duration::from_secs(15 * 60));
        let policy = IssuePolicy {
            ttl: to_time(ttl),
            clock_skew: to_time(skew),
        };
        policy
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;

        let default_ip = match self.mode {
            Mode::Standalone => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Mode::Kubernetes => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let listen_ip = self.listen_address.unwrap_or(default_ip);
        let listen = SocketAddr::new(listen_ip, self.port);
        let healthz = SocketAddr::new(
            self.healthz_listen_address.unwrap_or(listen_ip),
            self.healthz_port,
        );
        let metrics = self.enable_metrics.then(|| {
            SocketAddr::new(
                self.metrics_listen_address.unwrap_or(listen_ip),
                self.metrics_port,
            )
        });

        let credentials_dir = match (&self.issuer_credentials, self.mode) {
            (Some(d), _) => d.clone(),
            (None, Mode::Standalone) => default_data_dir().join("credentials"),
            (None, Mode::Kubernetes) => PathBuf::from("/var/run/secrets/dapr.io/credentials"),
        };
        for (flag, name) in [
            ("--issuer-ca-filename", &self.issuer_ca_filename),
            (
                "--issuer-certificate-filename",
                &self.issuer_certificate_filename,
            ),
            ("--issuer-key-filename", &self.issuer_key_filename),
        ] {
            if name.is_empty() || name.contains('/') || name == "." || name == ".." {
                return Err(Error::Config(format!(
                    "{flag} must be a plain file name, got {name:?}"
                )));
            }
        }
        let jwt = if self.jwt_enabled {
            if self.mode == Mode::Kubernetes {
                // The names become keys of the dapr-trust-bundle Secret and ConfigMap.
                for (flag, name) in [
                    ("--jwt-key-filename", &self.jwt_key_filename),
                    ("--jwks-filename", &self.jwks_filename),
                ] {
                    if let Some(name) = name {
                        if !crate::store::kubernetes::is_valid_data_key(name) {
                            return Err(Error::Config(format!(
                                "{flag} names a key of the Secret dapr-trust-bundle in kubernetes mode and must match [-._a-zA-Z0-9]+, got {name:?}"
                            )));
                        }
                    }
                }
            }
            Some(self.jwt_settings(&credentials_dir)?)
        } else {
            None
        };
        let oidc = if self.oidc_enabled {
            let oidc = self.oidc_settings()?;
            // In a cluster the OIDC port is reached through Services and ingresses, where any
            // client picks the Host header: without a fixed issuer or an allow-list, the
            // issuer in the discovery document would be whatever a caller (or a cache in
            // front) made it.
            if self.mode == Mode::Kubernetes
                && oidc.allowed_hosts.is_empty()
                && self.jwt_issuer.is_none()
            {
                return Err(Error::Config(
                    "--oidc-enabled in kubernetes mode needs --jwt-issuer (a fixed issuer URL) or --oidc-allowed-hosts (the host names the OIDC endpoint answers for); without either, the issuer would follow the request's Host header".into(),
                ));
            }
            Some(oidc)
        } else {
            None
        };
        if self.max_concurrent_requests == 0 {
            return Err(Error::Config(
                "--max-concurrent-requests must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() || self.reload_interval.is_zero() {
            return Err(Error::Config(
                "--request-timeout and --reload-interval must be positive".into(),
            ));
        }
        if self.max_connections == 0 || self.max_concurrent_streams == 0 {
            return Err(Error::Config(
                "--max-connections and --max-concurrent-streams must be at least 1".into(),
            ));
        }
        if self.header_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err(Error::Config(
                "--header-timeout and --idle-timeout must be positive".into(),
            ));
        }
        let pod_certificate_signer = match &self.pod_certificate_signer {
            None => None,
            Some(_) if self.mode != Mode::Kubernetes => {
                return Err(Error::Config(
                    "--pod-certificate-signer needs --mode kubernetes".into(),
                ))
            }
            Some(name) => Some(
                crate::pod_certificates::SignerName::parse(name)
                    .map_err(|e| Error::Config(format!("--pod-certificate-signer: {e}")))?
                    .to_string(),
            ),
        };
        Ok(Config {
            mode: self.mode,
            listen,
            healthz,
            metrics,
            credentials_dir,
            file_names: crate::store::file::FileNames {
                ca: self.issuer_ca_filename,
                issuer_cert: self.issuer_certificate_filename,
                issuer_key: self.issuer_key_filename,
            },
            trust_domain,
            namespace,
            policy,
            ca_key_type: self.ca_key_type,
            cluster_domain: self.cluster_domain,
            kubeconfig: self.kubeconfig,
            config_name: self.config,
            dapr_config,
            insecure_allow_remote: self.insecure_allow_remote,
            token_cache_ttl: self.token_cache_ttl,
            token_cache_size: self.token_cache_size,
            max_concurrent_requests: self.max_concurrent_requests,
            request_timeout: self.request_timeout,
            reload_interval: self.reload_interval,
            pod_lookup: self.pod_lookup,
            token_review_audiences_optional: self.token_review_audiences_optional,
            allow_ca_root_replacement: self.allow_ca_root_replacement,
            jwks_allow_control_plane_namespace: self.jwks_allow_control_plane_namespace,
            peer_rate: rate(
                "--peer-rate-limit",
                self.peer_rate_limit,
                self.peer_rate_burst,
            )?,
            identity_rate: rate(
                "--identity-rate-limit",
                self.identity_rate_limit,
                self.identity_rate_burst,
            )?,
            pod_certificate_signer,
            max_connections: self.max_connections,
            max_concurrent_streams: self.max_concurrent_streams,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            log_level: self.log_level,
            log_as_json: self.log_as_json,
            jwt,
            oidc,
        })
    }

    fn jwt_settings(&self, credentials_dir: &Path) -> Result<JwtSettings, Error> {
        let path = |flag: &str, given: &Option<String>, default: &str| {
            let name = given.as_deref().unwrap_or(default);
            if name.is_empty() {
                return Err(Error::Config(format!("{flag} must not be empty")));
            }
            // Dapr ignores relative names; Sigil resolves them inside the credentials dir.
            Ok(credentials_dir.join(name))
        };
        let key_path = path("--jwt-key-filename", &self.jwt_key_filename, "jwt.key")?;
        let jwks_path = path("--jwks-filename", &self.jwks_filename, "jwks.json")?;
        if key_path == jwks_path {
            return Err(Error::Config(
                "--jwt-key-filename and --jwks-filename name the same file".into(),
            ));
        }
        // Writing a JWT file over a CA file would destroy the CA (in files, and in kubernetes
        // mode as a key of the same Secret, whose CA keys are Dapr's fixed names).
        let ca_names = [
            self.issuer_ca_filename.as_str(),
            self.issuer_certificate_filename.as_str(),
            self.issuer_key_filename.as_str(),
            crate::store::kubernetes::KEY_CA,
            crate::store::kubernetes::KEY_ISSUER_CERT,
            crate::store::kubernetes::KEY_ISSUER_KEY,
        ];
        for (flag, p) in [
            ("--jwt-key-filename", &key_path),
            ("--jwks-filename", &jwks_path),
        ] {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let same_file = ca_names.iter().any(|c| credentials_dir.join(c) == *p);
            if same_file || ca_names.contains(&name) {
                return Err(Error::Config(format!(
                    "{flag} {name:?} collides with a CA file name (ca.crt, issuer.crt, issuer.key or the --issuer-*-filename values); pick another name"
                )));
            }
        }
        let algorithm = self
            .jwt_signing_algorithm
            .as_deref()
            .map(|a| {
                a.parse::<JwsAlgorithm>()
                    .map_err(|e| Error::Config(format!("--jwt-signing-algorithm: {e}")))
            })
            .transpose()?;
        let ttl = match &self.jwt_ttl {
            Some(t) => parse_duration(t).map_err(|e| Error::Config(format!("--jwt-ttl: {e}")))?,
            None => Duration::from_secs(24 * 3600),
        };
        if ttl.is_zero() {
            return Err(Error::Config("--jwt-ttl must be positive".into()));
        }
        for (flag, v) in [
            ("--jwt-issuer", &self.jwt_issuer),
            ("--jwt-key-id", &self.jwt_key_id),
        ] {
            if let Some(v) = v {
                if v.trim().is_empty() || v.chars().any(char::is_control) || v.len() > 512 {
                    return Err(Error::Config(format!(
                        "{flag} must be a non-empty printable string of at most 512 bytes"
                    )));
                }
            }
        }
        Ok(JwtSettings {
            key_path,
            jwks_path,
            issuer: self.jwt_issuer.clone(),
            algorithm,
            key_id: self.jwt_key_id.clone(),
            ttl,
            publish_delay: self.jwt_key_publish_delay,
        })
    }

    fn oidc_settings(&self) -> Result<OidcSettings, Error> {
        let listen = SocketAddr::new(
            self.oidc_server_listen_address
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            self.oidc_server_listen_port.unwrap_or(9080),
        );
        let tls = if self.oidc_server_tls_enabled.unwrap_or(true) {
            match (&self.oidc_server_tls_cert_file, &self.oidc_server_tls_key_file) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                _ => return Err(Error::Config(
                    "the OIDC server serves TLS by default: give --oidc-server-tls-cert-file and --oidc-server-tls-key-file, or --oidc-server-tls-enabled=false to serve plain HTTP (e.g. behind a TLS-terminating proxy)".into(),
                )),
            }
        } else {
            if self.oidc_server_tls_cert_file.is_some() || self.oidc_server_tls_key_file.is_some() {
                return Err(Error::Config(
                    "--oidc-server-tls-cert-file/--oidc-server-tls-key-file were given with --oidc-server-tls-enabled=false".into(),
                ));
            }
            None
        };
        let path_prefix = match self.oidc_path_prefix.as_deref().map(str::trim) {
            None | Some("") | Some("/") => String::new(),
            Some(p) => {
                let p = format!("/{}", p.trim_matches('/'));
                let ok = p.split('/').skip(1).all(|seg| {
                    !seg.is_empty()
                        && seg != "."
                        && seg != ".."
                        && seg
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
                });
                if !ok {
                    return Err(Error::Config(format!(
                        "--oidc-path-prefix {p:?}: use path segments of letters, digits, '-', '.', '_' or '~'"
                    )));
                }
                p
            }
        };
        if let Some(uri) = &self.oidc_jwks_uri {
            if !(uri.starts_with("https://") || uri.starts_with("http://"))
                || uri.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::Config(format!(
                    "--oidc-jwks-uri {uri:?} must be an absolute http(s) URL"
                )));
            }
        }
        let allowed_hosts = self
            .oidc_allowed_hosts
            .iter()
            .flatten()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Ok(OidcSettings {
            listen,
            tls,
            path_prefix,
            jwks_uri: self.oidc_jwks_uri.clone(),
            allowed_hosts,
        })
    }
}

fn load_config_file(name: &str) -> Result<DaprConfiguration, Error> {
    let path = Path::new(name);
    if !path.is_file() {
        tracing::warn!(
            config = name,
            "Dapr Configuration file not found; using defaults (workloadCertTTL 24h, allowedClockSkew 15m)"
        );
        return Ok(DaprConfiguration::default());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    DaprConfiguration::from_yaml(&text)
}

impl Config {
    /// Sentry's own SPIFFE ID, which clients pin: `spiffe://<td>/ns/<ns>/dapr-sentry`.
    pub fn sentry_id(&self) -> sigil_pki::SpiffeId {
        sigil_pki::SpiffeId::workload(
            &self.trust_domain,
            &self.namespace,
            &sigil_pki::AppId::new("dapr-sentry").expect("constant is valid"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn args(extra: &[&str]) -> ServeArgs {
        let mut v = vec!["t"];
        v.extend_from_slice(extra);
        T::try_parse_from(v).unwrap().args
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
            assert!(T::try_parse_from(["t", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn token_validator_names_follow_dapr() {
        let conf = |name: &str| {
            DaprConfiguration::from_yaml(&format!(
                "spec:\n  mtls:\n    tokenValidators:\n      - name: {name}\n"
            ))
            .unwrap()
        };
        for ok in ["jwks", "JWKS", "Jwks"] {
            let c = conf(ok);
            assert!(c.check_token_validators().is_ok(), "{ok}");
            assert!(c.jwks_options().is_some(), "{ok}");
        }
        for bad in ["kubernetes", "INSECURE", "jwk", "oidc"] {
            let e = conf(bad).check_token_validators().unwrap_err().to_string();
            assert!(e.contains("invalid token validator"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("365d").unwrap(),
            Duration::from_secs(365 * 86400)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        // What Go's Duration.String() prints, as Dapr's framework passes it.
        assert_eq!(parse_duration("2h0m0s").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1.5µs").unwrap(), Duration::from_nanos(1500));
        assert_eq!(parse_duration("3us").unwrap(), Duration::from_micros(3));
        assert_eq!(parse_duration("7ns").unwrap(), Duration::from_nanos(7));
        for bad in ["", "h", "10", "10x", "-5m", "1.5.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        // Out of range is an error, never a panic or a wrapped value.
        for huge in [
            "10000000000000000000s",
            "10000000000000000000s10000000000000000000s",
            "1e400s",
            "293y",
            "106752d",
            "2562048h",
        ] {
            assert!(parse_duration(huge).is_err(), "{huge:?} accepted");
        }
        assert_eq!(
            parse_duration("106751d").unwrap(),
            Duration::from_secs(106_751 * 86_400)
        );
    }

    proptest::proptest! {
        // Whatever the text, parsing ends in a value within Go's range or an error.
        #[test]
        fn durations_never_panic(text in "[0-9.]{0,24}(ns|us|ms|s|m|h|d|x)?([0-9.]{0,24}(s|h|d))?") {
            if let Ok(d) = parse_duration(&text) {
                proptest::prop_assert!(d <= MAX_DURATION);
            }
        }
    }

    #[test]
    fn defaults_match_dapr_and_bind_loopback() {
        let c = args(&["--config", "/nonexistent/daprsystem"])
            .into_config(None)
            .unwrap();
        assert_eq!(c.listen, "127.0.0.1:50001".parse().unwrap());
        assert_eq!(c.healthz.port(), 8080);
        assert_eq!(c.metrics.unwrap().port(), 9090);
        assert_eq!(c.trust_domain.as_str(), "localhost");
        assert_eq!(c.policy, IssuePolicy::default());
        assert_eq!(c.file_names, crate::store::file::FileNames::default());
        assert_eq!(
            c.sentry_id().to_string(),
            "spiffe://localhost/ns/default/dapr-sentry"
        );
    }

    #[test]
    fn configuration_file_sets_policy_and_flags_override() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.yaml");
        std::fs::write(
            &f,
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: daprsystem\nspec:\n  mtls:\n    enabled: true\n    workloadCertTTL: 1h\n    allowedClockSkew: 1m\n",
        )
        .unwrap();
        let c = args(&["--config", f.to_str().unwrap()])
            .into_config(None)
            .unwrap();
        assert_eq!(c.policy.ttl, time::Duration::hours(1));
        assert_eq!(c.policy.clock_skew, time::Duration::minutes(1));
        let c = args(&["--config", f.to_str().unwrap(), "--workload-cert-ttl", "2h"])
            .into_config(None)
            .unwrap();
        assert_eq!(c.policy.ttl, time::Duration::hours(2));
    }

    #[test]
    fn jwt_and_oidc_flags_without_their_feature_fail_loudly() {
        for (flags, names) in [
            (&["--jwt-issuer", "x"][..], "--jwt-issuer"),
            (&["--jwt-key-filename", "k"][..], "--jwt-key-filename"),
            (&["--jwks-filename", "k"][..], "--jwks-filename"),
            (
                &["--jwt-signing-algorithm", "RS256"][..],
                "--jwt-signing-algorithm",
            ),
            (&["--jwt-key-id", "k"][..], "--jwt-key-id"),
            (&["--jwt-ttl", "1h"][..], "--jwt-ttl"),
            (&["--oidc-enabled"][..], "--oidc-enabled"),
        ] {
            let e = args(flags).into_config(None).unwrap_err().to_string();
            assert!(e.contains(names) && e.contains("--jwt-enabled"), "{e}");
        }
        for (flags, name) in [
            (
                &["--oidc-server-listen-port", "1"][..],
                "--oidc-server-listen-port",
            ),
            (
                &["--oidc-server-listen-address", "127.0.0.1"][..],
                "--oidc-server-listen-address",
            ),
            (
                &["--oidc-server-tls-enabled=false"][..],
                "--oidc-server-tls-enabled",
            ),
            (
                &["--oidc-server-tls-cert-file", "c"][..],
                "--oidc-server-tls-cert-file",
            ),
            (
                &["--oidc-server-tls-key-file", "k"][..],
                "--oidc-server-tls-key-file",
            ),
            (&["--oidc-jwks-uri", "https://x/j"][..], "--oidc-jwks-uri"),
            (&["--oidc-path-prefix", "/p"][..], "--oidc-path-prefix"),
            (&["--oidc-allowed-hosts", "a,b"][..], "--oidc-allowed-hosts"),
        ] {
            let mut v = vec!["--jwt-enabled"];
            v.extend_from_slice(flags);
            let e = args(&v).into_config(None).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("--oidc-enabled"), "{e}");
        }
    }

    #[test]
    fn jwt_and_oidc_settings() {
        let c = args(&[
            "--config",
            "/nonexistent",
            "--issuer-credentials",
            "/creds",
            "--jwt-enabled",
        ])
        .into_config(None)
        .unwrap();
        let j = c.jwt.unwrap();
        assert_eq!(j.key_path, PathBuf::from("/creds/jwt.key"));
        assert_eq!(j.jwks_path, PathBuf::from("/creds/jwks.json"));
        assert_eq!(j.ttl, Duration::from_secs(86400));
        assert_eq!(j.algorithm, None);
        assert!(c.oidc.is_none());
        let c = args(&[
            "--config",
            "/nonexistent",
            "--issuer-credentials",
            "/creds",
            "--jwt-enabled",
            "--jwt-key-filename",
            "/abs/k.pem",
            "--jwks-filename",
            "sub/keys.json",
            "--jwt-signing-algorithm",
            "es256",
            "--jwt-ttl",
            "1h",
            "--oidc-enabled",
            "--oidc-server-tls-enabled=false",
            "--oidc-path-prefix",
            "sentry/",
            "--oidc-allowed-hosts",
            "Issuer.Example, other.example",
        ])
        .into_config(None)
        .unwrap();
        let j = c.jwt.unwrap();
        assert_eq!(j.key_path, PathBuf::from("/abs/k.pem"));
        assert_eq!(j.jwks_path, PathBuf::from("/creds/sub/keys.json"));
        assert_eq!(j.algorithm, Some(JwsAlgorithm::Es256));
        assert_eq!(j.ttl, Duration::from_secs(3600));
        let o = c.oidc.unwrap();
        assert_eq!(o.listen, "127.0.0.1:9080".parse().unwrap());
        assert!(o.tls.is_none());
        assert_eq!(o.path_prefix, "/sentry");
        assert_eq!(o.allowed_hosts, vec!["issuer.example", "other.example"]);

        // A JWT file may not take a CA file's name.
        for (flag, name) in [
            ("--jwt-key-filename", "issuer.key"),
            ("--jwks-filename", "ca.crt"),
            ("--jwks-filename", "/elsewhere/issuer.crt"),
            ("--jwt-key-filename", "mine.pem"),
        ] {
            let e = args(&[
                "--config",
                "/nonexistent",
                "--issuer-credentials",
                "/creds",
                "--issuer-key-filename",
                "mine.pem",
                "--jwt-enabled",
                flag,
                name,
            ])
            .into_config(None)
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("collides with a CA file name"),
                "{flag} {name}: {e}"
            );
        }

        // TLS is on by default and needs its files.
        let e = args(&["--jwt-enabled", "--oidc-enabled"])
            .into_config(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--oidc-server-tls-cert-file"), "{e}");
        let c = args(&[
            "--config",
            "/nonexistent",
            "--jwt-enabled",
            "--oidc-enabled",
            "--oidc-server-tls-enabled",
            "--oidc-server-tls-cert-file",
            "/c.pem",
            "--oidc-server-tls-key-file",
            "/k.pem",
        ])
        .into_config(None)
        .unwrap();
        assert!(c.oidc.unwrap().tls.is_some());
        // Kubernetes mode: the names are Secret keys, so they must be plain key names.
        let c = args(&["--mode", "kubernetes", "--jwt-enabled"])
            .into_config(Some(DaprConfiguration::default()))
            .unwrap();
        assert!(c.jwt.unwrap().key_path.ends_with("jwt.key"));
        let e = args(&[
            "--mode",
            "kubernetes",
            "--jwt-enabled",
            "--jwks-filename",
            "a/jwks.json",
        ])
        .into_config(Some(DaprConfiguration::default()))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--jwks-filename") && e.contains("kubernetes mode"),
            "{e}"
        );
        for bad in [
            &["--jwt-signing-algorithm", "HS256"][..],
            &["--jwt-ttl", "0"][..],
            &["--jwt-key-id", ""][..],
            &["--jwks-filename", "jwt.key"][..],
        ] {
            let mut v = vec!["--jwt-enabled"];
            v.extend_from_slice(bad);
            assert!(args(&v).into_config(None).is_err(), "{bad:?}");
        }
        // Kubernetes mode: OIDC needs a fixed issuer or an allow-list.
        let kube_oidc = |extra: &[&str]| {
            let mut v = vec![
                "--mode",
                "kubernetes",
                "--jwt-enabled",
                "--oidc-enabled",
                "--oidc-server-tls-enabled=false",
            ];
            v.extend_from_slice(extra);
            args(&v).into_config(Some(DaprConfiguration::default()))
        };
        let e = kube_oidc(&[]).unwrap_err().to_string();
        assert!(
            e.contains("--jwt-issuer") && e.contains("--oidc-allowed-hosts"),
            "{e}"
        );
        assert!(kube_oidc(&["--jwt-issuer", "https://issuer.example"]).is_ok());
        assert!(kube_oidc(&["--oidc-allowed-hosts", "issuer.example"]).is_ok());
        for bad in [
            &["--oidc-path-prefix", "/a/../b"][..],
            &["--oidc-jwks-uri", "ftp://x"][..],
        ] {
            let mut v = vec![
                "--jwt-enabled",
                "--oidc-enabled",
                "--oidc-server-tls-enabled=false",
            ];
            v.extend_from_slice(bad);
            assert!(args(&v).into_config(None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kubernetes_mode_trust_domain_comes_from_the_configuration() {
        let c = args(&["--mode", "kubernetes"])
            .into_config(Some(DaprConfiguration::default()))
            .unwrap();
        assert_eq!(c.trust_domain.as_str(), "cluster.local");
        assert_eq!(c.listen.ip(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let cfg = DaprConfiguration::from_yaml(
            "spec:\n  mtls:\n    controlPlaneTrustDomain: example.org\n",
        )
        .unwrap();
        let c = args(&["--mode", "kubernetes", "--trust-domain", "other.org"])
            .into_config(Some(cfg))
            .unwrap();
        assert_eq!(c.trust_domain.as_str(), "example.org");
        let c = args(&["--mode", "kubernetes", "--trust-domain", "other.org"])
            .into_config(Some(DaprConfiguration::default()))
            .unwrap();
        assert_eq!(c.trust_domain.as_str(), "other.org");
    }

    #[test]
    fn bad_values_are_refused_at_start() {
        assert!(args(&["--trust-domain", "Bad"]).into_config(None).is_err());
        assert!(args(&["--issuer-key-filename", "../k"])
            .into_config(None)
            .is_err());
        assert!(args(&["--workload-cert-ttl", "0"])
            .into_config(None)
            .is_err());
        assert!(args(&["--max-concurrent-requests", "0"])
            .into_config(None)
            .is_err());
    }
}
