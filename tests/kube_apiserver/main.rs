//! Kubernetes mode against a real kube-apiserver and etcd (`conformance/kube/controlplane.sh`),
//! through the real `kube` client. Sigil runs with a TokenRequest token of the chart's
//! ServiceAccount and exactly the RBAC objects of `deploy/manifests/sigil.yaml`; callers
//! present TokenRequest tokens bound to Pods (API objects on a Node object; nothing runs).
//!
//! Ignored by default: they need a running control plane. With one:
//!
//! ```sh
//! conformance/kube/controlplane.sh build target/controlplane
//! conformance/kube/controlplane.sh start target/kube-state
//! SIGIL_KUBE_STATEDIR=target/kube-state cargo test --test kube_apiserver -- --ignored
//! conformance/kube/controlplane.sh stop target/kube-state
//! ```
//!
//! Run with `--ignored` and without `SIGIL_KUBE_STATEDIR`, every test fails.

#[path = "../support/mod.rs"]
mod support;

mod cache;
mod faults;
mod identity;
mod jwt;
mod rbac;
mod trust_bundle;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use serde_json::{json, Value};
use sigil::server::RunningServer;
use support::apiserver::{configuration, controlplane, namespace, statedir};
use support::{ca_client, request, sentry_audience, start_sigil_for, CP_NS};
use tonic::Code;
use x509_parser::extensions::GeneralName;

/// The chart rendered with defaults: Sigil's ServiceAccount, RBAC and trust-bundle objects.
const MANIFEST: &str = include_str!("../../deploy/manifests/sigil.yaml");
/// Sigil's ServiceAccount in the manifest.
const SIGIL_SA: &str = "dapr-sentry";
/// The Node the test Pods are bound to.
const NODE: &str = "sigil-test-node";
/// Field manager of everything the tests apply.
const MANAGER: &str = "sigil-kube-apiserver-tests";
/// Sigil's wording when the API server's TokenReview does not authenticate a token.
const REVIEW_REFUSED: &str = "token review refused the token";
/// Sigil's wording for a token that names no pod.
const NOT_POD_BOUND: &str = "pod-bound (projected) service-account token is required";

async fn admin_client(statedir: &Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(statedir.join("admin.kubeconfig"))
        .expect("admin kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("admin kubeconfig is usable");
    Client::try_from(config).expect("admin client")
}

fn ssa() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// Server-side apply of `obj` (idempotent, so concurrent tests may all apply the shared
/// objects).
async fn apply(client: &Client, ar: &ApiResource, namespaced: bool, obj: Value) {
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    let api: Api<DynamicObject> = if namespaced {
        let ns = obj["metadata"]["namespace"].as_str().expect("namespace");
        Api::namespaced_with(client.clone(), ns, ar)
    } else {
        Api::all_with(client.clone(), ar)
    };
    api.patch(&name, &ssa(), &Patch::Apply(&obj))
        .await
        .unwrap_or_else(|e| panic!("apply {} {name}: {e}", ar.kind));
}

/// The kinds of the manifest this file applies: everything Sigil's grants and its store are
/// made of. The Deployment, Service and PodDisruptionBudget need controllers or a kubelet to
/// mean anything and are left out; Sigil runs in the test process instead.
fn applied_kind(kind: &str) -> Option<(&'static str, &'static str, &'static str, bool)> {
    // (group, version, plural, namespaced)
    Some(match kind {
        "ServiceAccount" => ("", "v1", "serviceaccounts", true),
        "Secret" => ("", "v1", "secrets", true),
        "ConfigMap" => ("", "v1", "configmaps", true),
        "ClusterRole" => ("rbac.authorization.k8s.io", "v1", "clusterroles", false),
        "ClusterRoleBinding" => (
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            false,
        ),
        "Role" => ("rbac.authorization.k8s.io", "v1", "roles", true),
        "RoleBinding" => ("rbac.authorization.k8s.io", "v1", "rolebindings", true),
        _ => return None,
    })
}

/// The shared part of every test, once per run: Sigil's namespace and the manifest's objects,
/// the Dapr `Configuration` CRD with Sentry's `daprsystem` (1 h workload certificates), and a
/// Node. Once only: applying the manifest again would re-create trust-bundle objects that a
/// test holding [`TRUST_BUNDLE`] has just deleted.
async fn cluster_setup(client: &Client) {
    std::sync::LazyLock::force(&RUN_START);
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| cluster_setup_once(client)).await;
}

