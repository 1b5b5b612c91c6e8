//! The Kubernetes validator: a service-account token, proven by the API server's
//! TokenReview, tied to a pod, and through the pod to an app id and a trust domain.
//!
//! Steps, after Dapr's common request checks:
//! 1. TokenReview with Sentry's two audiences. The review must say `authenticated`, and
//!    (unlike Dapr) the audiences it confirms must be among those asked for.
//! 2. The user name must be `system:serviceaccount:<ns>:<sa>`, and `<ns>` the requested
//!    namespace.
//! 3. The pod name (and, when present, the pod UID) comes from the reviewed token's
//!    payload; the pod is read from a trimmed local copy kept by a watch, or with a GET
//!    ([`super::pods`]). Its service account must be `<sa>` and
//!    its UID the token's (a token of a deleted pod must not vouch for a new pod that got
//!    the same name).
//! 4. Expected app id: `dapr-<service>` for Dapr's own control plane (annotation
//!    `dapr.io/control-plane`, only in the control-plane namespace, only Dapr's services,
//!    never with `dapr.io/app-id`), else annotation `dapr.io/app-id`, else the pod name.
//! 5. Trust domain: the control plane's, or the app's `Configuration` (annotation
//!    `dapr.io/config`) `spec.accessControl.trustDomain`, default `public`. The request's
//!    own trust domain is ignored.
//!
//! Refusals are [`Error::Denied`]; an API server that cannot be asked is
//! [`Error::Unavailable`]: fail closed, never fall back to weaker checks. Successes are
//! cached (see [`super::cache`]), and identical requests that arrive while one is being
//! validated wait for its answer instead of asking the API server again (a mass restart
//! whose sidecars retry at once costs one TokenReview per token, not one per attempt).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, Client};
use serde::Serialize;
use sigil_pki::{jose, Clock, Namespace, TrustDomain};
use time::OffsetDateTime;

use super::cache::{cache_key, ValidationCache};
use super::pod_lookup::PodLookup;
use super::pods::Pods;
use super::{common_checks, Claims, Identity, TokenValidator, ValidatorKind, DEFAULT_TRUST_DOMAIN};
use crate::cluster;
use crate::observe::Metrics;
use crate::Error;

/// The audience older daprd versions put in their tokens; still accepted, as in Dapr.
pub const LEGACY_AUDIENCE: &str = "dapr.io/sentry";
/// Pod annotation naming a Dapr control-plane service.
pub const ANNOTATION_CONTROL_PLANE: &str = "dapr.io/control-plane";
/// Pod annotation with the app id.
pub const ANNOTATION_APP_ID: &str = "dapr.io/app-id";
/// Pod annotation naming the app's Dapr `Configuration`.
pub const ANNOTATION_CONFIG: &str = "dapr.io/config";
/// Dapr's control-plane services (value of `dapr.io/control-plane`).
pub const CONTROL_PLANE_SERVICES: [&str; 5] =
    ["injector", "operator", "placement", "sentry", "scheduler"];
/// Most containers described in the certificate's image extension.
const MAX_IMAGE_ENTRIES: usize = 64;
/// Clock skew allowed when looking at a token's `exp` before the review (the API server
/// applies its own rules after).
const PRECHECK_LEEWAY: Duration = Duration::from_secs(60);
/// Largest image JSON put into a certificate.
const MAX_IMAGES_JSON: usize = 16 * 1024;

/// Settings of the Kubernetes validator.
#[derive(Clone, Debug)]
pub struct KubernetesOptions {
    /// Trust domain of the control plane (Configuration `controlPlaneTrustDomain`).
    pub control_plane_trust_domain: TrustDomain,
    /// Namespace Sigil runs in.
    pub control_plane_namespace: Namespace,
    /// How long a success is reused (zero disables the cache).
    pub cache_ttl: Duration,
    /// Most cached successes.
    pub cache_size: usize,
    /// Deadline of one API call.
    pub api_timeout: Duration,
    /// Where pods are read from.
    pub pod_lookup: PodLookup,
    /// Accept a TokenReview whose status confirms no audiences (an authenticator that is not
    /// audience-aware, or Dapr's test API server). Off: the confirmed audiences must include
    /// one of Sentry's.
    pub review_audiences_optional: bool,
}

