//! Metrics (Prometheus text on the metrics port, at `/` and `/metrics`), the HTTP health
//! endpoint (`/healthz` on the healthz port). The audit log is [`crate::audit`].
//!
//! Metric names: Dapr Sentry's (`dapr_sentry_*`) so existing dashboards keep working, plus
//! Sigil's own (`sigil_*`): requests by validator and gRPC code, a signing-latency
//! histogram, validation-cache hits, seconds left on every CA certificate, and JWT-SVID
//! issuance and key changes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use sigil_pki::Authority;
use std::sync::atomic::AtomicU64;
use tokio::net::TcpListener;

use crate::Error;

/// Label set with a failure reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Stable reason label.
    pub reason: String,
}

/// Label set for requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Validator name ("none" when selection failed).
    pub validator: String,
    /// gRPC code name.
    pub code: String,
}

/// Label set of settled PodCertificateRequests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodCertificateLabels {
    /// issued, denied, failed, or elsewhere (another replica settled it, or it was deleted).
    pub outcome: String,
    /// The condition's reason.
    pub reason: String,
}

/// Label set for CA certificate expiry.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// root, issuer or intermediate.
    pub role: String,
    /// Subject DN.
    pub subject: String,
}

/// Every metric the server records.
pub struct Metrics {
    registry: Registry,
    /// dapr_sentry_cert_sign_request_received_total
    pub sign_received: Counter,
    /// dapr_sentry_cert_sign_success_total
    pub sign_success: Counter,
    /// dapr_sentry_cert_sign_failure_total{reason}
    pub sign_failure: Family<ReasonLabel, Counter>,
    /// dapr_sentry_servercert_issue_failed_total{reason}
    pub servercert_failed: Family<ReasonLabel, Counter>,
    /// dapr_sentry_issuercert_changed_total
    pub issuer_changed: Counter,
    /// dapr_sentry_issuercert_expiry_timestamp (Unix seconds)
    pub issuer_expiry: Gauge<f64, AtomicU64>,
    /// sigil_requests_total{validator,code}
    pub requests: Family<RequestLabels, Counter>,
    /// sigil_sign_duration_seconds
    pub sign_duration: Histogram,
    /// sigil_validation_cache_hits_total
    pub cache_hits: Counter,
    /// sigil_validation_cache_misses_total
    pub cache_misses: Counter,
    /// sigil_ca_reload_failures_total
    pub reload_failures: Counter,
    /// sigil_ca_certificate_expiry_seconds{role,subject}: seconds left (negative when expired)
    pub cert_expiry: Family<CertLabels, Gauge<f64, AtomicU64>>,
    /// sigil_jwt_issued_total: JWT-SVIDs signed (the all-audience token and each
    /// per-audience one)
    pub jwt_issued: Counter,
    /// sigil_jwt_signing_key_changed_total
    pub jwt_key_changed: Counter,
    /// sigil_jwt_key_problems_total: polls that could not read or publish the JWT keys, or
    /// found a change that was not usable
    pub jwt_key_problems: Counter,
    /// sigil_jwks_keys: keys in the published JWKS
    pub jwks_keys: Gauge,
    /// sigil_grpc_request_buffer_bytes: bytes of the request byte budget in use
    pub request_buffer_bytes: Gauge,
    /// sigil_ca_material_lost_total: times the store was found emptied (wholly or partly)
    /// after CA material had existed; no new CA is generated over it
    pub ca_material_lost: Counter,
    /// sigil_ca_root_replacement_refused_total: changed CA material whose roots share none
    /// with the ones in force, kept out of service
    pub ca_root_replacement_refused: Counter,
    /// sigil_trust_bundle_mirror_failures_total: failed writes of the public ConfigMap copy
    /// of the trust anchors or JWKS
    pub trust_bundle_mirror_failures: Counter,
    /// sigil_pod_certificate_requests_total{outcome,reason}
    pub pod_certificate_requests: Family<PodCertificateLabels, Counter>,
    /// sigil_pod_certificate_duration_seconds: from seeing a request to writing its status
    pub pod_certificate_duration: Histogram,
    /// sigil_pod_certificate_retries_total: attempts that hit a transient problem
    pub pod_certificate_retries: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let sign_received = Counter::default();
        let sign_success = Counter::default();
        let sign_failure = Family::<ReasonLabel, Counter>::default();
        let servercert_failed = Family::<ReasonLabel, Counter>::default();
        let issuer_changed = Counter::default();
        let issuer_expiry = Gauge::<f64, AtomicU64>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let sign_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let cache_hits = Counter::default();
        let cache_misses = Counter::default();
        let reload_failures = Counter::default();
        let cert_expiry = Family::<CertLabels, Gauge<f64, AtomicU64>>::default();
        let jwt_issued = Counter::default();
        let jwt_key_changed = Counter::default();
        let jwt_key_problems = Counter::default();
        let jwks_keys = Gauge::default();
        let request_buffer_bytes = Gauge::default();
        let ca_material_lost = Counter::default();
        let ca_root_replacement_refused = Counter::default();
        let trust_bundle_mirror_failures = Counter::default();
        let pod_certificate_requests = Family::<PodCertificateLabels, Counter>::default();
        let pod_certificate_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let pod_certificate_retries = Counter::default();
        registry.register(
            "dapr_sentry_cert_sign_request_received",
            "Certificate signing requests received",
            sign_received.clone(),
        );
        registry.register(
            "dapr_sentry_cert_sign_success",
            "Certificates issued",
            sign_success.clone(),
        );
        registry.register(
            "dapr_sentry_cert_sign_failure",
            "Signing requests refused or failed, by reason",
            sign_failure.clone(),
        );
        registry.register(
            "dapr_sentry_servercert_issue_failed",
            "Failures to issue Sentry's own serving certificate",
            servercert_failed.clone(),
        );
        registry.register(
            "dapr_sentry_issuercert_changed",
            "Times new issuer credentials were loaded",
            issuer_changed.clone(),
        );
        registry.register(
            "dapr_sentry_issuercert_expiry_timestamp",
            "Expiry of the issuer certificate, Unix seconds",
            issuer_expiry.clone(),
        );
        registry.register(
            "sigil_requests",
            "Signing requests by validator and gRPC code",
            requests.clone(),
        );
        registry.register(
            "sigil_sign_duration_seconds",
            "Time to answer a successful signing request (validation, CSR check, signing)",
            sign_duration.clone(),
        );
        registry.register(
            "sigil_validation_cache_hits",
            "Kubernetes validations answered from the cache",
            cache_hits.clone(),
        );
        registry.register(
            "sigil_validation_cache_misses",
            "Kubernetes validations that went to the API server",
            cache_misses.clone(),
        );
        registry.register(
            "sigil_ca_reload_failures",
            "Changed CA material that failed its checks and was not loaded",
            reload_failures.clone(),
        );
        registry.register(
            "sigil_ca_certificate_expiry_seconds",
            "Seconds until each CA certificate (issuer chain and every trust anchor) expires",
            cert_expiry.clone(),
        );
        registry.register(
            "sigil_jwt_issued",
            "JWT-SVIDs signed (each per-audience token counts)",
            jwt_issued.clone(),
        );
        registry.register(
            "sigil_jwt_signing_key_changed",
            "Times a new JWT signing key took over",
            jwt_key_changed.clone(),
        );
        registry.register(
            "sigil_jwt_key_problems",
            "Polls of the JWT key store that failed to read or publish, or found an unusable key",
            jwt_key_problems.clone(),
        );
        registry.register(
            "sigil_jwks_keys",
            "Keys in the published JWKS",
            jwks_keys.clone(),
        );
        registry.register(
            "sigil_grpc_request_buffer_bytes",
            "Bytes of the gRPC request byte budget held by requests not yet answered",
            request_buffer_bytes.clone(),
        );
        registry.register(
            "sigil_ca_material_lost",
            "Times the CA store was found emptied after CA material had existed (no new CA is generated over it)",
            ca_material_lost.clone(),
        );
        registry.register(
            "sigil_ca_root_replacement_refused",
            "Changed CA material refused because its roots share none with the roots in force",
            ca_root_replacement_refused.clone(),
        );
        registry.register(
            "sigil_trust_bundle_mirror_failures",
            "Failed writes of the public ConfigMap copy of the trust anchors or JWKS",
            trust_bundle_mirror_failures.clone(),
        );
        registry.register(
            "sigil_pod_certificate_requests",
            "PodCertificateRequests settled, by outcome and reason",
            pod_certificate_requests.clone(),
        );
        registry.register(
            "sigil_pod_certificate_duration_seconds",
            "Time from seeing a PodCertificateRequest to writing its status",
            pod_certificate_duration.clone(),
        );
        registry.register(
            "sigil_pod_certificate_retries",
            "PodCertificateRequest attempts that hit a transient problem (API server, issuer) and were retried",
            pod_certificate_retries.clone(),
        );
        Self {
            registry,
            sign_received,
            sign_success,
            sign_failure,
            servercert_failed,
            issuer_changed,
            issuer_expiry,
            requests,
            sign_duration,
            cache_hits,
            cache_misses,
            reload_failures,
            cert_expiry,
            jwt_issued,
            jwt_key_changed,
            jwt_key_problems,
            jwks_keys,
            request_buffer_bytes,
            ca_material_lost,
            ca_root_replacement_refused,
            trust_bundle_mirror_failures,
            pod_certificate_requests,
            pod_certificate_duration,
            pod_certificate_retries,
        }
    }

    /// Refreshes the expiry gauges from the CA in force.
    pub fn record_authority(&self, authority: &Authority, now: time::OffsetDateTime) {
        self.cert_expiry.clear();
        for (role, subject, not_after) in authority.expiries() {
            if role == "issuer" {
                self.issuer_expiry.set(not_after.unix_timestamp() as f64);
            }
            self.cert_expiry
                .get_or_create(&CertLabels {
                    role: role.into(),
                    subject,
                })
                .set((not_after - now).as_seconds_f64());
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Readiness shared by the health endpoints.
#[derive(Debug, Default, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }
    /// Whether ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Most connections open at once on the health and metrics ports: kubelet probes and a
/// Prometheus scraper need a handful; the cap keeps a flood of idle sockets from taking the
/// process's file descriptors.
const HTTP_MAX_CONNECTIONS: usize = 128;

fn serve_http<F>(
    name: &'static str,
    listener: TcpListener,
    handler: F,
    header_timeout: std::time::Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) where
    F: Fn(&str) -> (u16, &'static str, String) + Send + Sync + Clone + 'static,
{
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    crate::listener::spawn_accept_loop(
        name,
        listener,
        HTTP_MAX_CONNECTIONS,
        shutdown,
        move |stream, _peer, slot| {
            let handler = handler.clone();
            async move {
                let _slot = slot;
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (status, ctype, body) = if req.method() == hyper::Method::GET {
                        handler(req.uri().path())
                    } else {
                        (405, "text/plain", "method not allowed\n".into())
                    };
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", ctype)
                                .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                                .expect("static response parts are valid"),
                        )
                    }
                });
                let _ = crate::listener::serve_http1(stream, svc, header_timeout).await;
            }
        },
    );
}