async fn cluster_setup_once(client: &Client) {
    namespace(client, &ssa(), CP_NS).await;
    apply_manifest(client).await;

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "configurations.dapr.io"},
        "spec": {
            "group": "dapr.io",
            "scope": "Namespaced",
            "names": {"kind": "Configuration", "listKind": "ConfigurationList",
                      "plural": "configurations", "singular": "configuration"},
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                }}}
            }]
        }
    }))
    .unwrap();
    crds.patch("configurations.dapr.io", &ssa(), &Patch::Apply(&crd))
        .await
        .expect("apply the Configuration CRD");
    // Established: the API server serves the new resource.
    let mut established = false;
    for _ in 0..100 {
        let crd = crds.get("configurations.dapr.io").await.expect("get CRD");
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            established = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        established,
        "the Configuration CRD never became Established"
    );
    configuration(
        client,
        &ssa(),
        CP_NS,
        "daprsystem",
        json!({"mtls": {"enabled": true, "workloadCertTTL": "1h", "controlPlaneTrustDomain": "cluster.local"}}),
    )
    .await;

    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            NODE,
            &ssa(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})),
        )
        .await
        .expect("apply the Node");
}

/// The objects of `deploy/manifests/sigil.yaml` that Sigil's grants and trust bundle are
/// made of (server-side apply: idempotent).
async fn apply_manifest(client: &Client) {
    let mut applied = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(MANIFEST) {
        let obj: Value = match serde::Deserialize::deserialize(doc) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => panic!("deploy/manifests/sigil.yaml: {e}"),
        };
        let kind = obj["kind"].as_str().expect("kind").to_string();
        let Some((group, version, plural, namespaced)) = applied_kind(&kind) else {
            continue;
        };
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, &kind),
            plural,
        );
        apply(client, &ar, namespaced, obj).await;
        applied.push(kind);
    }
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        assert!(
            applied.iter().any(|k| k == kind),
            "the manifest has no {kind}"
        );
    }
}

/// A TokenRequest token of `ns/sa`, bound to `pod` (name and UID) when given.
async fn token(
    client: &Client,
    ns: &str,
    sa: &str,
    audience: &str,
    pod: Option<&Pod>,
) -> Result<String, kube::Error> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.to_string()]),
            expiration_seconds: Some(3600),
            bound_object_ref: pod.map(|p| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let answer = api
        .create_token_request(sa, &PostParams::default(), &request)
        .await?;
    Ok(answer
        .status
        .and_then(|s| s.token)
        .expect("TokenRequest status with a token"))
}

/// The (unverified) claims of a JWT.
fn jwt_claims(token: &str) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// A kubeconfig for the API server of the admin kubeconfig, authenticating with `token`.
fn token_kubeconfig(statedir: &Path, token: &str, out: &Path) {
    let admin: Value = serde_yaml::from_str(
        &std::fs::read_to_string(statedir.join("admin.kubeconfig")).expect("admin kubeconfig"),
    )
    .expect("admin kubeconfig is YAML");
    let cluster = &admin["clusters"][0]["cluster"];
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "loopback", "cluster": {
            "server": cluster["server"],
            "certificate-authority-data": cluster["certificate-authority-data"],
        }}],
        "users": [{"name": "sigil", "user": {"token": token}}],
        "contexts": [{"name": "sigil", "context": {"cluster": "loopback", "user": "sigil"}}],
        "current-context": "sigil",
    });
    std::fs::write(out, serde_json::to_vec_pretty(&kubeconfig).unwrap()).expect("write kubeconfig");
}

