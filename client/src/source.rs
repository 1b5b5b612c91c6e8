//! [`SvidSource`]: obtains the workload's X.509-SVID from Sentry, checks it, holds it and
//! renews it in the background; reloads the trust anchors; reports what it is doing.
//!
//! Failure rules: a certificate is only served after every check in
//! [`crate::svid`] passed; a failed renewal keeps the previous certificate until it expires;
//! an unreachable CA at start is retried with backoff, never turned into an exit.

use sigil_pki::clock::to_time;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sigil_pki::{AppId, KeyType, Namespace, PrivateKey, SpiffeId, TrustDomain};
use sigil_proto::{SignCertificateRequest, TokenValidator};
use time::OffsetDateTime;
use tokio::sync::{watch, Notify};
use zeroize::Zeroizing;

use crate::anchors::{
    parse_roots, AnchorSet, FilePoll, PollResult, TrustAnchorSource, TrustAnchors,
};
use crate::schedule::{self, ClockReading, RenewalPolicy};
use crate::sentry::{self, SentryEndpoint};
use crate::svid::{self, Svid};
use crate::Error;

/// Largest token file read.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Which of Sentry's validators checks our token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validator {
    /// No token check (standalone development).
    Insecure,
    /// Kubernetes service-account token (TokenReview + pod).
    Kubernetes,
    /// JWT checked against a JWKS.
    Jwks,
}

impl Validator {
    fn wire(self) -> TokenValidator {
        match self {
            Validator::Insecure => TokenValidator::Insecure,
            Validator::Kubernetes => TokenValidator::Kubernetes,
            Validator::Jwks => TokenValidator::Jwks,
        }
    }
}

impl std::str::FromStr for Validator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "insecure" => Ok(Validator::Insecure),
            "kubernetes" => Ok(Validator::Kubernetes),
            "jwks" => Ok(Validator::Jwks),
            other => Err(format!(
                "unknown validator {other:?} (expected insecure, kubernetes or jwks)"
            )),
        }
    }
}

/// Everything a source needs. Defaults follow daprd.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Sentry's `host:port`.
    pub sentry_address: String,
    /// The app id (daprd: `SENTRY_LOCAL_IDENTITY` or the app id).
    pub app_id: AppId,
    /// The workload's namespace (daprd: `NAMESPACE`).
    pub namespace: Namespace,
    /// The trust domain asked for. Default `public` (Sentry's default). With the Kubernetes
    /// validator Sentry decides it from the app's Configuration; set it to match, since a
    /// certificate for another identity is refused.
    pub trust_domain: TrustDomain,
    /// Sentry's trust domain (daprd: `DAPR_CONTROLPLANE_TRUST_DOMAIN`, default `localhost`).
    pub control_plane_trust_domain: TrustDomain,
    /// Sentry's namespace (daprd: `DAPR_CONTROLPLANE_NAMESPACE`, default `default`).
    pub control_plane_namespace: Namespace,
    /// Token file, read on every request (projected tokens rotate). None sends no token.
    pub token_file: Option<PathBuf>,
    /// Validator to ask for; None leaves the choice to Sentry's default.
    pub validator: Option<Validator>,
    /// Algorithm of the keys generated (a new one per request). Default Ed25519. RSA is
    /// refused: *ring* cannot generate RSA keys.
    pub key_type: KeyType,
    /// Configured trust anchors.
    pub trust_anchors: TrustAnchorSource,
    /// Also trust the roots Sentry sends with each certificate (as daprd does). Default true.
    pub trust_ca_roots: bool,
    /// Renewal schedule.
    pub renewal: RenewalPolicy,
    /// Limit per try. Default 3 s (daprd's).
    pub try_timeout: Duration,
    /// Tries per request. Default 3.
    pub tries: u32,
    /// How often an anchors file is re-read. Default 5 s.
    pub anchors_poll_interval: Duration,
    /// Extra audiences for JWT-SVIDs (daprd: `--sentry-request-jwt-audiences`); the server
    /// adds the trust domain. Tokens come only from servers with JWT issuance on.
    pub jwt_audiences: Vec<String>,
}

fn parse<T: std::str::FromStr<Err = sigil_pki::Error>>(what: &str, v: &str) -> Result<T, Error> {
    v.parse::<T>()
        .map_err(|e| Error::Config(format!("{what}: {e}")))
}