/// Binds the health endpoint: `GET /healthz` answers 200 when ready, 503 before.
pub async fn spawn_healthz(
    addr: SocketAddr,
    ready: Readiness,
    header_timeout: std::time::Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot bind health server to {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("healthz socket", e))?;
    serve_http(
        "healthz",
        listener,
        move |path: &str| match path {
            "/healthz" | "/healthz/" if ready.get() => (200, "text/plain", "ok\n".into()),
            "/healthz" | "/healthz/" => (503, "text/plain", "not ready\n".into()),
            _ => (404, "text/plain", "not found\n".into()),
        },
        header_timeout,
        shutdown,
    );
    Ok(local)
}

/// Binds the metrics endpoint (`/` and `/metrics`).
pub async fn spawn_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    header_timeout: std::time::Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot bind metrics server to {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("metrics socket", e))?;
    serve_http(
        "metrics",
        listener,
        move |path: &str| match path {
            "/" | "/metrics" => (
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.encode(),
            ),
            _ => (404, "text/plain", "not found\n".into()),
        },
        header_timeout,
        shutdown,
    );
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dapr_metric_names_are_exposed() {
        let m = Metrics::new();
        m.sign_received.inc();
        m.sign_failure
            .get_or_create(&ReasonLabel {
                reason: "denied".into(),
            })
            .inc();
        let text = m.encode();
        for name in [
            "dapr_sentry_cert_sign_request_received_total 1",
            "dapr_sentry_cert_sign_success_total 0",
            "dapr_sentry_cert_sign_failure_total{reason=\"denied\"} 1",
            "dapr_sentry_issuercert_changed_total",
            "dapr_sentry_issuercert_expiry_timestamp",
            "sigil_sign_duration_seconds_bucket",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