/// One test's world: the shared setup, a namespace of its own with the service accounts it
/// names, and Sigil running as the chart's ServiceAccount with the chart's flags.
struct Env {
    admin: Client,
    ns: String,
    sigil: RunningServer,
    /// The token Sigil authenticates with: the audit log's events of this Sigil carry its
    /// `jti` (see [`Env::api_calls`]).
    sigil_token: String,
    _dir: tempfile::TempDir,
    /// The trust bundle is shared; the test that empties it waits for the others.
    _shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
}

/// Taken for reading by every [`Env`], for writing by the tests that empty the trust bundle
/// or stop the API server.
static TRUST_BUNDLE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Sigil as the chart runs it: a TokenRequest token of its ServiceAccount (for the API
/// server's own audience, the default of a projected token of a real pod) in a kubeconfig in
/// `dir`, and the Deployment's validation flags.
async fn start_chart_sigil(admin: &Client, statedir: &Path, dir: &Path) -> RunningServer {
    start_chart_sigil_with(admin, statedir, dir, &[]).await
}

/// [`start_chart_sigil`] with `extra` flags after the chart's.
async fn start_chart_sigil_with(
    admin: &Client,
    statedir: &Path,
    dir: &Path,
    extra: &[&str],
) -> RunningServer {
    let sigil_token = chart_sigil_token(admin).await;
    start_sigil_as(statedir, dir, &sigil_token, extra).await
}

/// A TokenRequest token of Sigil's ServiceAccount, for the API server's own audience (the
/// default of a projected token of a real pod).
async fn chart_sigil_token(admin: &Client) -> String {
    let api_audience = "https://kubernetes.default.svc.cluster.local";
    token(admin, CP_NS, SIGIL_SA, api_audience, None)
        .await
        .expect("token for Sigil's ServiceAccount")
}

/// Sigil with `sigil_token` in a kubeconfig in `dir`, the Deployment's validation flags and
/// `extra` after them.
async fn start_sigil_as(
    statedir: &Path,
    dir: &Path,
    sigil_token: &str,
    extra: &[&str],
) -> RunningServer {
    try_start_sigil_as(statedir, dir, sigil_token, extra)
        .await
        .expect("Sigil starts against the real API server with the chart's grants")
}

/// [`start_sigil_as`], for a start that may fail.
async fn try_start_sigil_as(
    statedir: &Path,
    dir: &Path,
    sigil_token: &str,
    extra: &[&str],
) -> Result<RunningServer, sigil::Error> {
    let kubeconfig = dir.join(format!("sigil-{}.kubeconfig", rand_suffix()));
    token_kubeconfig(statedir, sigil_token, &kubeconfig);
    let flags = chart_flags();
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend_from_slice(extra);
    start_sigil_for(&kubeconfig, &flags).await
}

/// A ServiceAccount (idempotent).
async fn service_account(admin: &Client, ns: &str, name: &str) -> ServiceAccount {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    sas.patch(
        name,
        &ssa(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                             "metadata": {"name": name, "namespace": ns}})),
    )
    .await
    .unwrap_or_else(|e| panic!("service account {ns}/{name}: {e}"))
}

/// A Pod in namespace `ns`, bound to the Node, as `sa`, with `annotations` (an API object:
/// nothing runs it).
async fn create_pod(admin: &Client, ns: &str, name: &str, sa: &str, annotations: Value) -> Pod {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations},
        "spec": {
            "serviceAccountName": sa,
            "nodeName": NODE,
            "containers": [{"name": "app", "image": "registry.example/shop/app:1.0"}],
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"))
}

