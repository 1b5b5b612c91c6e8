//! The JWKS validator: a caller proves its identity with a JWT signed by a key from a JSON
//! Web Key Set, configured in the Dapr Configuration's `spec.mtls.tokenValidators` entry
//! named `jwks`.
//!
//! Options (Dapr's names, string values):
//! - `source`: where the key set comes from. `https://…` is fetched over TLS; a value that
//!   starts with `{` (or that is base64 of such JSON) is the key set itself; anything else is
//!   a file path, re-read whenever its size, modification time or inode changes. Plain
//!   `http://` is refused: the keys decide who gets certificates, so they travel over TLS.
//! - `caCertificate`: PEM (inline, or a file path) of the CA(s) trusted for the HTTPS source.
//!   Without it, the system's roots are used.
//! - `minRefreshInterval` (default 10m): the HTTPS source is fetched at most this often, both
//!   for the periodic refresh (done in the background while the current keys keep serving)
//!   and for the refresh triggered by a token whose `kid` is unknown. While no key set has
//!   been obtained yet, a failed fetch is retried after at most [`INITIAL_RETRY`].
//! - `requestTimeout` (default 30s): bound on one whole fetch (connect, TLS, response).
//!
//! A source that fails keeps the last good keys. Without any keys, requests are answered
//! UNAVAILABLE. A document that is not a JWKS is a failure; keys inside it that we cannot use
//! (unknown `kty` or curve, `use` other than `sig`, RSA under 2048 bits, broken encodings)
//! are skipped and logged, not fatal. A document with no usable key at all is accepted (it
//! revokes the previous keys) and logged loudly.
//!
//! Keys and tokens are read by [`sigil_pki::jose`]; this module fetches and caches key sets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::body::Bytes;
use rustls_pki_types::{CertificateDer, ServerName};
use sigil_pki::jose::{self, Expectations, JwkSet, JwksError, JwtError, MAX_JWKS_BYTES};
use sigil_pki::{Clock, SpiffeId};

use super::{
    common_checks, requested_trust_domain, Claims, Identity, TokenValidator, ValidatorKind,
};
use crate::config::{dapr::TokenValidatorSpec, duration::parse_duration, Config};
use crate::Error;

/// The shortest `minRefreshInterval` honoured: refreshes for unknown key ids happen at most
/// once a second, whatever the configuration says.
pub const MIN_REFRESH_FLOOR: Duration = Duration::from_secs(1);
/// Default `minRefreshInterval`.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// Default `requestTimeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest gap between fetch attempts while no key set has been obtained yet.
pub const INITIAL_RETRY: Duration = Duration::from_secs(5);

/// The validator's name in `spec.mtls.tokenValidators`.
pub const CONFIG_NAME: &str = "jwks";

// ---- options ---------------------------------------------------------------------------

/// Where the key set comes from.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// Inline JSON (already parsed).
    Inline(JwkSet),
    /// A file, re-read when it changes.
    File(PathBuf),
    /// An HTTPS URL.
    Https(hyper::Uri),
}

/// The `jwks` validator's options, validated.
#[derive(Clone, Debug)]
pub struct JwksOptions {
    /// `source`.
    pub source: SourceSpec,
    /// `caCertificate`, as DER certificates.
    pub ca_certificates: Vec<CertificateDer<'static>>,
    /// `minRefreshInterval`.
    pub min_refresh_interval: Duration,
    /// `requestTimeout`.
    pub request_timeout: Duration,
}

fn config_err(msg: impl std::fmt::Display) -> Error {
    Error::Config(format!("tokenValidators jwks: {msg}"))
}

fn parse_ca_certificates(value: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let text = if value.contains("-----BEGIN") {
        value.to_string()
    } else {
        std::fs::read_to_string(value)
            .map_err(|e| config_err(format!("caCertificate {value:?}: {e}")))?
    };
    let blocks = pem::parse_many(text.as_bytes())
        .map_err(|e| config_err(format!("caCertificate is not PEM: {e}")))?;
    let certs: Vec<CertificateDer<'static>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| CertificateDer::from(b.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(config_err("caCertificate holds no CERTIFICATE block"));
    }
    Ok(certs)
}