/// Validates Kubernetes service-account tokens.
pub struct KubernetesValidator {
    client: Client,
    pods: Pods,
    options: KubernetesOptions,
    audiences: Vec<String>,
    cache: ValidationCache,
    // Validations under way, by cache key; later identical requests share the answer.
    in_flight: std::sync::Mutex<std::collections::HashMap<super::cache::CacheKey, Arc<InFlight>>>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for KubernetesValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesValidator")
            .field("options", &self.options)
            .field("audiences", &self.audiences)
            .finish()
    }
}

/// What the validator reads from the (already reviewed) token's payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenFacts {
    /// The pod the token was issued for.
    pub pod_name: String,
    /// That pod's UID, when the token carries it.
    pub pod_uid: Option<String>,
    /// The namespace claim, when present.
    pub namespace: Option<String>,
    /// `exp`, when present.
    pub expires: Option<OffsetDateTime>,
    /// Whether the token has a non-empty `aud` claim.
    pub has_audience: bool,
    /// Whether the token is a compact JWT (not Dapr's bare-JSON test form).
    pub is_jwt: bool,
}

fn denied(msg: impl Into<String>) -> Error {
    Error::Denied(msg.into())
}

fn str_at<'a>(v: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
}

/// Reads the pod binding from a JWT's payload without checking the signature: it is read
/// before the TokenReview only to refuse garbage cheaply ([`precheck`]), and trusted only
/// after the API server has reviewed this very token. Both the projected-token form
/// (`"kubernetes.io": {"pod": {"name", "uid"}}`) and flat `kubernetes.io/pod/name` claims
/// are understood; if both are present they must agree.
///
/// A token that is a bare JSON object is read as its own payload, as Dapr's parser does
/// (Dapr's test API server hands out such tokens). That widens nothing: the claims are
/// trusted only because the API server authenticated the token, whatever its form.
pub fn read_token_facts(token: &str) -> Result<TokenFacts, Error> {
    let is_jwt = !token.trim_start().starts_with('{');
    let claims: serde_json::Value = if is_jwt {
        let parts = jose::jws::Compact::split(token)
            .map_err(|e| denied(format!("the token is not a JWT: {e}")))?;
        parts
            .payload_json()
            .map_err(|e| denied(format!("the token's payload is unreadable: {e}")))?
    } else {
        serde_json::from_str(token)
            .ok()
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| denied("the token's payload is not a JSON object"))?
    };
    let pick = |nested: &[&str], flat: &str| -> Result<Option<String>, Error> {
        let a = str_at(&claims, nested);
        let b = str_at(&claims, &[flat]);
        match (a, b) {
            (Some(a), Some(b)) if a != b => {
                Err(denied(format!("the token's claims disagree about {flat}")))
            }
            (a, b) => Ok(a.or(b).map(str::to_owned)),
        }
    };
    let pod_name = pick(&["kubernetes.io", "pod", "name"], "kubernetes.io/pod/name")?
        .ok_or_else(|| {
            denied("the token has no kubernetes.io pod name claim; a pod-bound (projected) service-account token is required")
        })?;
    let pod_uid = pick(&["kubernetes.io", "pod", "uid"], "kubernetes.io/pod/uid")?;
    let namespace = pick(&["kubernetes.io", "namespace"], "kubernetes.io/namespace")?;
    let expires = match claims.get("exp") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => {
            let secs = v
                .as_i64()
                .or_else(|| v.as_f64().map(|f| f as i64))
                .ok_or_else(|| denied("the token's exp claim is not a number"))?;
            Some(
                OffsetDateTime::from_unix_timestamp(secs)
                    .map_err(|_| denied("the token's exp claim is out of range"))?,
            )
        }
    };
    let has_audience = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => !a.is_empty(),
        Some(serde_json::Value::Array(a)) => {
            a.iter().any(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        }
        _ => false,
    };
    Ok(TokenFacts {
        pod_name,
        pod_uid,
        namespace,
        expires,
        has_audience,
        is_jwt,
    })
}

