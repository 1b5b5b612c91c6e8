//! The Kubernetes PodCertificateRequest signer (KEP-4317, `certificates.k8s.io/v1`):
//! kubernetes mode with `--pod-certificate-signer=<domain>/<path>`.
//!
//! The kubelet creates a PodCertificateRequest for a pod with a `podCertificate` projected
//! volume; Sigil lists and watches the requests for its signer name, decides each one not
//! yet settled ([`review`]), signs the same SPIFFE leaf the gRPC path signs for that pod,
//! and writes the status once through `/status` ([`status`]), conditional on the
//! resourceVersion it read: a 409 means another replica settled it first, which is no error.
//! API and issuer problems are retried with backoff and never become `Failed`, because the
//! kubelet never retries a Failed request. The trust anchors are published as a
//! ClusterTrustBundle for the signer ([`trust_bundle`]).

mod review;
pub mod signer_name;
pub mod status;
pub mod trust_bundle;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::certificates::v1::PodCertificateRequest;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use ring::rand::SecureRandom;
use sigil_pki::issue::LeafExtras;
use sigil_pki::{Clock, IssuePolicy, SpiffeId};
use tokio::sync::{watch, Semaphore};
use tokio_stream::StreamExt as _;

pub use review::{Rules, Verdict};
use signer_name::SignerName;

use crate::cluster::{self, ApiFailure};
use crate::observe::{Metrics, PodCertificateLabels};
use crate::rotation::CaState;
use crate::validator::admit::control_plane_dns_names;
use crate::Error;

/// Largest backdating of NotBefore: the API server wants `notBefore` within 5 minutes of
/// its own clock.
const MAX_BACKDATE: time::Duration = time::Duration::minutes(2);
/// Shortest leaf the API server accepts.
const MIN_LIFETIME: time::Duration = time::Duration::hours(1);
/// `maxExpirationSeconds` when the request has none (the API server's default).
const DEFAULT_MAX_EXPIRATION: i64 = 86_400;
/// Retry backoff for transient problems: first and longest wait.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));
/// Server-side timeout of one watch request.
const WATCH_TIMEOUT_SECS: u32 = 290;
/// Requests decided at once.
const CONCURRENCY: usize = 32;

/// Everything the signer needs.
pub struct PodCertificateSigner {
    client: Client,
    signer_name: SignerName,
    rules: Rules,
    cluster_domain: String,
    policy: IssuePolicy,
    state: Arc<CaState>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    /// UIDs of the requests being worked on, so a watch event does not start a second task.
    in_flight: Mutex<HashSet<String>>,
    limiter: Semaphore,
}

/// How one attempt ended.
enum Settled {
    /// Sigil wrote this condition type with this reason.
    Written(&'static str, &'static str),
    /// Someone else settled it, or it is gone.
    Elsewhere,
    /// The status write conflicted (409): read the request again, no backoff.
    Conflict,
}