impl SourceConfig {
    /// A configuration with daprd's defaults for everything but the essentials.
    pub fn new(
        sentry_address: impl Into<String>,
        app_id: &str,
        namespace: &str,
        trust_anchors: TrustAnchorSource,
    ) -> Result<Self, Error> {
        Ok(Self {
            sentry_address: sentry_address.into(),
            app_id: parse("app id", app_id)?,
            namespace: parse("namespace", namespace)?,
            trust_domain: parse("trust domain", "public")?,
            control_plane_trust_domain: parse("control-plane trust domain", "localhost")?,
            control_plane_namespace: parse("control-plane namespace", "default")?,
            token_file: None,
            validator: None,
            key_type: KeyType::Ed25519,
            trust_anchors,
            trust_ca_roots: true,
            renewal: RenewalPolicy::default(),
            try_timeout: Duration::from_secs(3),
            tries: 3,
            anchors_poll_interval: Duration::from_secs(5),
            jwt_audiences: Vec::new(),
        })
    }

    /// The workload's SPIFFE ID: `spiffe://<td>/ns/<ns>/<app-id>`.
    pub fn spiffe_id(&self) -> SpiffeId {
        SpiffeId::workload(&self.trust_domain, &self.namespace, &self.app_id)
    }

    /// The ID Sentry must present: `spiffe://<cp-td>/ns/<cp-ns>/dapr-sentry`.
    pub fn sentry_id(&self) -> SpiffeId {
        SpiffeId::workload(
            &self.control_plane_trust_domain,
            &self.control_plane_namespace,
            &AppId::new("dapr-sentry").expect("constant is a valid app id"),
        )
    }

    fn validate(&self) -> Result<(), Error> {
        if self.key_type == KeyType::Rsa {
            return Err(Error::Config(
                "RSA keys cannot be generated here (the ring crypto library has no RSA key generation); use ed25519, p256 or p384".into(),
            ));
        }
        if self.sentry_address.trim().is_empty() {
            return Err(Error::Config("the CA address is empty".into()));
        }
        if self.try_timeout.is_zero() || self.anchors_poll_interval.is_zero() {
            return Err(Error::Config(
                "try timeout and anchors poll interval must be positive".into(),
            ));
        }
        self.renewal.validate().map_err(Error::Config)
    }
}

/// A snapshot of what the source is doing, for health checks, metrics and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStatus {
    /// The SPIFFE ID asked for.
    pub spiffe_id: String,
    /// Serial of the certificate held.
    pub serial: Option<String>,
    /// NotBefore of the certificate held.
    pub not_before: Option<OffsetDateTime>,
    /// NotAfter of the certificate held.
    pub not_after: Option<OffsetDateTime>,
    /// Certificates accepted so far (the first one included).
    pub renewals: u64,
    /// Failed requests so far (including refused certificates).
    pub failures: u64,
    /// Failed requests since the last success.
    pub consecutive_failures: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<OffsetDateTime>,
    /// When the last certificate was accepted.
    pub last_success_at: Option<OffsetDateTime>,
    /// When the next request is planned.
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Version of the trust anchors in force.
    pub anchors_version: u64,
    /// Why the anchors file could not be reloaded, while that lasts.
    pub anchors_error: Option<String>,
    /// Clock jumps or suspends noticed.
    pub clock_jumps: u64,
}

impl SourceStatus {
    /// Whether a certificate is held and valid at `now`.
    pub fn has_valid_certificate(&self, now: OffsetDateTime) -> bool {
        matches!((self.not_before, self.not_after), (Some(nb), Some(na)) if nb <= now && now < na)
    }
}

struct Inner {
    config: SourceConfig,
    id: SpiffeId,
    endpoint: SentryEndpoint,
    anchors: Arc<TrustAnchors>,
    svid: watch::Sender<Option<Arc<Svid>>>,
    status: Mutex<SourceStatus>,
    renew_now: Notify,
    stop: watch::Sender<bool>,
}

/// Holds the current SVID and keeps it fresh. Cheap to clone; all clones share one state.
/// Background tasks run until [`SvidSource::stop`] is called.
#[derive(Clone)]
pub struct SvidSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SvidSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SvidSource")
            .field("id", &self.inner.id.to_string())
            .field("sentry", &self.inner.endpoint.address)
            .finish()
    }
}

enum Wake {
    Due,
    Asked,
    ClockJump,
    Stop,
}

fn jitter_sample() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.0;
    }
    // 53 random bits -> [0, 1) -> [-1, 1).
    let unit = (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
    unit * 2.0 - 1.0
}