/// A short random hex string.
fn rand_suffix() -> String {
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Env {
    async fn new(test: &str, service_accounts: &[&str]) -> Env {
        let shared = TRUST_BUNDLE.read().await;
        Env::build(test, service_accounts, Some(shared), &[]).await
    }

    /// [`Env::new`] with `extra` flags for Sigil after the chart's.
    async fn with_flags(test: &str, service_accounts: &[&str], extra: &[&str]) -> Env {
        let shared = TRUST_BUNDLE.read().await;
        Env::build(test, service_accounts, Some(shared), extra).await
    }

    /// For a test that holds [`TRUST_BUNDLE`] for writing itself.
    async fn exclusive(test: &str, service_accounts: &[&str]) -> Env {
        Env::build(test, service_accounts, None, &[]).await
    }

    async fn build(
        test: &str,
        service_accounts: &[&str],
        shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
        extra: &[&str],
    ) -> Env {
        let statedir = statedir();
        let admin = admin_client(&statedir).await;
        cluster_setup(&admin).await;
        // Unique per run: without a controller-manager a deleted namespace stays Terminating,
        // so a second run against the same control plane cannot reuse the name.
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000_000;
        let ns = format!("kt-{test}-{}-{run}", std::process::id());
        namespace(&admin, &ssa(), &ns).await;
        for sa in service_accounts {
            service_account(&admin, &ns, sa).await;
        }
        let dir = tempfile::tempdir().unwrap();
        let sigil_token = chart_sigil_token(&admin).await;
        let sigil = start_sigil_as(&statedir, dir.path(), &sigil_token, extra).await;
        Env {
            admin,
            ns,
            sigil,
            sigil_token,
            _dir: dir,
            _shared: shared,
        }
    }

    /// A Pod in this test's namespace, bound to the Node, as `sa`, with `annotations`.
    async fn pod(&self, name: &str, sa: &str, annotations: Value) -> Pod {
        self.pod_in(&self.ns, name, sa, annotations).await
    }

    /// A Pod in namespace `ns`, bound to the Node, as `sa`, with `annotations`.
    async fn pod_in(&self, ns: &str, name: &str, sa: &str, annotations: Value) -> Pod {
        create_pod(&self.admin, ns, name, sa, annotations).await
    }

    async fn token(&self, sa: &str, audience: &str, pod: Option<&Pod>) -> String {
        self.token_in(&self.ns, sa, audience, pod).await
    }

    /// [`Env::token`] of a service account in namespace `ns`.
    async fn token_in(&self, ns: &str, sa: &str, audience: &str, pod: Option<&Pod>) -> String {
        token(&self.admin, ns, sa, audience, pod)
            .await
            .unwrap_or_else(|e| panic!("token for {ns}/{sa}: {e}"))
    }

    /// The URI SANs of the certificate issued for `id` in `ns` with `token`.
    async fn sign(&self, id: &str, ns: &str, token: &str) -> Result<Vec<String>, tonic::Status> {
        Ok(self.issue(request(id, ns, token)).await?.0)
    }

    /// The URI and DNS SANs of the certificate issued for `req`.
    async fn issue(
        &self,
        req: sigil_proto::SignCertificateRequest,
    ) -> Result<(Vec<String>, Vec<String>), tonic::Status> {
        let resp = ca_client(&self.sigil)
            .await
            .sign_certificate(req)
            .await?
            .into_inner();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&resp.workload_certificate).unwrap();
        let cert = pem.parse_x509().unwrap();
        let validity = cert.validity();
        // workloadCertTTL 1h from daprsystem (read through the CRD), backdated by 15 min.
        assert_eq!(
            validity.not_after.timestamp() - validity.not_before.timestamp(),
            3600 + 15 * 60,
            "the daprsystem Configuration's workloadCertTTL"
        );
        let (mut uris, mut dns) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    _ => {}
                }
            }
        }
        Ok((uris, dns))
    }

    /// Refused with PERMISSION_DENIED, for the reason whose wording `reason` is part of.
    async fn denied(&self, id: &str, ns: &str, token: &str, why: &str, reason: &str) {
        match self.sign(id, ns, token).await {
            Ok(uris) => panic!("{why}: issued {uris:?}"),
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{why}: {status:?}");
                assert!(
                    status.message().contains(reason),
                    "{why}: refused, but not because of {reason:?}: {status:?}"
                );
            }
        }
    }

    /// How many API requests this test's Sigil made so far with `verb` on `resource`.
    fn api_calls(&self, verb: &str, resource: &str) -> usize {
        calls_with_token(&self.sigil_token, verb, resource)
    }

    async fn finish(self) {
        let namespaces: Api<Namespace> = Api::all(self.admin.clone());
        // Without a controller-manager the namespace stays Terminating (its name is unique
        // to the run); the next start of the control plane begins from an empty etcd.
        let _ = namespaces.delete(&self.ns, &DeleteParams::default()).await;
        self.sigil.shutdown().await.unwrap();
    }
}

