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

mod support;

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
const MANIFEST: &str = include_str!("../deploy/manifests/sigil.yaml");
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

/// The shared part of every test: Sigil's namespace and the manifest's objects, the Dapr
/// `Configuration` CRD with Sentry's `daprsystem` (1 h workload certificates), and a Node.
async fn cluster_setup(client: &Client) {
    namespace(client, &ssa(), CP_NS).await;
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
    let api_audience = "https://kubernetes.default.svc.cluster.local";
    let sigil_token = token(admin, CP_NS, SIGIL_SA, api_audience, None)
        .await
        .expect("token for Sigil's ServiceAccount");
    let kubeconfig = dir.join(format!("sigil-{}.kubeconfig", rand_suffix()));
    token_kubeconfig(statedir, &sigil_token, &kubeconfig);
    let flags = chart_flags();
    let mut flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    flags.extend_from_slice(extra);
    start_sigil_for(&kubeconfig, &flags)
        .await
        .expect("Sigil starts against the real API server with the chart's grants")
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
        Env::build(test, service_accounts, Some(shared)).await
    }

    /// For a test that holds [`TRUST_BUNDLE`] for writing itself.
    async fn exclusive(test: &str, service_accounts: &[&str]) -> Env {
        Env::build(test, service_accounts, None).await
    }

    async fn build(
        test: &str,
        service_accounts: &[&str],
        shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
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
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
        for sa in service_accounts {
            sas.patch(
                sa,
                &ssa(),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": {"name": sa, "namespace": ns}})),
            )
            .await
            .unwrap_or_else(|e| panic!("service account {sa}: {e}"));
        }
        let dir = tempfile::tempdir().unwrap();
        let sigil = start_chart_sigil(&admin, &statedir, dir.path()).await;
        Env {
            admin,
            ns,
            sigil,
            _dir: dir,
            _shared: shared,
        }
    }

    /// A Pod in this test's namespace, bound to the Node, as `sa`, with `annotations`.
    async fn pod(&self, name: &str, sa: &str, annotations: Value) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.ns);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns, "annotations": annotations},
            "spec": {
                "serviceAccountName": sa,
                "nodeName": NODE,
                "containers": [{"name": "app", "image": "registry.example/shop/app:1.0"}],
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {name}: {e}"))
    }

    async fn token(&self, sa: &str, audience: &str, pod: Option<&Pod>) -> String {
        token(&self.admin, &self.ns, sa, audience, pod)
            .await
            .unwrap_or_else(|e| panic!("token for {sa}: {e}"))
    }

    async fn sign(&self, id: &str, ns: &str, token: &str) -> Result<Vec<String>, tonic::Status> {
        let resp = ca_client(&self.sigil)
            .await
            .sign_certificate(request(id, ns, token))
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
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(u) = name {
                    uris.push(u.to_string());
                }
            }
        }
        Ok(uris)
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

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn bound_tokens_get_their_spiffe_ids() {
    let env = Env::new("issue", &["orders", "worker"]).await;
    let ns = env.ns.clone();
    configuration(
        &env.admin,
        &ssa(),
        &ns,
        "appconfig",
        json!({"accessControl": {"trustDomain": "shop.example", "defaultAction": "deny"}}),
    )
    .await;
    let orders = env
        .pod(
            "orders-1",
            "orders",
            json!({"dapr.io/app-id": "orders", "dapr.io/config": "appconfig"}),
        )
        .await;
    let t = env.token("orders", &sentry_audience(), Some(&orders)).await;
    // What the API server put in the token: Dapr's audience, the pod and its Node.
    let claims = jwt_claims(&t);
    assert_eq!(claims["aud"], json!([sentry_audience()]));
    assert_eq!(
        claims["kubernetes.io"]["pod"]["uid"],
        json!(orders.metadata.uid)
    );
    assert_eq!(claims["kubernetes.io"]["node"]["name"], NODE);
    assert_eq!(
        env.sign("orders", &ns, &t).await.unwrap(),
        vec![format!("spiffe://shop.example/ns/{ns}/orders")]
    );

    // No annotations: the pod name is the app id and `public` the trust domain.
    let worker = env.pod("worker", "worker", json!({})).await;
    let t = env.token("worker", &sentry_audience(), Some(&worker)).await;
    assert_eq!(
        env.sign("worker", &ns, &t).await.unwrap(),
        vec![format!("spiffe://public/ns/{ns}/worker")]
    );

    // Older daprd versions ask for the legacy audience; still accepted, as by Dapr.
    let t = env.token("orders", "dapr.io/sentry", Some(&orders)).await;
    assert_eq!(
        env.sign("orders", &ns, &t).await.unwrap(),
        vec![format!("spiffe://shop.example/ns/{ns}/orders")]
    );
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn token_for_another_audience_is_denied() {
    let env = Env::new("audience", &["orders"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    for audience in [
        "https://kubernetes.default.svc.cluster.local",
        "spiffe://cluster.local/ns/elsewhere/dapr-sentry",
        "spiffe://other.example/ns/dapr-system/dapr-sentry",
    ] {
        let t = env.token("orders", audience, Some(&orders)).await;
        env.denied(
            "orders",
            &ns,
            &t,
            &format!("audience {audience}"),
            REVIEW_REFUSED,
        )
        .await;
    }
    // The same pod with Dapr's audience is fine: the refusals were the audience's.
    let t = env.token("orders", &sentry_audience(), Some(&orders)).await;
    assert_eq!(
        env.sign("orders", &ns, &t).await.unwrap(),
        vec![format!("spiffe://public/ns/{ns}/orders")]
    );
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn another_service_accounts_token_is_denied() {
    let env = Env::new("othersa", &["orders", "billing"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let billing = env
        .pod("billing-1", "billing", json!({"dapr.io/app-id": "billing"}))
        .await;

    // The API server itself refuses to bind billing's token to the orders pod.
    let err = token(
        &env.admin,
        &ns,
        "billing",
        &sentry_audience(),
        Some(&orders),
    )
    .await
    .expect_err("a token of billing bound to a pod running as orders");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 400),
        "{err:?}"
    );

    // billing's own pod token, asking for orders' identity.
    let t = env
        .token("billing", &sentry_audience(), Some(&billing))
        .await;
    env.denied(
        "orders",
        &ns,
        &t,
        "billing's token for orders' id",
        "app id mismatch",
    )
    .await;
    // A token of billing bound to no pod at all (as a long-lived automation token would be).
    let t = env.token("billing", &sentry_audience(), None).await;
    env.denied("billing", &ns, &t, "a token bound to no pod", NOT_POD_BOUND)
        .await;
    env.denied(
        "orders",
        &ns,
        &t,
        "a token bound to no pod, for orders",
        NOT_POD_BOUND,
    )
    .await;
    // Sigil's own token (its ServiceAccount, in its namespace) gets nothing either.
    let t = token(&env.admin, CP_NS, SIGIL_SA, &sentry_audience(), None)
        .await
        .unwrap();
    env.denied(
        "dapr-sentry",
        CP_NS,
        &t,
        "Sigil's own unbound token",
        NOT_POD_BOUND,
    )
    .await;
    // billing with its own token is fine.
    let t = env
        .token("billing", &sentry_audience(), Some(&billing))
        .await;
    assert_eq!(
        env.sign("billing", &ns, &t).await.unwrap(),
        vec![format!("spiffe://public/ns/{ns}/billing")]
    );
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn token_of_a_deleted_pod_is_denied() {
    let env = Env::new("deleted", &["orders"]).await;
    let ns = env.ns.clone();
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), &ns);
    let first = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let t = env.token("orders", &sentry_audience(), Some(&first)).await;
    // No kubelet to confirm a graceful deletion: delete at once.
    pods.delete("orders-1", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete pod");
    for _ in 0..50 {
        if pods.get_opt("orders-1").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.denied(
        "orders",
        &ns,
        &t,
        "token of a deleted pod",
        "service account token has been invalidated",
    )
    .await;

    // A new pod with the same name (another UID) does not revive the old token.
    let second = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    assert_ne!(first.metadata.uid, second.metadata.uid);
    env.denied(
        "orders",
        &ns,
        &t,
        "token of a deleted pod, name reused",
        "does not match service account pod ref claim",
    )
    .await;
    let t2 = env.token("orders", &sentry_audience(), Some(&second)).await;
    assert_eq!(
        env.sign("orders", &ns, &t2).await.unwrap(),
        vec![format!("spiffe://public/ns/{ns}/orders")]
    );
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn namespace_or_app_id_mismatch_is_denied() {
    let env = Env::new("mismatch", &["orders"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let t = env.token("orders", &sentry_audience(), Some(&orders)).await;
    env.denied("billing", &ns, &t, "another app id", "app id mismatch")
        .await;
    env.denied(
        "orders-1",
        &ns,
        &t,
        "the pod name when an app id is set",
        "app id mismatch",
    )
    .await;
    env.denied(
        "orders",
        "default",
        &t,
        "another namespace",
        "namespace mismatch",
    )
    .await;
    env.denied(
        "orders",
        CP_NS,
        &t,
        "the control-plane namespace",
        "namespace mismatch",
    )
    .await;
    // The same token for what it is: issued.
    assert_eq!(
        env.sign("orders", &ns, &t).await.unwrap(),
        vec![format!("spiffe://public/ns/{ns}/orders")]
    );
    env.finish().await;
}

/// What the audit log says Sigil's ServiceAccount did: (verb, resource, subresource, code).
fn sigil_requests(statedir: &Path) -> Vec<(String, String, String, u16)> {
    let user = format!("system:serviceaccount:{CP_NS}:{SIGIL_SA}");
    let log = std::fs::read_to_string(statedir.join("audit.log")).expect("audit.log");
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["user"]["username"] == user.as_str() && e["stage"] == "ResponseComplete")
        .map(|e| {
            let r = &e["objectRef"];
            (
                e["verb"].as_str().unwrap_or("").to_string(),
                r["resource"].as_str().unwrap_or("").to_string(),
                r["subresource"].as_str().unwrap_or("").to_string(),
                e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            )
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn the_charts_grants_are_enough() {
    let env = Env::new("grants", &["orders"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let t = env.token("orders", &sentry_audience(), Some(&orders)).await;
    env.sign("orders", &ns, &t).await.unwrap();
    let other = env.token("orders", "elsewhere", Some(&orders)).await;
    env.denied("orders", &ns, &other, "another audience", REVIEW_REFUSED)
        .await;
    env.finish().await;

    let requests = sigil_requests(&statedir());
    let used: BTreeSet<String> = requests
        .iter()
        .map(|(verb, res, sub, code)| {
            let res = if sub.is_empty() {
                res.clone()
            } else {
                format!("{res}/{sub}")
            };
            format!("{verb} {res} -> {code}")
        })
        .collect();
    println!("FIGURES Sigil's API requests as the chart's ServiceAccount: {used:#?}");
    // What every start and every validation needs, seen by the API server.
    for needed in [
        ("create", "tokenreviews"),
        ("get", "pods"),
        ("get", "secrets"),
        ("get", "configurations"),
    ] {
        assert!(
            requests
                .iter()
                .any(|(v, r, _, c)| (v.as_str(), r.as_str()) == needed && *c < 300),
            "Sigil never did {needed:?} successfully: {used:#?}"
        );
    }
    // Granted by the chart but never used in this run (a report, not a failure: some paths,
    // such as a missing trust-bundle object, are not exercised here).
    let mut unused = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(MANIFEST) {
        let obj: Value = serde::Deserialize::deserialize(doc).unwrap();
        if obj["kind"] != "ClusterRole" && obj["kind"] != "Role" {
            continue;
        }
        for rule in obj["rules"].as_array().expect("rules") {
            for res in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let (res, verb) = (res.as_str().unwrap(), verb.as_str().unwrap());
                    if !requests.iter().any(|(v, r, _, _)| v == verb && r == res) {
                        unused.insert(format!("{} {verb} {res}", obj["kind"].as_str().unwrap()));
                    }
                }
            }
        }
    }
    println!("FIGURES chart grants Sigil never used: {unused:#?}");
    // Nothing it tried was forbidden: the chart grants everything Sigil does.
    let forbidden: Vec<_> = requests.iter().filter(|r| r.3 == 403).collect();
    assert!(
        forbidden.is_empty(),
        "Sigil needs grants the chart does not give: {forbidden:?}"
    );
}

/// A legacy (Secret-based) service-account token, as kube-controller-manager's token
/// controller makes them: RS256 with the API server's service-account key, no audience, no
/// expiry, no pod. There is no controller-manager here, so the test signs it with the key
/// `controlplane.sh` made and stores it in its Secret, which is all the API server's legacy
/// token authenticator looks up.
fn legacy_token(statedir: &Path, ns: &str, sa: &str, sa_uid: &str, secret: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let key_pem = std::fs::read(statedir.join("pki/sa.key")).expect("pki/sa.key");
    let key_der = pem::parse(key_pem).expect("sa.key is PEM");
    let key = ring::signature::RsaKeyPair::from_pkcs8(key_der.contents()).expect("PKCS#8 RSA");
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::to_vec(&json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": ns,
            "kubernetes.io/serviceaccount/secret.name": secret,
            "kubernetes.io/serviceaccount/service-account.name": sa,
            "kubernetes.io/serviceaccount/service-account.uid": sa_uid,
            "sub": format!("system:serviceaccount:{ns}:{sa}"),
        }))
        .unwrap(),
    );
    let input = format!("{header}.{claims}");
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn legacy_secret_token_is_denied() {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    use k8s_openapi::api::core::v1::Secret;
    let env = Env::new("legacy", &["orders"]).await;
    let ns = env.ns.clone();
    env.pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let sa = Api::<ServiceAccount>::namespaced(env.admin.clone(), &ns)
        .get("orders")
        .await
        .unwrap();
    let uid = sa.metadata.uid.expect("service account UID");
    let t = legacy_token(&statedir(), &ns, "orders", &uid, "orders-token");
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "orders-token", "namespace": ns,
                     "annotations": {"kubernetes.io/service-account.name": "orders",
                                     "kubernetes.io/service-account.uid": uid}},
        "stringData": {"token": t},
    }))
    .unwrap();
    Api::<Secret>::namespaced(env.admin.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("legacy token Secret");
    // The API server takes it: a real legacy token, for its own audience...
    let reviews: Api<TokenReview> = Api::all(env.admin.clone());
    let review = |audiences: Vec<String>| TokenReview {
        spec: TokenReviewSpec {
            token: t.clone(),
            audiences: Some(audiences),
        },
        ..Default::default()
    };
    let api = reviews
        .create(&PostParams::default(), &review(vec![]))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(api.authenticated, Some(true), "{api:?}");
    assert_eq!(
        api.user.and_then(|u| u.username).as_deref(),
        Some(format!("system:serviceaccount:{ns}:orders").as_str())
    );
    // Legacy tokens carry the API server's implicit audience, never Dapr's: the review Sigil
    // asks for (Dapr's two audiences) does not authenticate it, and Sigil refuses it.
    let dapr = reviews
        .create(
            &PostParams::default(),
            &review(vec!["dapr.io/sentry".into(), sentry_audience()]),
        )
        .await
        .unwrap()
        .status
        .unwrap();
    assert_ne!(dapr.authenticated, Some(true), "{dapr:?}");
    // Sigil may refuse it before asking (no pod claim) or on the review's answer.
    match env.sign("orders", &ns, &t).await {
        Ok(uris) => panic!("a legacy Secret-based token got {uris:?}"),
        Err(status) => {
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(
                status.message().contains(REVIEW_REFUSED)
                    || status.message().contains(NOT_POD_BOUND),
                "a legacy token refused for another reason: {status:?}"
            );
        }
    }
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn three_replicas_on_an_empty_trust_bundle_end_with_one_ca() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let statedir = statedir();
    let admin = admin_client(&statedir).await;
    cluster_setup(&admin).await;
    let _exclusive = TRUST_BUNDLE.write().await;
    // Empty, as the chart creates it.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), CP_NS);
    let mut secret = secrets.get("dapr-trust-bundle").await.unwrap();
    secret.data = None;
    secret.string_data = None;
    // Starting over on purpose, as Sigil's refusal explains: also drop the annotation Sigil
    // writes with the material (with it, an emptied Secret is a lost CA, not a first start).
    if let Some(a) = secret.metadata.annotations.as_mut() {
        a.remove("sigil.dev/ca-stored");
    }
    secrets
        .replace("dapr-trust-bundle", &PostParams::default(), &secret)
        .await
        .expect("empty the Secret");
    // And the ConfigMap: a first install has both empty (Sigil refuses to generate a new root
    // over an empty Secret whose anchors are still in the ConfigMap).
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), CP_NS);
    let mut cm = cms.get("dapr-trust-bundle").await.unwrap();
    cm.data = None;
    cms.replace("dapr-trust-bundle", &PostParams::default(), &cm)
        .await
        .expect("empty the ConfigMap");
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = tokio::join!(
        start_chart_sigil(&admin, &statedir, dir.path()),
        start_chart_sigil(&admin, &statedir, dir.path()),
        start_chart_sigil(&admin, &statedir, dir.path()),
    );
    let bundles: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|s| s.state.current().trust_bundle().to_pem())
        .collect();
    assert_eq!(
        bundles[0], bundles[1],
        "replicas 1 and 2 serve different CAs"
    );
    assert_eq!(
        bundles[0], bundles[2],
        "replicas 1 and 3 serve different CAs"
    );
    let stored = secrets.get("dapr-trust-bundle").await.unwrap();
    let data = stored.data.expect("the Secret was filled");
    for key in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert!(data.contains_key(key), "the Secret has no {key}");
    }
    assert_eq!(
        String::from_utf8(data["ca.crt"].0.clone()).unwrap(),
        bundles[0],
        "the replicas serve the CA of the Secret"
    );
    // The ConfigMap follows the Secret.
    let mut synced = None;
    for _ in 0..100 {
        let cm = cms.get("dapr-trust-bundle").await.unwrap();
        synced = cm.data.and_then(|d| d.get("ca.crt").cloned());
        if synced.as_deref() == Some(bundles[0].as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        synced.as_deref(),
        Some(bundles[0].as_str()),
        "the ConfigMap's ca.crt"
    );
    for s in [a, b, c] {
        s.shutdown().await.unwrap();
    }
}

/// Starts the API server again if the test ends (or panics) while it is down, so that the
/// tests after it find a control plane.
struct ApiserverDown<'a>(&'a Path, bool);

impl ApiserverDown<'_> {
    fn restart(&mut self) {
        controlplane("start-apiserver", self.0);
        self.1 = false;
    }
}

