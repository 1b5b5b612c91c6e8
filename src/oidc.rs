//! The OIDC discovery server: just enough of OpenID Connect Discovery for a relying party
//! (a cloud provider's workload identity federation, PyJWT's `PyJWKClient`, ...) to verify
//! Sigil's JWT-SVIDs: `GET {prefix}/.well-known/openid-configuration` and
//! `GET {prefix}/jwks.json`. HTTP/1.1 over TLS by default (hyper + tokio-rustls).
//!
//! The JWKS is read from [`JwtState`] on every request, so a key rotation is visible at
//! once. Responses may be cached for five minutes (`Cache-Control: public, max-age=300`):
//! short enough that a rotated key reaches verifiers well within a token's lifetime.
//!
//! When no `--jwt-issuer`/`--oidc-jwks-uri` is set, the discovery document's URLs are built
//! from the request's `Host` header (as Dapr does). `--oidc-allowed-hosts` limits which
//! hosts are answered at all. Behind a proxy the public name arrives in `X-Forwarded-Host`,
//! so with a concrete allow-list (not `*`) that header, when present, is the name checked,
//! as in Dapr. It never goes into the discovery document: any client can send it, and an
//! issuer or `jwks_uri` taken from it would let a caller poison a relying party's cache.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::jwt::OidcSettings;
use crate::jwt::JwtState;
use crate::Error;

/// Path of the discovery document (after the prefix).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Path of the JWKS (after the prefix).
pub const JWKS_PATH: &str = "/jwks.json";
/// `Cache-Control` of both documents.
pub const CACHE_CONTROL: &str = "public, max-age=300";

/// What the request handler needs.
#[derive(Clone)]
pub struct OidcHandler {
    settings: OidcSettings,
    jwt: Arc<JwtState>,
    scheme: &'static str,
}

/// The host name of a `Host` header value without its port, lower-cased; `None` if the
/// value is not a plain `host[:port]`.
fn host_name(value: &str) -> Option<String> {
    let (name, port) = if let Some(rest) = value.strip_prefix('[') {
        let end = rest.find(']')?;
        let inside = &rest[..end];
        if inside.is_empty()
            || !inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        let after = &rest[end + 1..];
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        (format!("[{inside}]"), port)
    } else {
        match value.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (value.to_string(), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    if name.is_empty()
        || name.len() > 253
        || !(name.starts_with('[')
            || name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(hyper::header::CONTENT_TYPE, v);
    }
    h.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        format!("{msg}\n").into_bytes(),
    )
}

impl OidcHandler {
    /// A handler over `jwt`, answering as `https` when `tls` is true.
    pub fn new(settings: OidcSettings, jwt: Arc<JwtState>, tls: bool) -> Self {
        Self {
            settings,
            jwt,
            scheme: if tls { "https" } else { "http" },
        }
    }

    /// Answers one request without an `X-Forwarded-Host` header.
    pub fn handle(&self, method: &Method, path: &str, host: Option<&str>) -> Response<Full<Bytes>> {
        self.handle_forwarded(method, path, host, None)
    }

    /// Answers one request. Pure apart from reading the current key set. `forwarded` is the
    /// `X-Forwarded-Host` header: with a concrete allow-list it is the name checked; the
    /// document's URLs always come from `host`.
    pub fn handle_forwarded(
        &self,
        method: &Method,
        path: &str,
        host: Option<&str>,
        forwarded: Option<&str>,
    ) -> Response<Full<Bytes>> {
        let Some(host_value) = host.filter(|h| !h.is_empty()) else {
            return text(StatusCode::BAD_REQUEST, "a Host header is required");
        };
        let Some(host_name) = host_name(host_value) else {
            return text(StatusCode::BAD_REQUEST, "malformed Host header");
        };
        let allowed = &self.settings.allowed_hosts;
        let wildcard = allowed.iter().any(|a| a == "*");
        let name = match forwarded.filter(|f| !f.is_empty() && !allowed.is_empty() && !wildcard) {
            Some(f) => match self::host_name(f) {
                Some(n) => n,
                None => return text(StatusCode::BAD_REQUEST, "malformed X-Forwarded-Host header"),
            },
            None => host_name,
        };
        if !allowed.is_empty() && !wildcard && !allowed.contains(&name) {
            tracing::debug!(host = %name, "OIDC request for a host that is not allowed");
            return text(StatusCode::FORBIDDEN, "forbidden: host not allowed");
        }
        let prefix = self.settings.path_prefix.as_str();
        let Some(rest) = path.strip_prefix(prefix) else {
            return text(StatusCode::NOT_FOUND, "not found");
        };
        if rest != DISCOVERY_PATH && rest != JWKS_PATH {
            return text(StatusCode::NOT_FOUND, "not found");
        }
        if method != Method::GET && method != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            r.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static("GET, HEAD"),
            );
            return r;
        }
        let body = if rest == DISCOVERY_PATH {
            self.discovery(host_value)
        } else {
            self.jwt.current().public_jwks().to_vec()
        };
        let len = body.len();
        let mut r = respond(
            StatusCode::OK,
            "application/json",
            if method == Method::HEAD {
                Vec::new()
            } else {
                body
            },
        );
        let h = r.headers_mut();
        h.insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_static(CACHE_CONTROL),
        );
        // The documents depend on the Host (and X-Forwarded-Host) header: a shared cache must
        // not serve one host's answer to another.
        h.insert(
            hyper::header::VARY,
            hyper::header::HeaderValue::from_static("Host, X-Forwarded-Host"),
        );
        if method == Method::HEAD {
            h.insert(hyper::header::CONTENT_LENGTH, len.into());
        }
        r
    }

    fn discovery(&self, host: &str) -> Vec<u8> {
        let prefix = &self.settings.path_prefix;
        let base = format!("{}://{}{}", self.scheme, host.to_ascii_lowercase(), prefix);
        let issuer = match &self.jwt.settings().issuer {
            Some(iss) if iss.contains("://") => iss.clone(),
            // Dapr puts a scheme on a bare issuer.
            Some(iss) => format!("https://{iss}"),
            None => base.clone(),
        };
        let jwks_uri = self
            .settings
            .jwks_uri
            .clone()
            .unwrap_or_else(|| format!("{base}{JWKS_PATH}"));
        let doc = json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": self.jwt.current().algorithms(),
            "scopes_supported": ["openid"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "jti", "use"],
        });
        serde_json::to_vec(&doc).unwrap_or_default()
    }
}