impl PodCertificateSigner {
    /// A signer for `signer_name`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        signer_name: SignerName,
        rules: Rules,
        cluster_domain: String,
        policy: IssuePolicy,
        state: Arc<CaState>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            signer_name,
            rules,
            cluster_domain,
            policy,
            state,
            metrics,
            clock,
            in_flight: Mutex::new(HashSet::new()),
            limiter: Semaphore::new(CONCURRENCY),
        })
    }

    fn api(&self) -> Api<PodCertificateRequest> {
        Api::all(self.client.clone())
    }

    fn field_selector(&self) -> String {
        format!("spec.signerName={}", self.signer_name)
    }

    /// Lists and watches until `shutdown` turns true. A watch that ends is renewed from the
    /// last version seen; a failed one, or an error event, leads to a new list (which also
    /// picks up every request still unsettled) after a backoff.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(signer = %self.signer_name, "PodCertificateRequest signer started");
        let mut backoff = BACKOFF.0;
        loop {
            let api = self.api();
            let params = ListParams::default().fields(&self.field_selector());
            let listed = tokio::select! {
                r = api.list(&params) => r,
                _ = shutdown.changed() => return,
            };
            let mut version = match listed {
                Ok(list) => {
                    for pcr in list.items {
                        self.offer(pcr, &shutdown);
                    }
                    list.metadata.resource_version.unwrap_or_default()
                }
                Err(e) => {
                    tracing::warn!(error = %ApiFailure::from_kube(e).message(), retry_in = ?backoff, "listing PodCertificateRequests failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
            };
            let reason = loop {
                let params = WatchParams::default()
                    .fields(&self.field_selector())
                    .timeout(WATCH_TIMEOUT_SECS);
                let stream = match self.api().watch(&params, &version).await {
                    Ok(s) => s,
                    Err(e) => break ApiFailure::from_kube(e).message(),
                };
                tokio::pin!(stream);
                let failed = loop {
                    let item = tokio::select! {
                        item = stream.next() => item,
                        _ = shutdown.changed() => return,
                    };
                    match item {
                        None => break None,
                        Some(Ok(WatchEvent::Added(pcr) | WatchEvent::Modified(pcr))) => {
                            if let Some(v) = pcr.metadata.resource_version.clone() {
                                version = v;
                            }
                            self.offer(pcr, &shutdown);
                            backoff = BACKOFF.0;
                        }
                        Some(Ok(WatchEvent::Deleted(pcr))) => {
                            if let Some(v) = pcr.metadata.resource_version {
                                version = v;
                            }
                        }
                        Some(Ok(WatchEvent::Bookmark(b))) => {
                            version = b.metadata.resource_version;
                        }
                        Some(Ok(WatchEvent::Error(status))) => {
                            break Some(format!("watch error {}: {}", status.code, status.message))
                        }
                        Some(Err(e)) => break Some(ApiFailure::from_kube(e).message()),
                    }
                };
                if let Some(why) = failed {
                    break why;
                }
            };
            tracing::debug!(reason = %reason, retry_in = ?backoff, "PodCertificateRequest watch ended; listing again");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF.1);
        }
    }

    /// Starts a task for `pcr` unless it is settled, not ours, or already being worked on.
    fn offer(self: &Arc<Self>, pcr: PodCertificateRequest, shutdown: &watch::Receiver<bool>) {
        if pcr.spec.signer_name != self.signer_name.as_str() || status::is_settled(&pcr) {
            return;
        }
        let Some(uid) = pcr.metadata.uid.clone() else {
            return;
        };
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uid.clone())
        {
            return;
        }
        let me = self.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.settle(pcr) => {}
                _ = shutdown.changed() => {}
            }
            me.in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
        });
    }

    /// Works on one request until it is settled (by Sigil or another replica) or gone.
    async fn settle(&self, mut pcr: PodCertificateRequest) {
        let started = Instant::now();
        let Ok(_permit) = self.limiter.acquire().await else {
            return;
        };
        let name = pcr.metadata.name.clone().unwrap_or_default();
        let namespace = pcr.metadata.namespace.clone().unwrap_or_default();
        let api: Api<PodCertificateRequest> = Api::namespaced(self.client.clone(), &namespace);
        let mut backoff = BACKOFF.0;
        let outcome = loop {
            match self.attempt(&pcr).await {
                Ok(Settled::Written(condition, reason)) => {
                    let elapsed = started.elapsed().as_secs_f64();
                    self.metrics.pod_certificate_duration.observe(elapsed);
                    break (condition, reason);
                }
                Ok(Settled::Elsewhere) => break ("Elsewhere", "Deleted"),
                Ok(Settled::Conflict) => {
                    tracing::debug!(namespace = %namespace, request = %name, "status update conflicted; reading the request again");
                }
                Err(e) => {
                    self.metrics.pod_certificate_retries.inc();
                    tracing::warn!(
                        namespace = %namespace,
                        request = %name,
                        error = %e,
                        retry_in = ?backoff,
                        "PodCertificateRequest not settled yet; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
            // Read it again: another replica may have settled it, or it was deleted.
            match cluster::call(self.rules.api_timeout, api.get(&name)).await {
                Ok(fresh) if status::is_settled(&fresh) => break ("Elsewhere", "SettledElsewhere"),
                Ok(fresh) => pcr = fresh,
                Err(ApiFailure::NotFound) => break ("Elsewhere", "Deleted"),
                Err(e) => {
                    tracing::warn!(namespace = %namespace, request = %name, error = %e.message(), "reading the PodCertificateRequest again failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
        };
        self.metrics
            .pod_certificate_requests
            .get_or_create(&PodCertificateLabels {
                outcome: outcome.0.to_ascii_lowercase(),
                reason: outcome.1.into(),
            })
            .inc();
    }

    /// One decision and one status write. `Err`: transient, retry.
    async fn attempt(&self, pcr: &PodCertificateRequest) -> Result<Settled, Error> {
        let name = pcr.metadata.name.as_deref().unwrap_or_default();
        let namespace = pcr.metadata.namespace.as_deref().unwrap_or_default();
        let now = self
            .clock
            .now()
            .replace_nanosecond(0)
            .unwrap_or(self.clock.now());
        let (new_status, condition, reason, audit) = match review::review(
            &self.client,
            &self.rules,
            pcr,
        )
        .await?
        {
            Verdict::Refuse {
                condition,
                reason,
                message,
            } => {
                let s = status::refused(condition, reason, &message, now);
                (s, condition, reason, message)
            }
            Verdict::Sign { identity, csr } => {
                let policy = leaf_policy(&self.policy, pcr.spec.max_expiration_seconds);
                let id = SpiffeId::workload(
                    &identity.trust_domain,
                    &identity.namespace,
                    &identity.app_id,
                );
                let extras = LeafExtras {
                    dns_names: control_plane_dns_names(
                        &identity,
                        &self.rules.control_plane_namespace,
                        &self.cluster_domain,
                    ),
                    container_images_json: identity.container_images_json.clone(),
                };
                let authority = self.state.current();
                let issued = authority
                    .issue(&csr, &id, &extras, &policy, now)
                    .map_err(Error::Signing)?;
                if issued.not_after - issued.not_before < MIN_LIFETIME {
                    return Err(Error::Signing(sigil_pki::Error::IssuerNotValidNow(format!(
                            "the issuer chain ends at {}, too soon for a leaf of at least an hour; rotate the issuer",
                            authority.valid_until()
                        ))));
                }
                let s = status::issued(&issued, now, jitter());
                let audit = format!(
                    "{id} serial {} not_after {} for {}",
                    issued.serial_hex, issued.not_after, identity.authenticated_as
                );
                (s, status::ISSUED, "Issued", audit)
            }
        };
        let mut updated = pcr.clone();
        updated.status = Some(new_status);
        let api: Api<PodCertificateRequest> = Api::namespaced(self.client.clone(), namespace);
        let written = cluster::call(
            self.rules.api_timeout,
            api.replace_status(name, &PostParams::default(), &updated),
        )
        .await;
        match written {
            Ok(_) => {
                let signer = self.signer_name.to_string();
                let request = crate::audit::PodRequest {
                    signer: &signer,
                    namespace,
                    request: name,
                    pod: &pcr.spec.pod_name,
                    node: &pcr.spec.node_name,
                };
                crate::audit::pod_certificate(&request, condition, reason, &audit);
                Ok(Settled::Written(condition, reason))
            }
            // Another replica wrote first (or the object changed): read it again.
            Err(ApiFailure::Conflict) => Ok(Settled::Conflict),
            Err(ApiFailure::NotFound) => Ok(Settled::Elsewhere),
            Err(ApiFailure::Forbidden(m) | ApiFailure::Other(m)) => Err(Error::Unavailable(
                format!("writing the status of {namespace}/{name}: {m}"),
            )),
        }
    }
}

/// The issue policy of one request: a lifetime (NotBefore to NotAfter) of the smaller of the
/// workload TTL and `maxExpirationSeconds`, but at least the API server's floor of an hour (a
/// workload TTL below it would otherwise never let a request be issued), NotBefore backdated
/// by the allowed clock skew but at most [`MAX_BACKDATE`]. `Authority::issue` caps NotAfter at
/// the chain's end on top.
fn leaf_policy(policy: &IssuePolicy, max_expiration_seconds: Option<i32>) -> IssuePolicy {
    let max =
        time::Duration::seconds(max_expiration_seconds.map_or(DEFAULT_MAX_EXPIRATION, i64::from));
    let lifetime = policy.ttl.min(max).max(MIN_LIFETIME);
    let backdate = policy
        .clock_skew
        .clamp(time::Duration::ZERO, MAX_BACKDATE)
        .min(lifetime / 2);
    IssuePolicy {
        ttl: lifetime - backdate,
        clock_skew: backdate,
    }
}

/// A uniform number in [-1, 1] for the refresh jitter (0 if the system RNG fails).
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.0;
    }
    f64::from(u32::from_be_bytes(b)) / f64::from(u32::MAX) * 2.0 - 1.0
}

/// Starts the signer, and the ClusterTrustBundle publisher, on the current runtime.
pub fn spawn(signer: Arc<PodCertificateSigner>, shutdown: watch::Receiver<bool>) {
    tokio::spawn(trust_bundle::keep_published(
        signer.client.clone(),
        signer.signer_name.clone(),
        signer.state.clone(),
        signer.rules.api_timeout,
        shutdown.clone(),
    ));
    tokio::spawn(signer.run(shutdown));
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration as D;

    fn policy(ttl: D, skew: D) -> IssuePolicy {
        IssuePolicy {
            ttl,
            clock_skew: skew,
        }
    }

    #[test]
    fn lifetime_is_the_smaller_of_ttl_and_max_expiration() {
        // TTL 24 h, max 1 h: the leaf spans exactly 3600 s, 2 min of it before now.
        let p = leaf_policy(&policy(D::hours(24), D::minutes(15)), Some(3600));
        assert_eq!(p.ttl + p.clock_skew, D::hours(1));
        assert_eq!(p.clock_skew, MAX_BACKDATE);
        // TTL 2 h, no max (the API server's default 24 h): the TTL decides.
        let p = leaf_policy(&policy(D::hours(2), D::minutes(15)), None);
        assert_eq!(p.ttl + p.clock_skew, D::hours(2));
        // A smaller skew is kept as it is.
        let p = leaf_policy(&policy(D::hours(2), D::seconds(30)), Some(7200));
        assert_eq!((p.ttl, p.clock_skew), (D::seconds(7170), D::seconds(30)));
        assert!(p.validate().is_ok());
        // A workload TTL under the API server's floor: an hour.
        let p = leaf_policy(&policy(D::minutes(10), D::minutes(1)), Some(7200));
        assert_eq!((p.ttl, p.clock_skew), (D::minutes(59), D::minutes(1)));
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let j = jitter();
            assert!((-1.0..=1.0).contains(&j), "{j}");
        }
    }
}
