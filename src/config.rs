//! Configuration of `sigil serve`: one typed struct built from flags and environment
//! variables (Dapr Sentry's names and defaults), plus the Dapr `Configuration` document,
//! validated once at start. Nothing reads flags after [`ServeArgs::into_config`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;
use sigil_pki::{IssuePolicy, KeyType, Namespace, TrustDomain};

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

/// Parses `24h`, `15m`, `90s`, `500ms`, `365d`, or combinations such as `1h30m`.
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
        total +=
            Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?}: out of range"))?;
    }
    Ok(total)
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
    /// Serve metrics.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
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
    #[arg(long, default_value_t = false)]
    pub log_as_json: bool,
    /// Namespace of the control plane.
    #[arg(
        long = "namespace",
        env = "NAMESPACE",
        default_value = "default",
        hide = true
    )]
    pub namespace: String,

    /// Issue JWT-SVIDs with every certificate (not available yet in Sigil: refused).
    #[arg(long, default_value_t = false)]
    pub jwt_enabled: bool,
    /// JWT signing key file name.
    #[arg(long)]
    pub jwt_key_filename: Option<String>,
    /// JWKS file name.
    #[arg(long)]
    pub jwks_filename: Option<String>,
    /// JWT `iss` claim.
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// JWT signing algorithm.
    #[arg(long)]
    pub jwt_signing_algorithm: Option<String>,
    /// JWT key id.
    #[arg(long)]
    pub jwt_key_id: Option<String>,
    /// JWT lifetime.
    #[arg(long)]
    pub jwt_ttl: Option<String>,
    /// Serve OIDC discovery (requires JWT).
    #[arg(long, default_value_t = false)]
    pub oidc_enabled: bool,

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

    /// The `jwks` validator's options, if configured.
    pub fn jwks_options(&self) -> Option<&TokenValidatorSpec> {
        self.spec
            .mtls
            .token_validators
            .iter()
            .find(|v| v.name == "jwks")
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
    /// Log level.
    pub log_level: String,
    /// JSON logs.
    pub log_as_json: bool,
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

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
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
        ];
        if self.jwt_enabled || self.oidc_enabled {
            return Err(Error::Config(
                "JWT issuance and the OIDC server (--jwt-enabled, --oidc-enabled) are not available in this version of Sigil".into(),
            ));
        }
        if let Some((flag, _)) = jwt_flags.iter().find(|(_, given)| *given) {
            return Err(Error::Config(format!(
                "{flag} was given but JWT issuance is off (--jwt-enabled is not set)"
            )));
        }

        let namespace = Namespace::new(&self.namespace)
            .map_err(|e| Error::Config(format!("NAMESPACE: {e}")))?;

        let dapr_config = match (dapr_config, self.mode) {
            (Some(c), _) => c,
            (None, Mode::Standalone) => load_config_file(&self.config)?,
            (None, Mode::Kubernetes) => DaprConfiguration::default(),
        };
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
            log_level: self.log_level,
            log_as_json: self.log_as_json,
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
    fn durations() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("365d").unwrap(),
            Duration::from_secs(365 * 86400)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "h", "10", "10x", "-5m", "1.5.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
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
    fn jwt_flags_without_jwt_fail_loudly() {
        let e = args(&["--jwt-issuer", "x"])
            .into_config(None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--jwt-issuer") && e.contains("--jwt-enabled"),
            "{e}"
        );
        let e = args(&["--jwt-enabled"])
            .into_config(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not available"), "{e}");
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
