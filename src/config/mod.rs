//! Configuration of `sigil serve`: one typed struct built from flags and environment
//! variables (Dapr Sentry's names and defaults, [`flags`]), plus the Dapr `Configuration`
//! document ([`dapr`]), validated once at start; JWT and OIDC settings are resolved in
//! [`jwt`]. Nothing reads flags after [`ServeArgs::into_config`].
//!
//! Everything here sits below the rest of the service: what the configuration parses into
//! comes from leaf modules that import nothing back, so any part of the server may read its
//! [`Config`].

pub mod dapr;
pub mod duration;
pub mod flags;
pub mod jwt;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sigil_pki::clock::to_time;
use sigil_pki::{IssuePolicy, KeyType, Namespace, TrustDomain};

// Every caller that builds a Config names these: its two inputs and its mode.
pub use dapr::DaprConfiguration;
pub use flags::{Mode, ServeArgs};

use duration::parse_duration;
use jwt::{JwtSettings, OidcSettings};

use crate::pod_certificates::signer_name::SignerName;
use crate::validator::pod_lookup::PodLookup;
use crate::Error;

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
    /// gRPC: HTTP/2 keepalive PING after this much silence from the client.
    pub keepalive_interval: Duration,
    /// gRPC: time to answer a keepalive PING before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Log level.
    pub log_level: String,
    /// JSON logs.
    pub log_as_json: bool,
    /// JWT-SVID issuance, when enabled.
    pub jwt: Option<JwtSettings>,
    /// The OIDC discovery server, when enabled.
    pub oidc: Option<OidcSettings>,
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

impl ServeArgs {
    /// Validates the flags and folds in the Dapr Configuration (`dapr_config`, already
    /// loaded by the caller for kubernetes mode; read from the file here in standalone).
    pub fn into_config(self, dapr_config: Option<DaprConfiguration>) -> Result<Config, Error> {
        self.check_jwt_and_oidc_flags()?;

        let namespace = Namespace::new(&self.namespace)
            .map_err(|e| Error::Config(format!("NAMESPACE: {e}")))?;

        let dapr_config = match (dapr_config, self.mode) {
            (Some(c), _) => c,
            (None, Mode::Standalone) => dapr::load_file(&self.config)?,
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
                TrustDomain::new(dapr::DEFAULT_CONTROL_PLANE_TRUST_DOMAIN).map_err(Error::Ca)?
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
        let jwt = self.jwt(&credentials_dir)?;
        let oidc = self.oidc()?;
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
        if self.keepalive_interval.is_zero() || self.keepalive_timeout.is_zero() {
            return Err(Error::Config(
                "--keepalive-interval and --keepalive-timeout must be positive".into(),
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
                SignerName::parse(name)
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
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            log_level: self.log_level,
            log_as_json: self.log_as_json,
            jwt,
            oidc,
        })
    }
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
    use flags::parse_for_test as args;

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
        assert_eq!(c.keepalive_interval, Duration::from_secs(60));
        assert_eq!(c.keepalive_timeout, Duration::from_secs(20));
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
        for flag in ["--keepalive-interval", "--keepalive-timeout"] {
            assert!(args(&[flag, "0s"]).into_config(None).is_err(), "{flag}");
        }
    }
}