fn classify_source(source: &str) -> Result<SourceSpec, Error> {
    let source = source.trim();
    if source.is_empty() {
        return Err(config_err("option \"source\" is required"));
    }
    let lower = source
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if lower.starts_with("http://") {
        return Err(config_err(
            "plain http:// sources are refused: the keys decide who gets certificates; use https://",
        ));
    }
    if lower == "https://" {
        let uri: hyper::Uri = source
            .parse()
            .map_err(|e| config_err(format!("source URL: {e}")))?;
        let authority = uri
            .authority()
            .ok_or_else(|| config_err("source URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(config_err("source URL must not carry credentials"));
        }
        return Ok(SourceSpec::Https(uri));
    }
    let inline = if source.starts_with('{') {
        Some(source.as_bytes().to_vec())
    } else {
        // Dapr also accepts the key set base64-encoded.
        STANDARD
            .decode(source)
            .ok()
            .filter(|d| d.first() == Some(&b'{'))
    };
    match inline {
        Some(bytes) => {
            let set =
                JwkSet::parse(&bytes).map_err(|e| config_err(format!("inline source: {e}")))?;
            Ok(SourceSpec::Inline(set))
        }
        None => Ok(SourceSpec::File(PathBuf::from(source))),
    }
}

impl JwksOptions {
    /// Validates the options of a `tokenValidators` entry. Unknown options are refused, so
    /// that a typo does not silently weaken the configuration.
    pub fn from_spec(spec: &TokenValidatorSpec) -> Result<Self, Error> {
        let mut source = None;
        let mut ca = None;
        let mut min_refresh_interval = DEFAULT_MIN_REFRESH_INTERVAL;
        let mut request_timeout = DEFAULT_REQUEST_TIMEOUT;
        for (name, value) in &spec.options {
            let value = match value {
                serde_yaml::Value::String(s) => s.as_str(),
                _ => return Err(config_err(format!("option {name:?} must be a string"))),
            };
            let duration = |v: &str| {
                parse_duration(v).map_err(|e| config_err(format!("option {name:?}: {e}")))
            };
            match name.as_str() {
                "source" => source = Some(classify_source(value)?),
                "caCertificate" => ca = Some(parse_ca_certificates(value)?),
                "minRefreshInterval" => {
                    min_refresh_interval = duration(value)?;
                    // Every token with an unknown kid may trigger a fetch; below the floor a
                    // caller could make Sigil hammer the JWKS host.
                    if min_refresh_interval < MIN_REFRESH_FLOOR {
                        tracing::warn!(given = ?min_refresh_interval, using = ?MIN_REFRESH_FLOOR, "tokenValidators jwks: minRefreshInterval is below the floor; using the floor");
                        min_refresh_interval = MIN_REFRESH_FLOOR;
                    }
                }
                "requestTimeout" => {
                    request_timeout = duration(value)?;
                    if request_timeout.is_zero() {
                        return Err(config_err("requestTimeout must be positive"));
                    }
                }
                other => return Err(config_err(format!("unknown option {other:?}"))),
            }
        }
        let source = source.ok_or_else(|| config_err("option \"source\" is required"))?;
        if ca.is_some() && !matches!(source, SourceSpec::Https(_)) {
            tracing::warn!(
                "tokenValidators jwks: caCertificate is only used with an https:// source; ignored"
            );
        }
        Ok(JwksOptions {
            source,
            ca_certificates: ca.unwrap_or_default(),
            min_refresh_interval,
            request_timeout,
        })
    }
}

// ---- HTTPS fetching --------------------------------------------------------------------

struct HttpsSource {
    uri: hyper::Uri,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

/// Aborts the HTTP connection task when the fetch ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl HttpsSource {
    fn new(
        uri: hyper::Uri,
        cas: &[CertificateDer<'static>],
        timeout: Duration,
    ) -> Result<Self, Error> {
        let authority = uri
            .authority()
            .ok_or_else(|| config_err("source URL has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())
            .map_err(|e| config_err(format!("source URL host {host:?}: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        if cas.is_empty() {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "reading a system root certificate failed");
            }
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(config_err(
                    "no caCertificate given and no system root certificates found",
                ));
            }
        } else {
            for c in cas {
                roots
                    .add(c.clone())
                    .map_err(|e| config_err(format!("caCertificate: {e}")))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(HttpsSource {
            uri,
            host,
            port,
            server_name,
            tls: Arc::new(tls),
            timeout,
        })
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        match tokio::time::timeout(self.timeout, self.fetch_unbounded()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no complete answer within {:?}", self.timeout)),
        }
    }

    async fn fetch_unbounded(&self) -> Result<JwkSet, String> {
        use http_body_util::{BodyExt, Empty, Limited};
        use hyper::header;

        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let authority = self.uri.authority().map_or("", |a| a.as_str()).to_string();
        let request = hyper::Request::get(path)
            .header(header::HOST, authority)
            .header(header::ACCEPT, "application/json, application/jwk-set+json")
            .header(
                header::USER_AGENT,
                concat!("sigil/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(format!("HTTP status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        JwkSet::parse(&body).map_err(|e| e.to_string())
    }
}

// ---- the key cache ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        FileStamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

enum Source {
    Inline,
    File(PathBuf),
    Https(HttpsSource),
}

#[derive(Default)]
struct CacheState {
    keys: Option<Arc<JwkSet>>,
    /// When the HTTPS source was last asked (successfully or not).
    last_attempt: Option<Instant>,
    /// The file version last read (good or bad), so a bad file is not re-read until it changes.
    file_stamp: Option<FileStamp>,
    /// Why the last load failed (logged; also keeps a missing file from being logged per request).
    last_error: Option<String>,
}

/// The key set in force and how to renew it.
pub struct KeyCache {
    source: Source,
    min_refresh: Duration,
    state: Mutex<CacheState>,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("source", &self.describe())
            .field("min_refresh", &self.min_refresh)
            .finish()
    }
}

fn log_loaded(source: &str, set: &JwkSet) {
    for s in &set.skipped {
        tracing::warn!(source, skipped = %s, "JWKS key skipped");
    }
    if set.keys.is_empty() {
        tracing::error!(
            source,
            "JWKS has no usable key: every token will be refused"
        );
    } else {
        tracing::info!(source, keys = set.keys.len(), "JWKS loaded");
    }
}

impl KeyCache {
    /// Builds the cache for validated options. Nothing is fetched or read yet (except inline
    /// keys, which are already parsed).
    pub fn new(options: &JwksOptions) -> Result<Self, Error> {
        let mut state = CacheState::default();
        let source = match &options.source {
            SourceSpec::Inline(set) => {
                log_loaded("inline", set);
                state.keys = Some(Arc::new(set.clone()));
                Source::Inline
            }
            SourceSpec::File(p) => Source::File(p.clone()),
            SourceSpec::Https(uri) => Source::Https(HttpsSource::new(
                uri.clone(),
                &options.ca_certificates,
                options.request_timeout,
            )?),
        };
        Ok(KeyCache {
            source,
            min_refresh: options.min_refresh_interval,
            state: Mutex::new(state),
            fetch_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The source, for logs (never the inline keys).
    pub fn describe(&self) -> String {
        match &self.source {
            Source::Inline => "inline".into(),
            Source::File(p) => format!("file {}", p.display()),
            Source::Https(h) => h.uri.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ready_or_unavailable(&self) -> Result<Arc<JwkSet>, Error> {
        match &self.lock().keys {
            Some(k) => Ok(k.clone()),
            // The reason (paths, URLs, TLS errors) is in the log, not sent to callers.
            None => Err(Error::Unavailable(
                "the JWKS is not loaded yet; retry later".into(),
            )),
        }
    }

    /// The keys in force, renewing them as the source requires: a changed file is re-read
    /// now; a stale HTTPS key set is refreshed in the background (or now, when there is none
    /// yet). [`Error::Unavailable`] when no key set could be obtained.
    pub async fn keys(self: &Arc<Self>) -> Result<Arc<JwkSet>, Error> {
        match &self.source {
            Source::Inline => {}
            Source::File(path) => self.reload_file_if_changed(path).await,
            Source::Https(_) => {
                let (have_keys, stale) = {
                    let st = self.lock();
                    let stale = st
                        .last_attempt
                        .is_none_or(|t| t.elapsed() >= self.min_refresh);
                    (st.keys.is_some(), stale)
                };
                if !have_keys {
                    self.refresh_https().await;
                } else if stale {
                    let me = self.clone();
                    tokio::spawn(async move { me.refresh_https().await });
                }
            }
        }
        self.ready_or_unavailable()
    }

    /// After a token named a `kid` absent from `used`: fetch the HTTPS source again if the
    /// last attempt is older than the minimum refresh interval. Returns the keys in force if
    /// they are not `used` (this call or a concurrent one renewed them).
    pub async fn refresh_for_unknown_kid(
        self: &Arc<Self>,
        used: &Arc<JwkSet>,
    ) -> Option<Arc<JwkSet>> {
        if !matches!(self.source, Source::Https(_)) {
            return None;
        }
        self.refresh_https().await;
        let current = self.lock().keys.clone()?;
        (!Arc::ptr_eq(&current, used)).then_some(current)
    }

    /// Fetches the HTTPS source unless it was asked less than the minimum refresh interval
    /// ago (while there are no keys: [`INITIAL_RETRY`] at most); true when this call fetched
    /// successfully.
    async fn refresh_https(&self) -> bool {
        let Source::Https(https) = &self.source else {
            return false;
        };
        let _single_flight = self.fetch_lock.lock().await;
        {
            let mut st = self.lock();
            let gap = if st.keys.is_some() {
                self.min_refresh
            } else {
                self.min_refresh.min(INITIAL_RETRY)
            };
            if st.last_attempt.is_some_and(|t| t.elapsed() < gap) {
                return false;
            }
            st.last_attempt = Some(Instant::now());
        }
        let result = https.fetch().await;
        let mut st = self.lock();
        match result {
            Ok(set) => {
                log_loaded(&self.describe(), &set);
                st.keys = Some(Arc::new(set));
                st.last_error = None;
                true
            }
            Err(e) => {
                tracing::warn!(source = %self.describe(), error = %e, kept_previous_keys = st.keys.is_some(), "JWKS fetch failed");
                st.last_error = Some(e);
                false
            }
        }
    }

    async fn reload_file_if_changed(&self, path: &Path) {
        let meta = match tokio::fs::metadata(path).await {
            Ok(m) => m,
            Err(e) => {
                let mut st = self.lock();
                if st.last_error.is_none() || st.file_stamp.is_some() {
                    tracing::warn!(file = %path.display(), error = %e, kept_previous_keys = st.keys.is_some(), "JWKS file cannot be read");
                }
                st.file_stamp = None;
                st.last_error = Some(format!("{}: {e}", path.display()));
                return;
            }
        };
        let stamp = FileStamp::of(&meta);
        if self.lock().file_stamp == Some(stamp) {
            return;
        }
        let loaded = if meta.len() > MAX_JWKS_BYTES as u64 {
            Err(JwksError::TooLarge.to_string())
        } else {
            match tokio::fs::read(path).await {
                Ok(bytes) => JwkSet::parse(&bytes).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let mut st = self.lock();
        st.file_stamp = Some(stamp);
        match loaded {
            Ok(set) => {
                log_loaded(&format!("file {}", path.display()), &set);
                st.keys = Some(Arc::new(set));
                st.last_error = None;
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, kept_previous_keys = st.keys.is_some(), "JWKS file is not usable");
                st.last_error = Some(format!("{}: {e}", path.display()));
            }
        }
    }
}

// ---- the validator ---------------------------------------------------------------------

/// Validates JWTs against a JWKS; see the module documentation.
#[derive(Debug)]
pub struct JwksValidator {
    cache: Arc<KeyCache>,
    audience: String,
    clock: Arc<dyn Clock>,
}

/// Builds the JWKS validator when the Configuration in `config` has a `jwks` entry:
/// `None` when it has none, `Some(Err)` when its options are invalid. Sentry's SPIFFE ID
/// ([`Config::sentry_id`]) is the audience tokens must carry.
pub fn from_configuration(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Option<Result<JwksValidator, Error>> {
    let spec = config.dapr_config.jwks_options()?;
    Some(
        JwksOptions::from_spec(spec)
            .and_then(|o| JwksValidator::new(&o, config.sentry_id().to_string(), clock)),
    )
}

impl JwksValidator {
    /// A validator for `options` that requires `audience` in every token.
    pub fn new(
        options: &JwksOptions,
        audience: String,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        Ok(JwksValidator {
            cache: Arc::new(KeyCache::new(options)?),
            audience,
            clock,
        })
    }

    /// Loads the keys now, so that the first request does not wait; failures are logged
    /// (and retried on demand).
    pub async fn warm_up(&self) {
        match self.cache.keys().await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "JWKS not available yet"),
        }
    }

    /// The key cache (for tests and diagnostics).
    pub fn cache(&self) -> &Arc<KeyCache> {
        &self.cache
    }
}

fn denied(e: JwtError) -> Error {
    Error::Denied(format!("token validation failed: {e}"))
}

#[async_trait::async_trait]
impl TokenValidator for JwksValidator {
    fn kind(&self) -> ValidatorKind {
        ValidatorKind::Jwks
    }

    async fn validate(&self, claims: &Claims) -> Result<Identity, Error> {
        if claims.token.is_empty() {
            return Err(Error::Denied("the request does not contain a token".into()));
        }
        let keys = self.cache.keys().await?;
        let (app_id, namespace) = common_checks(claims)?;
        let trust_domain = requested_trust_domain(claims)?;
        let subject = SpiffeId::workload(&trust_domain, &namespace, &app_id).to_string();
        let expect = Expectations {
            audience: &self.audience,
            subject: &subject,
            now: self.clock.now(),
        };
        let token = jose::parse_unverified(&claims.token).map_err(denied)?;
        let kid = token.header.kid.clone();
        let verified = match token.clone().verify(&keys, &expect) {
            Err(JwtError::UnknownKid(k)) => match self.cache.refresh_for_unknown_kid(&keys).await {
                Some(fresh) => token.verify(&fresh, &expect),
                None => Err(JwtError::UnknownKid(k)),
            },
            other => other,
        }
        .map_err(denied)?;
        Ok(Identity {
            trust_domain,
            namespace,
            app_id,
            authenticated_as: format!(
                "jwt sub {subject} (kid {}, iss {})",
                kid.as_deref().unwrap_or("-"),
                verified
                    .iss
                    .as_deref()
                    .map_or("-".into(), |i| i.chars().take(128).collect::<String>())
            ),
            container_images_json: None,
            control_plane: false,
        })
    }
}

#[cfg(test)]
mod tests;