/// The local look at a token before it costs a TokenReview: a pod-bound token's shape
/// ([`read_token_facts`]), and for a JWT an audience and an `exp` not yet past (with
/// `leeway` for clock skew). Nothing here is trusted: the review decides; this only keeps
/// garbage, legacy and expired tokens away from the API server.
pub fn precheck(token: &str, now: OffsetDateTime, leeway: Duration) -> Result<TokenFacts, Error> {
    let facts = read_token_facts(token)?;
    if facts.is_jwt && !facts.has_audience {
        return Err(denied(
            "the token has no audience; a projected service-account token for Sentry is required",
        ));
    }
    if let Some(exp) = facts.expires {
        let leeway = time::Duration::try_from(leeway).unwrap_or(time::Duration::MAX);
        if exp.checked_add(leeway).is_some_and(|limit| limit < now) {
            return Err(denied("the token has expired"));
        }
    }
    Ok(facts)
}

/// A Kubernetes object name: a DNS-1123 subdomain (at most 253 characters of lowercase
/// letters, digits, `-` and `.`, beginning and ending with a letter or digit).
pub fn is_dns1123_subdomain(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 253
        && alnum(bytes[0])
        && alnum(bytes[bytes.len() - 1])
        && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.')
}

/// Splits `system:serviceaccount:<ns>:<sa>`.
pub fn service_account_of(username: &str) -> Result<(&str, &str), Error> {
    let parts: Vec<&str> = username.split(':').collect();
    match parts.as_slice() {
        ["system", "serviceaccount", ns, sa] if !ns.is_empty() && !sa.is_empty() => Ok((ns, sa)),
        _ => Err(denied(format!(
            "the token does not belong to a service account (user {:?}); expected system:serviceaccount:<namespace>:<name>",
            username.chars().take(120).collect::<String>()
        ))),
    }
}

/// The app id a pod may ask for, and whether it is a control-plane service.
pub fn expected_app_id(
    pod_name: &str,
    pod_namespace: &str,
    annotations: &BTreeMap<String, String>,
    control_plane_ns: &Namespace,
) -> Result<(String, bool), Error> {
    let app_id = annotations.get(ANNOTATION_APP_ID);
    match annotations.get(ANNOTATION_CONTROL_PLANE) {
        Some(service) => {
            if pod_namespace != control_plane_ns.as_str() {
                return Err(denied(format!(
                    "pod {pod_namespace}/{pod_name} claims to be a Dapr control-plane service outside the control-plane namespace"
                )));
            }
            if !CONTROL_PLANE_SERVICES.contains(&service.as_str()) {
                return Err(denied(format!(
                    "pod {pod_namespace}/{pod_name}: {service:?} is not a Dapr control-plane service"
                )));
            }
            if app_id.is_some() {
                return Err(denied(format!(
                    "pod {pod_namespace}/{pod_name}: a control-plane service must not also carry the {ANNOTATION_APP_ID} annotation"
                )));
            }
            Ok((format!("dapr-{service}"), true))
        }
        None => Ok((
            app_id.cloned().unwrap_or_else(|| pod_name.to_owned()),
            false,
        )),
    }
}

/// One entry of Dapr's container-images extension (field names as Dapr's).
#[derive(Serialize)]
struct ImageEntry<'a> {
    role: &'static str,
    #[serde(rename = "containerName")]
    container_name: &'a str,
    image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
}

/// JSON describing the pod's containers and their images, for Dapr's certificate extension,
/// built as Dapr builds it: native sidecars (init containers with `restartPolicy: Always`,
/// which is how daprd runs in native-sidecar mode) first, then the containers; role `daprd`
/// for the container named `daprd`, `app` for every other; the digest from the kubelet's
/// `imageID` once the container has started.
pub fn container_images_json(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref();
    let digest_of = |name: &str, init: bool| -> Option<&str> {
        let statuses = if init {
            status.and_then(|s| s.init_container_statuses.as_ref())
        } else {
            status.and_then(|s| s.container_statuses.as_ref())
        }?;
        let id = &statuses.iter().find(|s| s.name == name)?.image_id;
        id.rsplit_once('@')
            .map(|(_, d)| d)
            .or_else(|| id.starts_with("sha256:").then_some(id.as_str()))
            .filter(|d| !d.is_empty())
    };
    let native_sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| (c, true));
    let mut entries = Vec::new();
    for (c, is_init) in native_sidecars.chain(spec.containers.iter().map(|c| (c, false))) {
        entries.push(ImageEntry {
            role: if c.name == "daprd" { "daprd" } else { "app" },
            container_name: &c.name,
            image: c.image.as_deref().unwrap_or(""),
            digest: digest_of(&c.name, is_init),
        });
        if entries.len() >= MAX_IMAGE_ENTRIES {
            break;
        }
    }
    if entries.is_empty() {
        return None;
    }
    let json = serde_json::to_string(&entries).ok()?;
    (json.len() <= MAX_IMAGES_JSON).then_some(json)
}