/// `sigil serve` flags of the manifest's Deployment that decide validation (`--mode` and
/// the ports are the test harness's own).
fn chart_flags() -> Vec<String> {
    let mut flags = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(MANIFEST) {
        let obj: Value = serde::Deserialize::deserialize(doc).unwrap();
        if obj["kind"] != "Deployment" {
            continue;
        }
        let args = obj["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("container args");
        for arg in args {
            let arg = arg.as_str().expect("string arg");
            let keep = [
                "--pod-lookup=",
                "--trust-domain=",
                "--cluster-domain=",
                "--config=",
            ];
            if keep.iter().any(|k| arg.starts_with(k)) {
                flags.push(arg.to_string());
            }
        }
    }
    assert_eq!(flags.len(), 4, "the Deployment's flags: {flags:?}");
    flags
}

/// One request in the API server's audit log.
#[derive(Clone, Debug, PartialEq)]
struct ApiCall {
    verb: String,
    /// `resource` or `resource/subresource`.
    resource: String,
    code: u16,
}

/// When this run of the tests began: the audit log of a control plane reused across runs
/// holds the requests of earlier runs too.
static RUN_START: std::sync::LazyLock<time::OffsetDateTime> =
    std::sync::LazyLock::new(time::OffsetDateTime::now_utc);

/// The completed requests of this run in the audit log made with a credential `keep`
/// accepts (the audit event's `user`).
fn audited_calls(statedir: &Path, keep: impl Fn(&Value) -> bool) -> Vec<ApiCall> {
    let log = std::fs::read_to_string(statedir.join("audit.log")).expect("audit.log");
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete" && keep(&e["user"]))
        .filter(|e| {
            let at = e["requestReceivedTimestamp"].as_str().unwrap_or_default();
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|at| at >= *RUN_START)
        })
        .map(|e| {
            let r = &e["objectRef"];
            let (res, sub) = (
                r["resource"].as_str().unwrap_or(""),
                r["subresource"].as_str().unwrap_or(""),
            );
            ApiCall {
                verb: e["verb"].as_str().unwrap_or("").to_string(),
                resource: if sub.is_empty() {
                    res.to_string()
                } else {
                    format!("{res}/{sub}")
                },
                code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            }
        })
        .collect()
}

/// How many completed API requests with `verb` on `resource` the audit log has from the
/// holder of `token` (by its `jti`, which the API server records as the credential id).
fn calls_with_token(token: &str, verb: &str, resource: &str) -> usize {
    let jti = jwt_claims(token)["jti"]
        .as_str()
        .expect("a TokenRequest token has a jti")
        .to_string();
    let credential = json!([format!("JTI={jti}")]);
    audited_calls(&statedir(), |u| {
        u["extra"]["authentication.kubernetes.io/credential-id"] == credential
    })
    .iter()
    .filter(|c| c.verb == verb && c.resource == resource)
    .count()
}

/// What the audit log says Sigil's ServiceAccount did, every replica and run together.
fn sigil_requests(statedir: &Path) -> Vec<ApiCall> {
    let user = format!("system:serviceaccount:{CP_NS}:{SIGIL_SA}");
    audited_calls(statedir, |u| u["username"] == user.as_str())
}

/// The API server's own count of requests (`apiserver_request_total` on its `/metrics`) with
/// this verb and resource, over every code.
async fn apiserver_requests(admin: &Client, verb: &str, resource: &str) -> u64 {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = admin.request_text(req).await.expect("GET /metrics");
    let (verb, resource) = (
        format!("verb=\"{verb}\""),
        format!("resource=\"{resource}\""),
    );
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains(&verb) && l.contains(&resource))
        .map(|l| {
            let v = l.rsplit(' ').next().unwrap();
            v.parse::<f64>()
                .unwrap_or_else(|_| panic!("metric value {v:?}")) as u64
        })
        .sum()
}

/// The DER certificates of a PEM bundle, in order.
fn ders(pem_bundle: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_bundle)
        .expect("PEM")
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}