impl Drop for ApiserverDown<'_> {
    fn drop(&mut self) {
        if self.1 {
            controlplane("start-apiserver", self.0);
        }
    }
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn apiserver_killed_then_back_unavailable_then_service_resumes() {
    let _exclusive = TRUST_BUNDLE.write().await;
    let statedir = statedir();
    let env = Env::exclusive("fault", &["orders"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let expected = vec![format!("spiffe://public/ns/{ns}/orders")];
    let cached = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let during = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let after = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let mut unreviewed = Vec::new();
    for _ in 0..4 {
        unreviewed.push(env.token("orders", &sentry_audience(), Some(&orders)).await);
    }
    assert_eq!(env.sign("orders", &ns, &cached).await.unwrap(), expected);

    controlplane("kill-apiserver", &statedir);
    let mut down = ApiserverDown(&statedir, true);
    // From here on the never-reviewed tokens must get no certificate until the apiserver is
    // back (the load starts only now, so none of them was reviewed before).
    let load = FaultLoad::start(&env.sigil, &ns, &cached, unreviewed);
    // A token never reviewed: no review, no certificate.
    let t0 = std::time::Instant::now();
    let status = env
        .sign("orders", &ns, &during)
        .await
        .expect_err("a certificate without a review");
    let to_unavailable = t0.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // A token reviewed a moment ago is served from the documented cache (60 s by default).
    assert_eq!(env.sign("orders", &ns, &cached).await.unwrap(), expected);

    // The load keeps going through the outage for a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t1 = std::time::Instant::now();
    load.set_down(false);
    down.restart();
    let apiserver_back = t1.elapsed();
    // Sigil reconnects by itself; no restart, no operator.
    let t2 = std::time::Instant::now();
    let mut last = None;
    while t2.elapsed() < Duration::from_secs(30) {
        match env.sign("orders", &ns, &after).await {
            Ok(uris) => {
                assert_eq!(uris, expected);
                last = None;
                break;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "while recovering: {s:?}");
                last = Some(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.is_none(), "no recovery within 30 s: {last:?}");
    let to_recover = t2.elapsed();
    // Under the load, too, every answer was the right one, and Sigil still serves after it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = load.finish().await;
    assert_eq!(env.sign("orders", &ns, &after).await.unwrap(), expected);
    println!(
        "FIGURES apiserver killed: UNAVAILABLE after {to_unavailable:?}; apiserver ready again in \
         {apiserver_back:?}; first certificate {to_recover:?} after that; load during the outage: \
         {} cached-token requests issued, {} never-reviewed-token requests UNAVAILABLE, 0 wrong \
         ({} answered outside it)",
        counts.cached_issued, counts.unreviewed_unavailable, counts.outside
    );
    env.finish().await;
}

/// Load on a Sigil while its control plane fails, started once the fault is in force: two
/// workers, each sending, one after another, a request with a token reviewed before the fault
/// (the documented cache serves it) and one with a token never reviewed (no review, no
/// certificate). `down` says whether the fault is in force; a result counts as "during the
/// fault" only if it was in force both when the request was sent and when its answer came.
struct FaultLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: tokio::task::JoinSet<LoadCounts>,
}

/// What [`FaultLoad`] saw.
#[derive(Debug, Default)]
struct LoadCounts {
    /// Cached token, during the fault: issued.
    cached_issued: u64,
    /// Never-reviewed tokens, during the fault: UNAVAILABLE.
    unreviewed_unavailable: u64,
    /// Outside the fault: issued, or UNAVAILABLE while recovering.
    outside: u64,
    /// Anything else: a certificate without a review, a cached token refused, another code.
    violations: Vec<String>,
}

impl FaultLoad {
    fn start(server: &RunningServer, ns: &str, cached: &str, unreviewed: Vec<String>) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let down = std::sync::Arc::new(AtomicBool::new(true));
        let mut tasks = tokio::task::JoinSet::new();
        let addr = server.grpc_addr;
        let anchors = server.state.current().trust_bundle().to_pem();
        for worker in 0..2 {
            let (stop, down) = (stop.clone(), down.clone());
            let (ns, cached) = (ns.to_string(), cached.to_string());
            let unreviewed = unreviewed.clone();
            let anchors = anchors.clone();
            tasks.spawn(async move {
                let tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(anchors))
                    .domain_name(format!("dapr-sentry.{CP_NS}.svc"));
                let channel = tonic::transport::Channel::from_shared(format!("https://{addr}"))
                    .unwrap()
                    .tls_config(tls)
                    .unwrap()
                    .connect_lazy();
                let mut client = sigil_proto::sentry::ca_client::CaClient::new(channel);
                let mut counts = LoadCounts::default();
                let mut i = worker;
                while !stop.load(SeqCst) {
                    let (token, reviewed) = if i % 2 == 0 {
                        (&cached, true)
                    } else {
                        (&unreviewed[i / 2 % unreviewed.len()], false)
                    };
                    i += 1;
                    let was_down = down.load(SeqCst);
                    let answer = client.sign_certificate(request("orders", &ns, token)).await;
                    let during = was_down && down.load(SeqCst);
                    let code = answer.as_ref().err().map(tonic::Status::code);
                    match (during, reviewed, code) {
                        (true, true, None) => counts.cached_issued += 1,
                        (true, false, Some(Code::Unavailable)) => counts.unreviewed_unavailable += 1,
                        (false, _, None | Some(Code::Unavailable)) => counts.outside += 1,
                        _ => counts.violations.push(format!(
                            "during the fault: {during}, token reviewed before: {reviewed}, answer: {:?}",
                            answer.map(|_| "a certificate")
                        )),
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
                counts
            });
        }
        FaultLoad { stop, down, tasks }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops the workers and checks what they saw: no violation, and requests of both kinds
    /// answered during the fault.
    async fn finish(mut self) -> LoadCounts {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut all = LoadCounts::default();
        while let Some(counts) = self.tasks.join_next().await {
            let c = counts.unwrap();
            all.cached_issued += c.cached_issued;
            all.unreviewed_unavailable += c.unreviewed_unavailable;
            all.outside += c.outside;
            all.violations.extend(c.violations);
        }
        assert!(all.violations.is_empty(), "{:#?}", all.violations);
        assert!(
            all.cached_issued > 0 && all.unreviewed_unavailable > 0,
            "the load saw the fault: {all:?}"
        );
        all
    }
}

/// Starts etcd again if the test ends (or panics) while it is stopped.
struct EtcdDown<'a>(&'a Path, bool);

impl EtcdDown<'_> {
    fn restart(&mut self) {
        controlplane("start-etcd", self.0);
        self.1 = false;
    }
}

impl Drop for EtcdDown<'_> {
    fn drop(&mut self) {
        if self.1 {
            controlplane("start-etcd", self.0);
        }
    }
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn etcd_stopped_under_the_apiserver_unavailable_then_service_resumes() {
    let _exclusive = TRUST_BUNDLE.write().await;
    let statedir = statedir();
    let env = Env::exclusive("etcd", &["orders"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let expected = vec![format!("spiffe://public/ns/{ns}/orders")];
    let cached = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let during = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let after = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let mut unreviewed = Vec::new();
    for _ in 0..4 {
        unreviewed.push(env.token("orders", &sentry_audience(), Some(&orders)).await);
    }
    assert_eq!(env.sign("orders", &ns, &cached).await.unwrap(), expected);

    controlplane("stop-etcd", &statedir);
    let mut down = EtcdDown(&statedir, true);
    let load = FaultLoad::start(&env.sigil, &ns, &cached, unreviewed);
    // The API server still answers, but cannot read the pod: no certificate.
    let t0 = std::time::Instant::now();
    let status = env
        .sign("orders", &ns, &during)
        .await
        .expect_err("a certificate while etcd is down");
    let to_unavailable = t0.elapsed();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        to_unavailable < Duration::from_secs(10),
        "UNAVAILABLE only after {to_unavailable:?}, past the 10 s request timeout"
    );
    assert_eq!(env.sign("orders", &ns, &cached).await.unwrap(), expected);
    tokio::time::sleep(Duration::from_secs(3)).await;

    load.set_down(false);
    down.restart();
    let t2 = std::time::Instant::now();
    let mut last = None;
    while t2.elapsed() < Duration::from_secs(60) {
        match env.sign("orders", &ns, &after).await {
            Ok(uris) => {
                assert_eq!(uris, expected);
                last = None;
                break;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "while recovering: {s:?}");
                last = Some(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(last.is_none(), "no recovery within 60 s: {last:?}");
    let to_recover = t2.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = load.finish().await;
    println!(
        "FIGURES etcd stopped: UNAVAILABLE after {to_unavailable:?}; first certificate \
         {to_recover:?} after etcd was healthy again; load during the outage: {} cached-token \
         requests issued, {} never-reviewed-token requests UNAVAILABLE, 0 wrong ({} answered \
         outside it)",
        counts.cached_issued, counts.unreviewed_unavailable, counts.outside
    );
    env.finish().await;
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

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn mass_restart_costs_one_review_and_one_pod_read_per_token() {
    const PODS: usize = 20;
    const RETRIES: usize = 5;
    // Alone: the API server's counters must see only this test's Sigil.
    let _exclusive = TRUST_BUNDLE.write().await;
    let env = Env::exclusive("load", &["app"]).await;
    let ns = env.ns.clone();
    let mut tokens = Vec::new();
    for i in 0..PODS {
        let name = format!("app-{i}");
        let pod = env.pod(&name, "app", json!({"dapr.io/app-id": name})).await;
        let first = env.token("app", &sentry_audience(), Some(&pod)).await;
        let second = env.token("app", &sentry_audience(), Some(&pod)).await;
        tokens.push((name, first, second));
    }
    let client = ca_client(&env.sigil).await;

    // Every pod at once, each retrying RETRIES times in a row with its token (as daprd does
    // after a restart of the control plane).
    let reviews0 = apiserver_requests(&env.admin, "POST", "tokenreviews").await;
    let gets0 = apiserver_requests(&env.admin, "GET", "pods").await;
    let mut tasks = tokio::task::JoinSet::new();
    for (name, token, _) in tokens.clone() {
        let mut client = client.clone();
        let ns = ns.clone();
        tasks.spawn(async move {
            for _ in 0..RETRIES {
                client
                    .sign_certificate(request(&name, &ns, &token))
                    .await
                    .expect("issued");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let reviews = apiserver_requests(&env.admin, "POST", "tokenreviews").await - reviews0;
    let gets = apiserver_requests(&env.admin, "GET", "pods").await - gets0;
    println!(
        "FIGURES {PODS} pods x {RETRIES} sequential retries: {reviews} TokenReviews, {gets} pod \
         GETs (apiserver_request_total)"
    );
    assert_eq!(reviews, PODS as u64, "one TokenReview per distinct token");
    assert_eq!(
        gets, PODS as u64,
        "one pod read per distinct token (--pod-lookup=get)"
    );

    // The same, with each pod's RETRIES requests all at once (a new token per pod): identical
    // requests in flight share one validation, so one review per token is expected; only the
    // bounds are asserted, because a request that misses the cache just as the first one
    // finishes may start a second review (a narrow race the fake-API test pins down).
    let reviews0 = apiserver_requests(&env.admin, "POST", "tokenreviews").await;
    let gets0 = apiserver_requests(&env.admin, "GET", "pods").await;
    let mut tasks = tokio::task::JoinSet::new();
    for (name, _, token) in tokens.clone() {
        // A connection per pod, as each daprd has its own (Sigil bounds the bytes in flight
        // per connection).
        let client = ca_client(&env.sigil).await;
        for _ in 0..RETRIES {
            let mut client = client.clone();
            let (ns, name, token) = (ns.clone(), name.clone(), token.clone());
            tasks.spawn(async move {
                client
                    .sign_certificate(request(&name, &ns, &token))
                    .await
                    .expect("issued");
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let reviews = apiserver_requests(&env.admin, "POST", "tokenreviews").await - reviews0;
    let gets = apiserver_requests(&env.admin, "GET", "pods").await - gets0;
    println!(
        "FIGURES {PODS} pods x {RETRIES} concurrent duplicates: {reviews} TokenReviews, {gets} pod \
         GETs (apiserver_request_total)"
    );
    assert!(reviews >= PODS as u64 && reviews <= (PODS * RETRIES) as u64);
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn a_new_root_and_issuer_in_the_secret_reach_all_three_replicas_while_they_serve() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::ByteString;
    let _exclusive = TRUST_BUNDLE.write().await;
    let statedir = statedir();
    let env = Env::exclusive("rotate", &["orders"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (b, c) = tokio::join!(
        start_chart_sigil(&env.admin, &statedir, dir.path()),
        start_chart_sigil(&env.admin, &statedir, dir.path()),
    );
    let replicas = [&env.sigil, &b, &c];
    let old = env.sigil.state.current().trust_bundle().to_pem();

    // A new root and issuer, made by `sigil ca init`, written into the Secret by hand (as an
    // operator would), the new root next to the old one in ca.crt: the documented rotation
    // without downtime (a root unrelated to the one in force is not swapped in).
    let new = dir.path().join("new-ca");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args([
            "ca",
            "init",
            "--trust-domain",
            "cluster.local",
            "--namespace",
            CP_NS,
            "--out",
        ])
        .arg(&new)
        .output()
        .expect("sigil ca init runs");
    assert!(out.status.success(), "sigil ca init: {out:?}");
    let read = |f: &str| std::fs::read(new.join(f)).unwrap();
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), CP_NS);
    let mut secret = secrets.get("dapr-trust-bundle").await.unwrap();
    let data = secret.data.get_or_insert_with(Default::default);
    let bundle = format!(
        "{}\n{}",
        old.trim_end(),
        String::from_utf8(read("ca.crt")).unwrap()
    );
    data.insert("ca.crt".into(), ByteString(bundle.clone().into_bytes()));
    for f in ["issuer.crt", "issuer.key"] {
        data.insert(f.to_string(), ByteString(read(f)));
    }
    secrets
        .replace("dapr-trust-bundle", &PostParams::default(), &secret)
        .await
        .expect("write the new CA");
    let anchors = ders(bundle.as_bytes());
    assert_eq!(anchors.len(), 2, "old root + new root");

    // Every replica swaps it in (stable across two polls of --reload-interval, 2 s) and keeps
    // issuing meanwhile.
    let t0 = std::time::Instant::now();
    let token = env.token("orders", &sentry_audience(), Some(&orders)).await;
    loop {
        for r in replicas {
            let resp = ca_client(r)
                .await
                .sign_certificate(request("orders", &ns, &token))
                .await
                .expect("issuing during the rotation");
            assert_eq!(resp.into_inner().trust_chain_certificates.len(), 1);
        }
        let moved = replicas
            .iter()
            .filter(|r| ders(r.state.current().trust_bundle().to_pem().as_bytes()) == anchors)
            .count();
        if moved == replicas.len() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "after 30 s only {moved} of 3 replicas serve the new CA"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = t0.elapsed();
    // Certificates now chain to the new issuer.
    let new_issuer = ders(&read("issuer.crt"));
    for r in replicas {
        let resp = ca_client(r)
            .await
            .sign_certificate(request("orders", &ns, &token))
            .await
            .unwrap()
            .into_inner();
        let chain = ders(&resp.workload_certificate);
        assert_eq!(
            chain.last(),
            new_issuer.first(),
            "the chain ends with the new issuer"
        );
        assert_eq!(ders(&resp.trust_chain_certificates[0]), anchors);
    }
    // The ConfigMap follows the Secret.
    let cms: Api<ConfigMap> = Api::namespaced(env.admin.clone(), CP_NS);
    let mut synced = None;
    for _ in 0..100 {
        let cm = cms.get("dapr-trust-bundle").await.unwrap();
        synced = cm.data.and_then(|d| d.get("ca.crt").cloned());
        if synced.as_deref().map(|p| ders(p.as_bytes())) == Some(anchors.clone()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        synced.as_deref().map(|p| ders(p.as_bytes())),
        Some(anchors),
        "the ConfigMap's ca.crt"
    );
    println!("FIGURES a new root and issuer in the Secret reached all 3 replicas in {took:?}");
    b.shutdown().await.unwrap();
    c.shutdown().await.unwrap();
    env.finish().await;
}

/// The key ids of a stored JWKS document.
fn stored_kids(jwks: &[u8]) -> Vec<String> {
    sigil_pki::JwksDocument::parse(jwks)
        .expect("a stored JWKS")
        .kids()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn jwt_keys_three_replicas_agree_and_a_new_key_is_published_before_it_signs() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::ByteString;
    let _exclusive = TRUST_BUNDLE.write().await;
    let statedir = statedir();
    let env = Env::exclusive("jwt", &["orders"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    // No JWT key yet (a run before this one may have left one).
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), CP_NS);
    let mut secret = secrets.get("dapr-trust-bundle").await.unwrap();
    if let Some(data) = secret.data.as_mut() {
        data.remove("jwt.key");
        data.remove("jwks.json");
    }
    secrets
        .replace("dapr-trust-bundle", &PostParams::default(), &secret)
        .await
        .expect("drop the JWT material");

    // Three replicas start together with JWT-SVIDs on: one key wins, every replica uses it.
    let flags = [
        "--jwt-enabled",
        "--jwt-signing-algorithm=ES256",
        "--reload-interval=500ms",
        // Long enough to see the new key published while the old one still signs.
        "--jwt-key-publish-delay=8s",
    ];
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = tokio::join!(
        start_chart_sigil_with(&env.admin, &statedir, dir.path(), &flags),
        start_chart_sigil_with(&env.admin, &statedir, dir.path(), &flags),
        start_chart_sigil_with(&env.admin, &statedir, dir.path(), &flags),
    );
    let replicas = [&a, &b, &c];
    let kid = |r: &RunningServer| r.jwt.as_ref().unwrap().current().key.kid().to_string();
    let first = kid(&a);
    for r in replicas {
        assert_eq!(kid(r), first, "the replicas sign with different keys");
    }
    let stored = secrets
        .get("dapr-trust-bundle")
        .await
        .unwrap()
        .data
        .unwrap();
    assert!(stored.contains_key("jwt.key"), "the key is in the Secret");
    // A replica publishes its new key before it tries to store it, so a replica that lost
    // the race may leave its public key in the JWKS: never a key that signs unpublished.
    let kids_at_start = stored_kids(&stored["jwks.json"].0);
    assert!(kids_at_start.contains(&first), "{kids_at_start:?}");
    assert!(kids_at_start.len() <= 3, "{kids_at_start:?}");

    // A token signed by one replica names the key every replica publishes.
    let token = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let sign = |r| jwt_kid_of_a_signing(r, &ns, &token);
    assert_eq!(sign(&b).await, first);

    // A person writes a new key into the Secret: every replica publishes it first, keeps
    // signing with the old one for the publish delay, then signs with the new one; the old
    // key stays published for the tokens it signed.
    let second = sigil_pki::JwtSigningKey::generate(sigil_pki::jose::Algorithm::Es256).unwrap();
    let mut secret = secrets.get("dapr-trust-bundle").await.unwrap();
    secret.data.as_mut().unwrap().insert(
        "jwt.key".into(),
        ByteString(second.to_pem().as_bytes().to_vec()),
    );
    secrets
        .replace("dapr-trust-bundle", &PostParams::default(), &secret)
        .await
        .expect("write the new key");
    let t0 = std::time::Instant::now();
    let published = |r: &RunningServer| {
        r.jwt
            .as_ref()
            .unwrap()
            .current()
            .document
            .kids()
            .contains(&second.kid())
    };
    while !replicas.iter().all(|r| published(r)) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the new key is not published by every replica after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let to_published = t0.elapsed();
    for r in replicas {
        assert_eq!(sign(r).await, first, "published, not yet signing");
    }
    while !replicas.iter().all(|r| kid(r) == second.kid()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the new key does not sign on every replica after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let to_signing = t0.elapsed();
    assert_eq!(sign(&c).await, second.kid());
    let stored = secrets
        .get("dapr-trust-bundle")
        .await
        .unwrap()
        .data
        .unwrap();
    let kids_now = stored_kids(&stored["jwks.json"].0);
    assert!(
        kids_now.contains(&first) && kids_now.contains(&second.kid().to_string()),
        "the old key stays published next to the new one: {kids_now:?}"
    );
    // The public mirror follows.
    let cms: Api<ConfigMap> = Api::namespaced(env.admin.clone(), CP_NS);
    let cm = cms.get("dapr-trust-bundle").await.unwrap();
    let public = cm
        .data
        .and_then(|d| d.get("jwks.json").cloned())
        .expect("jwks.json in the ConfigMap");
    let public: Value = serde_json::from_str(&public).unwrap();
    let public_kids: BTreeSet<&str> = public["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(
        public_kids,
        kids_now.iter().map(String::as_str).collect(),
        "the ConfigMap's jwks.json is the Secret's"
    );
    println!(
        "FIGURES a new JWT key in the Secret: published by all 3 replicas in {to_published:?}, \
         signing on all 3 in {to_signing:?} (publish delay 8 s, reload interval 500 ms); \
         keys published after three replicas started together: {}",
        kids_at_start.len()
    );
    for r in [a, b, c] {
        r.shutdown().await.unwrap();
    }
    env.finish().await;
}

/// Signs a certificate for `orders` and returns the `kid` of the JWT-SVID that comes with it.
async fn jwt_kid_of_a_signing(server: &RunningServer, ns: &str, token: &str) -> String {
    let resp = ca_client(server)
        .await
        .sign_certificate(request("orders", ns, token))
        .await
        .expect("a certificate and its JWT")
        .into_inner();
    let jwt = resp.jwt.expect("a JWT-SVID with the certificate");
    let header = jwt.split('.').next().unwrap();
    let header =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap();
    let header: Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

/// The DER certificates of a PEM bundle, in order.
fn ders(pem_bundle: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(pem_bundle)
        .expect("PEM")
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}