impl KubernetesValidator {
    /// A validator asking the API server behind `client`.
    pub fn new(
        client: Client,
        options: KubernetesOptions,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let sentry_id = format!(
            "spiffe://{}/ns/{}/dapr-sentry",
            options.control_plane_trust_domain, options.control_plane_namespace
        );
        Self {
            pods: Pods::new(client.clone(), options.pod_lookup, options.api_timeout),
            client,
            audiences: vec![LEGACY_AUDIENCE.to_string(), sentry_id],
            cache: ValidationCache::new(options.cache_ttl, options.cache_size),
            in_flight: std::sync::Mutex::new(std::collections::HashMap::new()),
            options,
            metrics,
            clock,
        }
    }

    /// The audiences asked for in every TokenReview.
    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// TokenReview; returns the user name.
    async fn review(&self, token: &str) -> Result<String, Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(self.audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = cluster::call(
            self.options.api_timeout,
            api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|e| e.unavailable("TokenReview"))?;
        let status = answer.status.unwrap_or_default();
        if let Some(err) = status.error.as_deref().filter(|e| !e.is_empty()) {
            return Err(denied(format!(
                "token review refused the token: {}",
                err.chars().take(200).collect::<String>()
            )));
        }
        if status.authenticated != Some(true) {
            return Err(denied("token review: the token is not authenticated"));
        }
        let confirmed = status.audiences.unwrap_or_default();
        let unconfirmed_ok = self.options.review_audiences_optional && confirmed.is_empty();
        if !unconfirmed_ok && !confirmed.iter().any(|a| self.audiences.contains(a)) {
            return Err(denied(format!(
                "token review: the token is not meant for Sentry (audiences confirmed: {confirmed:?}; need one of {:?})",
                self.audiences
            )));
        }
        status
            .user
            .and_then(|u| u.username)
            .ok_or_else(|| denied("token review returned no user name"))
    }

    async fn validate_uncached(
        &self,
        claims: &Claims,
        namespace: Namespace,
        app_id: sigil_pki::AppId,
    ) -> Result<(Identity, Option<OffsetDateTime>), Error> {
        let facts = precheck(&claims.token, self.clock.now(), PRECHECK_LEEWAY)?;
        let username = self.review(&claims.token).await?;
        let (sa_ns, sa_name) = service_account_of(&username)?;
        if sa_ns != namespace.as_str() {
            return Err(denied(format!(
                "namespace mismatch: the token belongs to namespace {sa_ns}, the request asked for {namespace}"
            )));
        }
        if facts.namespace.as_deref().is_some_and(|ns| ns != sa_ns) {
            return Err(denied(
                "the token's namespace claim disagrees with its service account",
            ));
        }
        let pod = self.pods.get(sa_ns, &facts.pod_name).await?;
        let spec_sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or("default");
        if spec_sa != sa_name {
            return Err(denied(format!(
                "pod {sa_ns}/{} runs as service account {spec_sa}, the token belongs to {sa_name}",
                facts.pod_name
            )));
        }
        if let Some(uid) = &facts.pod_uid {
            if pod.metadata.uid.as_deref() != Some(uid.as_str()) {
                return Err(denied(format!(
                    "pod {sa_ns}/{} is not the pod the token was issued for (UID differs)",
                    facts.pod_name
                )));
            }
        }
        let empty = BTreeMap::new();
        let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
        let (expected, control_plane) = expected_app_id(
            &facts.pod_name,
            sa_ns,
            annotations,
            &self.options.control_plane_namespace,
        )?;
        if expected != app_id.as_str() {
            return Err(denied(format!(
                "app id mismatch: pod {sa_ns}/{} may ask for {expected:?}, the request asked for {:?}",
                facts.pod_name,
                app_id.as_str()
            )));
        }
        let trust_domain = pod_trust_domain(
            &self.client,
            self.options.api_timeout,
            &self.options.control_plane_trust_domain,
            sa_ns,
            &pod,
            control_plane,
        )
        .await?;
        Ok((
            Identity {
                trust_domain,
                namespace,
                app_id,
                authenticated_as: username,
                container_images_json: container_images_json(&pod),
                control_plane,
            },
            facts.expires,
        ))
    }
}