/// Reads and checks the OIDC server's certificate chain and key.
fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, Error> {
    let cert_error = |e: &dyn std::fmt::Display| {
        Error::Config(format!(
            "--oidc-server-tls-cert-file {}: {e}",
            cert.display()
        ))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(&e))?;
    if certs.is_empty() {
        return Err(cert_error(&"holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Config(format!("--oidc-server-tls-key-file {}: {e}", key.display())))?;
    let provider = rustls::crypto::ring::default_provider();
    // Checks that the key is usable and belongs to the first certificate.
    CertifiedKey::from_der(certs, key, &provider)
        .map_err(|e| Error::Config(format!("OIDC TLS certificate and key: {e}")))
}

/// The OIDC server's certificate, re-read from its files when they change, so that a
/// renewed certificate (cert-manager, a mounted Secret) is served without a restart.
#[derive(Debug)]
struct FileCertificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, [u8; 32])>,
}

/// SHA-256 over both files as they are now.
fn files_digest(cert: &Path, key: &Path) -> std::io::Result<[u8; 32]> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for path in [cert, key] {
        let bytes = zeroize::Zeroizing::new(std::fs::read(path)?);
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(&bytes);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

impl FileCertificate {
    fn load(cert: &Path, key: &Path) -> Result<Self, Error> {
        let digest = files_digest(cert, key).map_err(|e| Error::io(cert, e))?;
        let certified = load_certified_key(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((Arc::new(certified), digest)),
        })
    }

    /// Re-reads the files if their content changed. A broken pair (half-written, key and
    /// certificate that do not match) is logged and the previous certificate kept.
    fn refresh(&self) {
        let digest = match files_digest(&self.cert, &self.key) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, cert = %self.cert.display(), "cannot read the OIDC TLS files; keeping the current certificate");
                return;
            }
        };
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == digest {
            return;
        }
        match load_certified_key(&self.cert, &self.key) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                    (Arc::new(certified), digest);
                tracing::info!(cert = %self.cert.display(), "reloaded the OIDC TLS certificate");
            }
            Err(e) => {
                tracing::warn!(error = %e, "the changed OIDC TLS files are not usable; keeping the current certificate");
            }
        }
    }
}

impl ResolvesServerCert for FileCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