fn std_duration(d: time::Duration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

impl SvidSource {
    /// Checks the configuration, loads the trust anchors, and starts the background tasks.
    /// Returns at once: the first certificate arrives later (see [`SvidSource::wait_for_svid`]);
    /// an unreachable CA is retried, not reported as an error here.
    pub fn start(config: SourceConfig) -> Result<Self, Error> {
        config.validate()?;
        let raw = config.trust_anchors.read()?;
        let roots = parse_roots(&raw).map_err(|reason| Error::TrustAnchors {
            source_name: config.trust_anchors.describe(),
            reason,
        })?;
        let id = config.spiffe_id();
        let endpoint = SentryEndpoint {
            address: config.sentry_address.clone(),
            server_id: config.sentry_id(),
            try_timeout: config.try_timeout,
            tries: config.tries,
        };
        let status = SourceStatus {
            spiffe_id: id.to_string(),
            ..Default::default()
        };
        let inner = Arc::new(Inner {
            id,
            endpoint,
            anchors: Arc::new(TrustAnchors::new(roots)),
            svid: watch::Sender::new(None),
            status: Mutex::new(status),
            renew_now: Notify::new(),
            stop: watch::Sender::new(false),
            config,
        });
        tokio::spawn(renew_loop(inner.clone()));
        if matches!(inner.config.trust_anchors, TrustAnchorSource::File(_)) {
            tokio::spawn(poll_anchors(inner.clone(), raw));
        }
        Ok(Self { inner })
    }

    /// The certificate held now, if any (it may have expired if the CA has been
    /// unreachable for its whole lifetime: check [`Svid::is_valid_at`]).
    pub fn current(&self) -> Option<Arc<Svid>> {
        self.inner.svid.borrow().clone()
    }

    /// A receiver that sees every new certificate.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Svid>>> {
        self.inner.svid.subscribe()
    }

    /// Waits for the first certificate (or returns the current one). Wrap it in a timeout.
    pub async fn wait_for_svid(&self) -> Result<Arc<Svid>, Error> {
        let mut rx = self.subscribe();
        let mut stop = self.inner.stop.subscribe();
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                return Ok(s);
            }
            if *stop.borrow() {
                return Err(Error::Stopped);
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(Error::Stopped) },
                _ = stop.changed() => {}
            }
        }
    }

    /// A snapshot of the source's state.
    pub fn status(&self) -> SourceStatus {
        let mut s = self
            .inner
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.anchors_version = self.inner.anchors.current().version();
        s
    }

    /// The trust anchors in force.
    pub fn trust_anchors(&self) -> Arc<AnchorSet> {
        self.inner.anchors.current()
    }

    /// A receiver that sees every change of the trust anchors.
    pub fn subscribe_trust_anchors(&self) -> watch::Receiver<Arc<AnchorSet>> {
        self.inner.anchors.subscribe()
    }

    /// The SPIFFE ID this source asks for.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.inner.id
    }

    /// Renews now instead of at the scheduled time.
    pub fn renew_now(&self) {
        self.inner.renew_now.notify_one();
    }

    /// Stops the background tasks. The certificate held stays readable.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    pub(crate) fn svid_receiver(&self) -> watch::Receiver<Option<Arc<Svid>>> {
        self.inner.svid.subscribe()
    }

    pub(crate) fn anchors(&self) -> Arc<TrustAnchors> {
        self.inner.anchors.clone()
    }
}

impl Inner {
    fn status(&self) -> std::sync::MutexGuard<'_, SourceStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn read_token(&self) -> Result<Zeroizing<String>, Error> {
        let Some(path) = &self.config.token_file else {
            return Ok(Zeroizing::new(String::new()));
        };
        let err = |reason: String| Error::Token {
            path: path.display().to_string(),
            reason,
        };
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| err(e.to_string()))?;
        if meta.len() > MAX_TOKEN_BYTES {
            return Err(err(format!("{} bytes; at most 64 KiB is read", meta.len())));
        }
        let bytes = Zeroizing::new(
            tokio::fs::read(path)
                .await
                .map_err(|e| err(e.to_string()))?,
        );
        let text = std::str::from_utf8(&bytes).map_err(|_| err("not UTF-8".into()))?;
        Ok(Zeroizing::new(text.trim().to_string()))
    }

    /// One request: fresh key, CSR, token, call, checks.
    async fn obtain(&self) -> Result<Arc<Svid>, Error> {
        let key =
            PrivateKey::generate(self.config.key_type).map_err(|e| Error::Key(e.to_string()))?;
        let csr = svid::csr_pem(&key)?;
        let token = self.read_token().await?;
        let request = SignCertificateRequest {
            id: self.config.app_id.to_string(),
            token: token.to_string(),
            trust_domain: self.config.trust_domain.to_string(),
            namespace: self.config.namespace.to_string(),
            certificate_signing_request: csr.into_bytes(),
            token_validator: self
                .config
                .validator
                .map(|v| v.wire() as i32)
                .unwrap_or(TokenValidator::Unknown as i32),
            jwt_audiences: self.config.jwt_audiences.clone(),
        };
        let response = sentry::sign(&self.endpoint, self.anchors.clone(), request).await?;
        let svid = svid::accept_response(
            response,
            key,
            &self.id,
            &self.anchors.current(),
            self.config.trust_ca_roots,
            OffsetDateTime::now_utc(),
        )?;
        Ok(Arc::new(svid))
    }

    async fn wait_until(&self, due: OffsetDateTime, stop: &mut watch::Receiver<bool>) -> Wake {
        let policy = &self.config.renewal;
        loop {
            if *stop.borrow_and_update() {
                return Wake::Stop;
            }
            let before = ClockReading::now();
            if before.wall >= due {
                return Wake::Due;
            }
            let nap = std_duration(due - before.wall).min(policy.check_interval);
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                _ = self.renew_now.notified() => return Wake::Asked,
                _ = stop.changed() => return Wake::Stop,
            }
            if let Some(jump) =
                schedule::clock_jump(before, ClockReading::now(), policy.clock_jump_threshold)
            {
                self.status().clock_jumps += 1;
                tracing::warn!(
                    id = %self.id,
                    wall_minus_monotonic = %jump,
                    "wall clock jumped (suspend or clock step); renewing now"
                );
                return Wake::ClockJump;
            }
        }
    }
}