/// One validation under way, shared by identical requests.
type InFlight = tokio::sync::OnceCell<Result<(Identity, Option<OffsetDateTime>), SharedRefusal>>;

/// A validation's refusal, in a form every waiter can have a copy of.
#[derive(Clone, Debug)]
enum SharedRefusal {
    Denied(String),
    Unavailable(String),
}

impl From<Error> for SharedRefusal {
    fn from(e: Error) -> Self {
        match e {
            Error::Denied(m) => SharedRefusal::Denied(m),
            Error::Unavailable(m) => SharedRefusal::Unavailable(m),
            // Nothing else comes out of a validation; fail closed, as for a backend problem.
            other => SharedRefusal::Unavailable(other.to_string()),
        }
    }
}

impl From<SharedRefusal> for Error {
    fn from(e: SharedRefusal) -> Self {
        match e {
            SharedRefusal::Denied(m) => Error::Denied(m),
            SharedRefusal::Unavailable(m) => Error::Unavailable(m),
        }
    }
}

/// The trust domain of a pod's certificate (step 5): the control plane's for a control-plane
/// service (`control_plane` from [`expected_app_id`]), else the pod's Dapr `Configuration`
/// (annotation `dapr.io/config`) `spec.accessControl.trustDomain`, default `public`. Shared by
/// the gRPC validator and the PodCertificateRequest signer.
pub async fn pod_trust_domain(
    client: &Client,
    api_timeout: Duration,
    control_plane_trust_domain: &TrustDomain,
    namespace: &str,
    pod: &Pod,
    control_plane: bool,
) -> Result<TrustDomain, Error> {
    if control_plane {
        return Ok(control_plane_trust_domain.clone());
    }
    let annotations = pod.metadata.annotations.as_ref();
    let Some(config_name) = annotations
        .and_then(|a| a.get(ANNOTATION_CONFIG))
        .filter(|n| !n.is_empty())
    else {
        return default_trust_domain();
    };
    // The name goes into the request URL: only what Kubernetes allows as an object name.
    if !is_dns1123_subdomain(config_name) {
        return Err(denied(format!(
            "the pod's {ANNOTATION_CONFIG} annotation {:?} is not a valid Configuration name (a DNS-1123 subdomain)",
            config_name.chars().take(64).collect::<String>()
        )));
    }
    let data = cluster::get_configuration(client, namespace, config_name, api_timeout)
        .await
        .map_err(|e| e.unavailable("reading the app's Configuration"))?
        .ok_or_else(|| {
            denied(format!(
                "the pod's Configuration {namespace}/{config_name} (annotation {ANNOTATION_CONFIG}) does not exist"
            ))
        })?;
    match str_at(&data, &["spec", "accessControl", "trustDomain"]) {
        None => default_trust_domain(),
        Some(td) => TrustDomain::new(td).map_err(|e| {
            denied(format!(
                "Configuration {namespace}/{config_name} has an invalid trust domain: {e}"
            ))
        }),
    }
}

fn default_trust_domain() -> Result<TrustDomain, Error> {
    TrustDomain::new(DEFAULT_TRUST_DOMAIN).map_err(Error::Ca)
}

#[async_trait::async_trait]
impl TokenValidator for KubernetesValidator {
    fn kind(&self) -> ValidatorKind {
        ValidatorKind::Kubernetes
    }