/// Binds the OIDC server and serves it until `shutdown`; returns the bound address.
///
/// The certificate files are checked for changes every `reload_interval`.
pub async fn spawn(
    settings: &OidcSettings,
    jwt: Arc<JwtState>,
    reload_interval: Duration,
    limits: crate::listener::Limits,
    shutdown: watch::Receiver<bool>,
) -> Result<SocketAddr, Error> {
    let acceptor = match &settings.tls {
        Some((cert, key)) => {
            let certificate = Arc::new(FileCertificate::load(cert, key)?);
            let watched = certificate.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(reload_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            let c = watched.clone();
                            // File reads and PEM parsing stay off the async workers.
                            let _ = tokio::task::spawn_blocking(move || c.refresh()).await;
                        }
                        _ = stop.changed() => return,
                    }
                }
            });
            Some(crate::listener::tls::acceptor(
                certificate,
                crate::listener::tls::Profile::Https,
            )?)
        }
        None => {
            tracing::warn!("the OIDC server serves plain HTTP (--oidc-server-tls-enabled=false); put it behind a TLS-terminating proxy");
            None
        }
    };
    let listener = TcpListener::bind(settings.listen).await.map_err(|e| {
        Error::Config(format!(
            "cannot bind the OIDC server to {}: {e}",
            settings.listen
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("OIDC socket", e))?;
    let handler = Arc::new(OidcHandler::new(settings.clone(), jwt, acceptor.is_some()));
    if settings.jwks_uri.is_none() && settings.allowed_hosts.is_empty() {
        tracing::info!("OIDC discovery URLs follow the request's Host header; set --oidc-allowed-hosts or --oidc-jwks-uri and --jwt-issuer to pin them");
    }
    let header_timeout = limits.header_timeout;
    crate::listener::spawn_accept_loop(
        "oidc",
        listener,
        limits.max_connections,
        shutdown,
        move |tcp, peer, slot| {
            let handler = handler.clone();
            let acceptor = acceptor.clone();
            async move {
                let _slot = slot;
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let host = req
                        .headers()
                        .get(hyper::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                        .or_else(|| req.uri().authority().map(|a| a.to_string()));
                    let forwarded = req
                        .headers()
                        .get("x-forwarded-host")
                        .and_then(|h| h.to_str().ok());
                    let resp = handler.handle_forwarded(
                        req.method(),
                        req.uri().path(),
                        host.as_deref(),
                        forwarded,
                    );
                    async move { Ok::<_, Infallible>(resp) }
                });
                let result = match acceptor {
                    Some(acceptor) => {
                        let Some(tls) = crate::listener::tls_handshake(
                            "oidc",
                            &acceptor,
                            tcp,
                            peer,
                            header_timeout,
                        )
                        .await
                        else {
                            return;
                        };
                        crate::listener::serve_http1(tls, svc, header_timeout).await
                    }
                    None => crate::listener::serve_http1(tcp, svc, header_timeout).await,
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "OIDC connection ended with an error");
                }
            }
        },
    );
    tracing::info!(addr = %local, tls = settings.tls.is_some(), prefix = %settings.path_prefix, "OIDC discovery server listening");
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::jwt::JwtSettings;
    use http_body_util::BodyExt as _;
    use sigil_pki::jose::Algorithm as JwsAlgorithm;
    use sigil_pki::ManualClock;

    async fn handler(
        allowed: &[&str],
        prefix: &str,
        issuer: Option<&str>,
    ) -> (tempfile::TempDir, OidcHandler) {
        let dir = tempfile::tempdir().unwrap();
        let s = JwtSettings {
            key_path: dir.path().join("jwt.key"),
            jwks_path: dir.path().join("jwks.json"),
            issuer: issuer.map(str::to_owned),
            algorithm: Some(JwsAlgorithm::Es256),
            key_id: None,
            ttl: Duration::from_secs(3600),
            publish_delay: None,
        };
        let store = crate::store::file::FileJwtStore::new(&s.key_path, &s.jwks_path);
        let clock = ManualClock::new(time::OffsetDateTime::now_utc());
        let state = crate::jwt::load_or_generate(&store, &s, time::Duration::minutes(15), &clock)
            .await
            .unwrap();
        let settings = OidcSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
            path_prefix: prefix.into(),
            jwks_uri: None,
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
        };
        (dir, OidcHandler::new(settings, Arc::new(state), true))
    }

    async fn body(r: Response<Full<Bytes>>) -> serde_json::Value {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn serves_discovery_and_jwks_with_json_and_cache_headers() {
        let (_d, h) = handler(&[], "/sentry", None).await;
        let r = h.handle(
            &Method::GET,
            "/sentry/.well-known/openid-configuration",
            Some("Issuer.Example:8443"),
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["cache-control"], CACHE_CONTROL);
        assert_eq!(r.headers()["vary"], "Host, X-Forwarded-Host");
        // The cache lifetime that a new JWT key's publish delay is built on.
        assert_eq!(
            CACHE_CONTROL,
            format!(
                "public, max-age={}",
                crate::jwt::JWKS_MAX_AGE.whole_seconds()
            )
        );
        let doc = body(r).await;
        assert_eq!(doc["issuer"], "https://issuer.example:8443/sentry");
        assert_eq!(
            doc["jwks_uri"],
            "https://issuer.example:8443/sentry/jwks.json"
        );
        assert_eq!(
            doc["id_token_signing_alg_values_supported"],
            json!(["ES256"])
        );
        assert_eq!(doc["response_types_supported"], json!(["id_token"]));
        assert_eq!(doc["subject_types_supported"], json!(["public"]));

        let r = h.handle(&Method::GET, "/sentry/jwks.json", Some("x"));
        assert_eq!(r.status(), StatusCode::OK);
        let jwks = body(r).await;
        assert_eq!(jwks["keys"][0]["kid"], h.jwt.current().key.kid());
        assert!(jwks.get("sigil_rotation").is_none());

        let r = h.handle(&Method::HEAD, "/sentry/jwks.json", Some("x"));
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().contains_key("content-length"));
        assert_eq!(
            h.handle(&Method::GET, "/jwks.json", Some("x")).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            h.handle(&Method::POST, "/sentry/jwks.json", Some("x"))
                .status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            h.handle(&Method::GET, "/sentry/jwks.json", None).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            h.handle(&Method::GET, "/sentry/jwks.json", Some("a/b"))
                .status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            h.handle(&Method::GET, "/sentry/jwks.json", Some("a:99999x"))
                .status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn host_allow_list_and_fixed_issuer() {
        let (_d, h) = handler(&["issuer.example"], "", Some("issuer.example")).await;
        assert_eq!(
            h.handle(&Method::GET, "/jwks.json", Some("evil.example"))
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            h.handle(&Method::GET, "/jwks.json", Some("ISSUER.example:443"))
                .status(),
            StatusCode::OK
        );
        let doc = body(h.handle(&Method::GET, DISCOVERY_PATH, Some("issuer.example"))).await;
        assert_eq!(doc["issuer"], "https://issuer.example");
        // Behind a proxy: the forwarded name is the one checked...
        assert_eq!(
            h.handle_forwarded(
                &Method::GET,
                "/jwks.json",
                Some("10.0.0.7:9080"),
                Some("issuer.example")
            )
            .status(),
            StatusCode::OK
        );
        assert_eq!(
            h.handle_forwarded(
                &Method::GET,
                "/jwks.json",
                Some("issuer.example"),
                Some("evil.example")
            )
            .status(),
            StatusCode::FORBIDDEN
        );
        // ...but never the one the document is built from.
        let (_d, open) = handler(&["pod.local"], "", None).await;
        let doc = body(open.handle_forwarded(
            &Method::GET,
            DISCOVERY_PATH,
            Some("10.0.0.7:9080"),
            Some("pod.local"),
        ))
        .await;
        assert_eq!(doc["issuer"], "https://10.0.0.7:9080");
        assert_eq!(doc["jwks_uri"], "https://10.0.0.7:9080/jwks.json");
        let (_d, any) = handler(&["*"], "", None).await;
        // A wildcard ignores the header altogether.
        let doc = body(any.handle_forwarded(
            &Method::GET,
            DISCOVERY_PATH,
            Some("real.example"),
            Some("evil.example"),
        ))
        .await;
        assert_eq!(doc["issuer"], "https://real.example");
        assert_eq!(
            any.handle(&Method::GET, "/jwks.json", Some("[::1]:9080"))
                .status(),
            StatusCode::OK
        );
    }

    #[test]
    fn host_names() {
        assert_eq!(host_name("Example.COM:80").as_deref(), Some("example.com"));
        assert_eq!(host_name("[::1]:9080").as_deref(), Some("[::1]"));
        assert_eq!(host_name("[::1]").as_deref(), Some("[::1]"));
        for bad in ["", ":80", "a b", "a:", "[::1]x", "[]", "a:b", "x\"y"] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
    }
}