async fn renew_loop(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let policy = inner.config.renewal;
    loop {
        if *stop.borrow() {
            return;
        }
        let result = tokio::select! {
            r = inner.obtain() => r,
            _ = stop.changed() => return,
        };
        let now = OffsetDateTime::now_utc();
        let due = match result {
            Ok(svid) => {
                if inner.config.trust_ca_roots {
                    inner.anchors.set_from_ca(svid.ca_roots().to_vec());
                }
                let delay = schedule::renewal_delay(
                    &policy,
                    svid.received_at(),
                    svid.not_before(),
                    svid.renew_by(),
                    jitter_sample(),
                );
                let due = svid.received_at() + to_time(delay);
                {
                    let mut s = inner.status();
                    s.serial = Some(svid.serial_hex().to_string());
                    s.not_before = Some(svid.not_before());
                    s.not_after = Some(svid.not_after());
                    s.renewals += 1;
                    s.consecutive_failures = 0;
                    s.last_success_at = Some(now);
                    s.next_attempt_at = Some(due);
                }
                tracing::info!(
                    id = %inner.id,
                    serial = svid.serial_hex(),
                    not_before = %svid.not_before(),
                    not_after = %svid.not_after(),
                    renew_at = %due,
                    "certificate obtained"
                );
                inner.svid.send_replace(Some(svid));
                due
            }
            Err(e) => {
                let held = inner.svid.borrow().clone();
                let until_expiry = held.as_ref().map(|s| std_duration(s.not_after() - now));
                let failures = {
                    let mut s = inner.status();
                    s.failures += 1;
                    s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                    s.last_error = Some(e.to_string());
                    s.last_error_at = Some(now);
                    s.consecutive_failures
                };
                let delay = schedule::retry_delay(&policy, failures, until_expiry, jitter_sample());
                let due = now + to_time(delay);
                inner.status().next_attempt_at = Some(due);
                match &held {
                    Some(s) if s.is_valid_at(now) => tracing::warn!(
                        id = %inner.id, error = %e, retry_in = ?delay, not_after = %s.not_after(),
                        "certificate renewal failed; keeping the current certificate"
                    ),
                    Some(s) => tracing::error!(
                        id = %inner.id, error = %e, retry_in = ?delay, expired_at = %s.not_after(),
                        "certificate renewal failed and the current certificate has expired"
                    ),
                    None => tracing::warn!(
                        id = %inner.id, error = %e, retry_in = ?delay,
                        "could not obtain a certificate yet; retrying"
                    ),
                }
                due
            }
        };
        match inner.wait_until(due, &mut stop).await {
            Wake::Stop => return,
            Wake::Due | Wake::Asked | Wake::ClockJump => {}
        }
    }
}

async fn poll_anchors(inner: Arc<Inner>, initial: Vec<u8>) {
    let mut stop = inner.stop.subscribe();
    let mut poll = FilePoll::new(initial);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(inner.config.anchors_poll_interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let outcome = poll.poll(&inner.config.trust_anchors, &inner.anchors);
        let mut s = inner.status();
        match outcome {
            PollResult::Unchanged => s.anchors_error = None,
            PollResult::Applied => {
                s.anchors_error = None;
                let set = inner.anchors.current();
                tracing::info!(
                    source = %inner.config.trust_anchors.describe(),
                    roots = set.roots().len(),
                    version = set.version(),
                    "trust anchors reloaded"
                );
            }
            PollResult::Failed(e) => {
                if s.anchors_error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "cannot reload trust anchors; keeping the previous ones");
                }
                s.anchors_error = Some(e);
            }
        }
    }
}