    async fn validate(&self, claims: &Claims) -> Result<Identity, Error> {
        let (app_id, namespace) = common_checks(claims)?;
        if claims.token.is_empty() {
            return Err(denied("a service-account token is required"));
        }
        // The longest token sent to the API server: the JOSE limit, the same for every
        // validator.
        if claims.token.len() > jose::MAX_TOKEN_BYTES {
            return Err(denied(format!(
                "the token is longer than {} bytes",
                jose::MAX_TOKEN_BYTES
            )));
        }
        let key = cache_key(&claims.token, &claims.id, &claims.namespace);
        if self.cache.enabled() {
            if let Some(identity) = self.cache.get(&key, self.clock.now()) {
                self.metrics.cache_hits.inc();
                return Ok(identity);
            }
            self.metrics.cache_misses.inc();
        }
        let cell = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .clone();
        // The first caller validates; the others wait for its answer. If it goes away
        // (its client hung up), the next waiter takes over.
        let answer = cell
            .get_or_init(|| async move {
                // An identical validation may have finished between the cache miss above and
                // this cell's creation (its own cell already gone): its answer is cached.
                // It was inserted before its cell was removed, so one of the two is found.
                if let Some(identity) = self.cache.get(&key, self.clock.now()) {
                    return Ok((identity, None));
                }
                let answer = self
                    .validate_uncached(claims, namespace, app_id)
                    .await
                    .map_err(SharedRefusal::from);
                if let Ok((identity, expires)) = &answer {
                    self.cache
                        .insert(key, identity.clone(), self.clock.now(), *expires);
                }
                answer
            })
            .await
            .clone();
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            if in_flight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                in_flight.remove(&key);
            }
        }
        answer.map(|(identity, _)| identity).map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    fn jwt(payload: serde_json::Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        )
    }

    #[test]
    fn token_facts_from_projected_and_flat_claims() {
        let t = jwt(serde_json::json!({
            "exp": 1_800_000_000u64,
            "kubernetes.io": {"namespace": "shop", "pod": {"name": "orders-1", "uid": "u-1"}}
        }));
        let f = read_token_facts(&t).unwrap();
        assert_eq!(f.pod_name, "orders-1");
        assert_eq!(f.pod_uid.as_deref(), Some("u-1"));
        assert_eq!(f.namespace.as_deref(), Some("shop"));
        assert_eq!(f.expires.unwrap().unix_timestamp(), 1_800_000_000);

        let flat = jwt(serde_json::json!({"kubernetes.io/pod/name": "p"}));
        let f = read_token_facts(&flat).unwrap();
        assert_eq!(f.pod_name, "p");
        assert_eq!(f.pod_uid, None);
        assert_eq!(f.expires, None);

        let disagree = jwt(serde_json::json!({
            "kubernetes.io/pod/name": "p",
            "kubernetes.io": {"pod": {"name": "q"}}
        }));
        assert!(matches!(read_token_facts(&disagree), Err(Error::Denied(_))));
    }

    #[test]
    fn precheck_keeps_expired_audience_less_and_legacy_tokens_from_the_api_server() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let leeway = Duration::from_secs(60);
        let pod = serde_json::json!({"name": "p", "uid": "u"});
        let good = jwt(serde_json::json!({
            "aud": ["dapr.io/sentry"], "exp": 1_800_000_600u64, "kubernetes.io": {"pod": pod}
        }));
        assert_eq!(precheck(&good, now, leeway).unwrap().pod_name, "p");
        // Within the leeway.
        let just = jwt(serde_json::json!({
            "aud": "x", "exp": 1_799_999_970u64, "kubernetes.io": {"pod": pod}
        }));
        assert!(precheck(&just, now, leeway).is_ok());
        let expired = jwt(serde_json::json!({
            "aud": "x", "exp": 1_799_999_000u64, "kubernetes.io": {"pod": pod}
        }));
        let e = precheck(&expired, now, leeway).unwrap_err().to_string();
        assert!(e.contains("expired"), "{e}");
        for aud in [
            serde_json::json!(null),
            serde_json::json!(""),
            serde_json::json!([]),
        ] {
            let t = jwt(serde_json::json!({"aud": aud, "kubernetes.io": {"pod": pod}}));
            let e = precheck(&t, now, leeway).unwrap_err().to_string();
            assert!(e.contains("no audience"), "{e}");
        }
        // A legacy Secret-based token: no pod claim.
        let legacy = jwt(serde_json::json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "shop"
        }));
        assert!(precheck(&legacy, now, leeway).is_err());
        // Dapr's bare-JSON form carries no aud; only its shape is looked at.
        let bare = r#"{"kubernetes.io":{"pod":{"name":"p"}}}"#;
        assert!(precheck(bare, now, leeway).is_ok());
        // An exp far in the future or past never overflows.
        let huge =
            jwt(serde_json::json!({"aud": "x", "exp": i64::MAX, "kubernetes.io": {"pod": pod}}));
        assert!(precheck(&huge, now, Duration::MAX).is_err());
    }

    #[test]
    fn configuration_names_are_dns_1123_subdomains() {
        for ok in ["appconfig", "app-config.v2", "a", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "../secrets/x",
            "a/b",
            "App",
            "-a",
            "a-",
            "a b",
            "a?x=1",
            "%2e%2e",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn token_without_pod_or_garbage_is_denied() {
        let legacy = jwt(serde_json::json!({
            "kubernetes.io/serviceaccount/namespace": "shop"
        }));
        let e = read_token_facts(&legacy).unwrap_err().to_string();
        assert!(e.contains("pod name claim"), "{e}");
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            &format!("a.{}.c", URL_SAFE_NO_PAD.encode("[1]")),
        ] {
            assert!(
                matches!(read_token_facts(bad), Err(Error::Denied(_))),
                "{bad}"
            );
        }
        let bad_exp = jwt(serde_json::json!({"exp": "soon", "kubernetes.io/pod/name": "p"}));
        assert!(read_token_facts(&bad_exp).is_err());
    }

    #[test]
    fn service_account_usernames() {
        assert_eq!(
            service_account_of("system:serviceaccount:shop:orders").unwrap(),
            ("shop", "orders")
        );
        for bad in [
            "system:serviceaccount:shop",
            "system:serviceaccount:shop:orders:x",
            "system:node:n1:x",
            "alice",
            "system:serviceaccount::orders",
        ] {
            assert!(service_account_of(bad).is_err(), "{bad}");
        }
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expected_ids_follow_dapr_rules() {
        let cp: Namespace = "dapr-system".parse().unwrap();
        assert_eq!(
            expected_app_id("p", "shop", &ann(&[]), &cp).unwrap(),
            ("p".into(), false)
        );
        assert_eq!(
            expected_app_id("p", "shop", &ann(&[(ANNOTATION_APP_ID, "orders")]), &cp).unwrap(),
            ("orders".into(), false)
        );
        for svc in CONTROL_PLANE_SERVICES {
            assert_eq!(
                expected_app_id(
                    "p",
                    "dapr-system",
                    &ann(&[(ANNOTATION_CONTROL_PLANE, svc)]),
                    &cp
                )
                .unwrap(),
                (format!("dapr-{svc}"), true)
            );
        }
        // Outside the control-plane namespace, unknown service, or with an app id: refused.
        assert!(expected_app_id(
            "p",
            "shop",
            &ann(&[(ANNOTATION_CONTROL_PLANE, "operator")]),
            &cp
        )
        .is_err());
        assert!(expected_app_id(
            "p",
            "dapr-system",
            &ann(&[(ANNOTATION_CONTROL_PLANE, "dashboard")]),
            &cp
        )
        .is_err());
        assert!(expected_app_id(
            "p",
            "dapr-system",
            &ann(&[
                (ANNOTATION_CONTROL_PLANE, "operator"),
                (ANNOTATION_APP_ID, "x")
            ]),
            &cp
        )
        .is_err());
    }

    #[test]
    fn image_json_names_roles_and_digests() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [
                    {"name": "setup", "image": "busybox:1"},
                    {"name": "daprd", "image": "ghcr.io/dapr/daprd:1.16", "restartPolicy": "Always"}
                ],
                "containers": [
                    {"name": "app", "image": "shop/orders:2"},
                    {"name": "cache", "image": "redis:7"}
                ]
            },
            "status": {
                "initContainerStatuses": [{
                    "name": "daprd", "image": "ghcr.io/dapr/daprd:1.16",
                    "imageID": "sha256:d00d", "ready": true, "restartCount": 0
                }],
                "containerStatuses": [{
                    "name": "app", "image": "shop/orders:2",
                    "imageID": "docker.io/shop/orders@sha256:abcd", "ready": true,
                    "restartCount": 0
                }]
            }
        }))
        .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&container_images_json(&pod).unwrap()).unwrap();
        // The one-shot init container is left out; the native sidecar comes first.
        assert_eq!(
            json,
            serde_json::json!([
                {"role": "daprd", "containerName": "daprd", "image": "ghcr.io/dapr/daprd:1.16", "digest": "sha256:d00d"},
                {"role": "app", "containerName": "app", "image": "shop/orders:2", "digest": "sha256:abcd"},
                {"role": "app", "containerName": "cache", "image": "redis:7"}
            ])
        );
    }
}
