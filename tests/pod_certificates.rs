//! The PodCertificateRequest signer against a real kube-apiserver and etcd
//! (`conformance/kube/controlplane.sh`). Sigil runs with a TokenRequest token of the chart's
//! ServiceAccount and exactly the RBAC of `deploy/manifests/sigil-pod-certificates.yaml` (the
//! chart with `podCertificates.signerName`). Requests are created as the kubelet creates them:
//! with the Node's own client certificate (`system:node:<name>` in `system:nodes`, signed by
//! the control plane's client CA), so the Node authorizer and node restriction apply.
//!
//! Ignored by default: they need a running control plane. With one:
//!
//! ```sh
//! conformance/kube/controlplane.sh start target/kube-state
//! SIGIL_KUBE_STATEDIR=target/kube-state cargo test --test pod_certificates -- --ignored --nocapture
//! conformance/kube/controlplane.sh stop target/kube-state
//! ```
//!
//! Run with `--ignored` and without `SIGIL_KUBE_STATEDIR`, every test fails. The setup
//! helpers follow tests/kube_apiserver.rs (they cannot be shared across test binaries
//! without moving them into tests/support).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use k8s_openapi::api::certificates::v1::{
    ClusterTrustBundle, PodCertificateRequest, PodCertificateRequestSpec,
};
use k8s_openapi::api::certificates::v1beta1;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind, ObjectMeta};
use kube::Client;
use serde_json::{json, Value};
use sigil::server::RunningServer;
use support::apiserver::{configuration, controlplane, namespace, statedir};
use support::{start_sigil_for, CP_NS};
use x509_parser::extensions::GeneralName;

/// The chart rendered with the signer on.
const MANIFEST: &str = include_str!("../deploy/manifests/sigil-pod-certificates.yaml");
/// The signer name of that manifest.
const SIGNER: &str = "sigil.example.com/spiffe";
/// Sigil's ServiceAccount in the manifest.
const SIGIL_SA: &str = "dapr-sentry";
/// Field manager of everything the tests apply.
const MANAGER: &str = "sigil-pod-certificates-tests";
/// Sigil's workload certificate TTL in these tests (a flag, so the shared `daprsystem`
/// Configuration stays as tests/kube_apiserver.rs sets it).
const TTL_SECS: i64 = 2 * 3600;

async fn client_from(kubeconfig: Value) -> Client {
    let kubeconfig: kube::config::Kubeconfig =
        serde_json::from_value(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("client")
}

fn admin_kubeconfig(statedir: &Path) -> Value {
    serde_yaml::from_str(
        &std::fs::read_to_string(statedir.join("admin.kubeconfig")).expect("admin kubeconfig"),
    )
    .expect("admin kubeconfig is YAML")
}

/// A kubeconfig for the same API server with other credentials.
fn kubeconfig_with(statedir: &Path, user: Value) -> Value {
    let cluster = admin_kubeconfig(statedir)["clusters"][0]["cluster"].clone();
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "loopback", "cluster": {
            "server": cluster["server"],
            "certificate-authority-data": cluster["certificate-authority-data"],
        }}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "u", "context": {"cluster": "loopback", "user": "u"}}],
        "current-context": "u",
    })
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kubelet's identity for `node`: a client certificate for `system:node:<node>` in
/// group `system:nodes`, signed by the control plane's client CA (as controlplane.sh makes
/// the admin's).
async fn node_client(statedir: &Path, dir: &Path, node: &str) -> Client {
    let pki = statedir.join("pki");
    let (key, csr, crt, ext) = (
        dir.join(format!("{node}.key")),
        dir.join(format!("{node}.csr")),
        dir.join(format!("{node}.crt")),
        dir.join(format!("{node}.ext")),
    );
    let p = |p: &Path| p.display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &p(&key),
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        &p(&key),
        "-subj",
        &format!("/O=system:nodes/CN=system:node:{node}"),
        "-out",
        &p(&csr),
    ]);
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&pki.join("client-ca.crt")),
        "-CAkey",
        &p(&pki.join("client-ca.key")),
        "-CAcreateserial",
        "-CAserial",
        &p(&dir.join("client-ca.srl")),
        "-days",
        "1",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&crt),
    ]);
    let b64 = |f: &Path| STANDARD.encode(std::fs::read(f).unwrap());
    client_from(kubeconfig_with(
        statedir,
        json!({"client-certificate-data": b64(&crt), "client-key-data": b64(&key)}),
    ))
    .await
}

/// A DER PKCS#10 request for a new key made by `openssl req -newkey <newkey>` (with
/// `pkeyopts`).
fn stub_csr(dir: &Path, newkey: &str, pkeyopts: &[&str]) -> Vec<u8> {
    let tag = format!("{}", std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos());
    let key = dir.join(format!("pod-{tag}.key"));
    let der = dir.join(format!("pod-{tag}.csr.der"));
    let (key_s, der_s) = (key.display().to_string(), der.display().to_string());
    let mut args = vec!["req", "-new", "-newkey", newkey];
    for o in pkeyopts {
        args.extend_from_slice(&["-pkeyopt", o]);
    }
    args.extend_from_slice(&[
        "-nodes", "-keyout", &key_s, "-subj", "/CN=pod", "-outform", "DER", "-out", &der_s,
    ]);
    openssl(&args);
    std::fs::read(&der).unwrap()
}

fn ssa() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// The manifest kinds applied (Sigil's grants and its store); the Deployment, Service and
/// PodDisruptionBudget need controllers or a kubelet and are left out.
fn applied_kind(kind: &str) -> Option<(&'static str, &'static str, bool)> {
    Some(match kind {
        "ServiceAccount" => ("", "serviceaccounts", true),
        "Secret" => ("", "secrets", true),
        "ConfigMap" => ("", "configmaps", true),
        "ClusterRole" => ("rbac.authorization.k8s.io", "clusterroles", false),
        "ClusterRoleBinding" => ("rbac.authorization.k8s.io", "clusterrolebindings", false),
        "Role" => ("rbac.authorization.k8s.io", "roles", true),
        "RoleBinding" => ("rbac.authorization.k8s.io", "rolebindings", true),
        _ => return None,
    })
}

fn manifest_docs() -> Vec<Value> {
    serde_yaml::Deserializer::from_str(MANIFEST)
        .filter_map(|doc| match serde::Deserialize::deserialize(doc) {
            Ok(Value::Null) => None,
            Ok(v) => Some(v),
            Err(e) => panic!("deploy/manifests/sigil-pod-certificates.yaml: {e}"),
        })
        .collect()
}

/// Sigil's namespace, the manifest's objects, and the Dapr Configuration CRD with
/// `daprsystem` (as tests/kube_apiserver.rs sets it).
async fn cluster_setup(client: &Client) {
    namespace(client, &ssa(), CP_NS).await;
    for obj in manifest_docs() {
        let kind = obj["kind"].as_str().expect("kind").to_string();
        let Some((group, plural, namespaced)) = applied_kind(&kind) else {
            continue;
        };
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, "v1", &kind), plural);
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), CP_NS, &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.patch(&name, &ssa(), &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
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
    configuration(
        client,
        &ssa(),
        CP_NS,
        "daprsystem",
        json!({"mtls": {"enabled": true, "workloadCertTTL": "1h", "controlPlaneTrustDomain": "cluster.local"}}),
    )
    .await;
}

/// The Deployment's `sigil serve` flags that decide validation and the signer.
fn chart_flags() -> Vec<String> {
    let deployment = manifest_docs()
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .clone();
    let keep = [
        "--pod-lookup=",
        "--trust-domain=",
        "--cluster-domain=",
        "--config=",
        "--pod-certificate-signer=",
    ];
    let flags: Vec<String> = args
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .filter(|a| keep.iter().any(|k| a.starts_with(k)))
        .collect();
    assert_eq!(flags.len(), 5, "the Deployment's flags: {flags:?}");
    assert!(flags.contains(&format!("--pod-certificate-signer={SIGNER}")));
    flags
}

fn run_id() -> String {
    let ms = std::time::UNIX_EPOCH.elapsed().unwrap().as_millis() % 1_000_000_000;
    format!("{}-{ms}", std::process::id())
}

/// Sigil as the chart runs it, with the credentials in `kubeconfig`.
async fn start_replica(kubeconfig: &Path) -> RunningServer {
    let mut flags = chart_flags();
    flags.push(format!("--workload-cert-ttl={TTL_SECS}s"));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    start_sigil_for(kubeconfig, &flags)
        .await
        .expect("Sigil starts with the chart's signer grants")
}

/// Taken for reading by every [`Env`], for writing by the tests that restart the API server
/// or change the shared CA.
static APISERVER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// One test's world: a namespace, two Nodes with their kubelet clients, Sigil running as
/// the chart's ServiceAccount with the chart's flags.
struct Env {
    statedir: PathBuf,
    admin: Client,
    ns: String,
    nodes: [(Node, Client); 2],
    sigil: Option<RunningServer>,
    dir: tempfile::TempDir,
    _shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
}

impl Env {
    async fn new(test: &str) -> Env {
        let shared = APISERVER.read().await;
        Env::build(test, Some(shared)).await
    }

    /// For the test that holds [`APISERVER`] for writing itself.
    async fn exclusive(test: &str) -> Env {
        Env::build(test, None).await
    }

    async fn build(test: &str, shared: Option<tokio::sync::RwLockReadGuard<'static, ()>>) -> Env {
        let statedir = statedir();
        let admin = client_from(admin_kubeconfig(&statedir)).await;
        cluster_setup(&admin).await;
        let run = run_id();
        let ns = format!("pc-{test}-{run}");
        namespace(&admin, &ssa(), &ns).await;
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
        sas.patch(
            "orders",
            &ssa(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                 "metadata": {"name": "orders", "namespace": ns}})),
        )
        .await
        .expect("service account");
        configuration(
            &admin,
            &ssa(),
            &ns,
            "appconfig",
            json!({"accessControl": {"trustDomain": "shop.example"}}),
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let node_api: Api<Node> = Api::all(admin.clone());
        let mut nodes = Vec::new();
        for side in ["a", "b"] {
            let name = format!("pc-{test}-{side}-{run}");
            let node = node_api
                .patch(
                    &name,
                    &ssa(),
                    &Patch::Apply(
                        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
                    ),
                )
                .await
                .expect("apply a Node");
            let client = node_client(&statedir, dir.path(), &name).await;
            nodes.push((node, client));
        }
        let nodes: [(Node, Client); 2] = nodes.try_into().ok().unwrap();

        let api_audience = "https://kubernetes.default.svc.cluster.local";
        let sa: Api<ServiceAccount> = Api::namespaced(admin.clone(), CP_NS);
        let token = sa
            .create_token_request(
                SIGIL_SA,
                &PostParams::default(),
                // JSON, not the struct: its shape differs between k8s-openapi versions.
                &serde_json::from_value::<k8s_openapi::api::authentication::v1::TokenRequest>(
                    json!({"spec": {"audiences": [api_audience], "expirationSeconds": 3600}}),
                )
                .unwrap(),
            )
            .await
            .expect("token for Sigil's ServiceAccount")
            .status
            .expect("TokenRequest status")
            .token
            .expect("a token");
        let kubeconfig = dir.path().join("sigil.kubeconfig");
        std::fs::write(
            &kubeconfig,
            serde_json::to_vec(&kubeconfig_with(&statedir, json!({"token": token}))).unwrap(),
        )
        .unwrap();
        let sigil = start_replica(&kubeconfig).await;
        Env {
            statedir,
            admin,
            ns,
            nodes,
            sigil: Some(sigil),
            dir,
            _shared: shared,
        }
    }

    /// Another Sigil replica with the same credentials and flags.
    async fn replica(&self) -> RunningServer {
        start_replica(&self.dir.path().join("sigil.kubeconfig")).await
    }

    /// This Env's Sigil.
    fn sigil(&self) -> &RunningServer {
        self.sigil.as_ref().expect("Sigil is running")
    }

    /// Stops Sigil until [`Env::start_sigil`]: what is created meanwhile is first seen by
    /// a Sigil that starts after it.
    async fn stop_sigil(&mut self) {
        let sigil = self.sigil.take().expect("Sigil is running");
        sigil.shutdown().await.unwrap();
    }

    async fn start_sigil(&mut self) {
        assert!(self.sigil.is_none(), "Sigil is already running");
        self.sigil = Some(self.replica().await);
    }

    fn node_name(&self, i: usize) -> String {
        self.nodes[i].0.metadata.name.clone().unwrap()
    }

    /// A Pod as `orders` bound to node `i` with `annotations` and a `podCertificate` volume.
    async fn pod(&self, name: &str, node: usize, annotations: Value) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.admin.clone(), &self.ns);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns, "annotations": annotations},
            "spec": {
                "serviceAccountName": "orders",
                "nodeName": self.node_name(node),
                "containers": [{"name": "app", "image": "registry.example/shop/app:1.0",
                                "volumeMounts": [{"name": "svid", "mountPath": "/var/run/svid"}]}],
                // What makes the kubelet ask: node restriction admits requests only for a
                // pod that mounts such a volume for the signer.
                "volumes": [{"name": "svid", "projected": {"sources": [{"podCertificate": {
                    "signerName": SIGNER,
                    "keyType": "ECDSAP256",
                    "credentialBundlePath": "credentialbundle.pem",
                }}]}}],
            }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create pod {name}: {e}"))
    }

    /// The request node `node` writes for `pod` (its own name and UID in the spec).
    async fn request_for(
        &self,
        pod: &Pod,
        node: usize,
        csr: Vec<u8>,
        max_expiration: Option<i32>,
        annotations: Option<Value>,
    ) -> PodCertificateRequest {
        let sas: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), &self.ns);
        let sa = sas.get("orders").await.expect("service account");
        let pod_name = pod.metadata.name.clone().unwrap();
        PodCertificateRequest {
            metadata: ObjectMeta {
                generate_name: Some(format!("{pod_name}-")),
                namespace: Some(self.ns.clone()),
                ..Default::default()
            },
            spec: PodCertificateRequestSpec {
                signer_name: SIGNER.into(),
                pod_name,
                pod_uid: pod.metadata.uid.clone().unwrap(),
                service_account_name: "orders".into(),
                service_account_uid: sa.metadata.uid.unwrap(),
                node_name: self.node_name(node),
                node_uid: self.nodes[node].0.metadata.uid.clone().unwrap(),
                max_expiration_seconds: max_expiration,
                stub_pkc_s10_request: ByteString(csr),
                unverified_user_annotations: annotations
                    .map(|a| serde_json::from_value(a).unwrap()),
            },
            status: None,
        }
    }

    /// Creates `pcr` with node `node`'s credentials.
    async fn create_as_node(
        &self,
        node: usize,
        pcr: &PodCertificateRequest,
    ) -> Result<PodCertificateRequest, kube::Error> {
        let api: Api<PodCertificateRequest> = Api::namespaced(self.nodes[node].1.clone(), &self.ns);
        api.create(&PostParams::default(), pcr).await
    }

    /// Polls (as admin) until the request has a condition; returns it and the time waited.
    async fn settled(&self, name: &str) -> (PodCertificateRequest, Duration) {
        let api: Api<PodCertificateRequest> = Api::namespaced(self.admin.clone(), &self.ns);
        let start = Instant::now();
        loop {
            let pcr = api.get(name).await.expect("get the request");
            if pcr
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| !c.is_empty())
            {
                return (pcr, start.elapsed());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "request {name} not settled after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn finish(self) {
        let namespaces: Api<Namespace> = Api::all(self.admin.clone());
        let _ = namespaces.delete(&self.ns, &DeleteParams::default()).await;
        let nodes: Api<Node> = Api::all(self.admin.clone());
        for i in 0..2 {
            let _ = nodes
                .delete(&self.node_name(i), &DeleteParams::default())
                .await;
        }
        if let Some(sigil) = self.sigil {
            sigil.shutdown().await.unwrap();
        }
    }
}

/// The single condition of a settled request: (type, reason, message).
fn only_condition(pcr: &PodCertificateRequest) -> (String, String, String) {
    let conds = pcr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    assert_eq!(conds.len(), 1, "exactly one condition: {conds:?}");
    assert_eq!(conds[0].status, "True");
    (
        conds[0].type_.clone(),
        conds[0].reason.clone(),
        conds[0].message.clone(),
    )
}

/// The DER SubjectPublicKeyInfo of a PKCS#10 request.
fn csr_key(csr: &[u8]) -> Vec<u8> {
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(csr).unwrap();
    req.certification_request_info.subject_pki.raw.to_vec()
}

/// pkilint (tests/interop/pkilint_judge.py in tests/interop's venv: `SIGIL_INTEROP_VENV`,
/// default `.venv-interop`, which tests/interop/run.sh makes) on each PEM file: no ERROR or
/// FATAL finding but the one it reports for every spiffe:// URI.
fn pkilint(trust_domain: &str, files: &[PathBuf]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("SIGIL_INTEROP_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv-interop"));
    let python = venv.join("bin/python");
    assert!(
        venv.join("bin/lint_pkix_cert").exists(),
        "no pkilint in {}: run tests/interop/run.sh once, or set SIGIL_INTEROP_VENV",
        venv.display()
    );
    let out = Command::new(python)
        .arg(root.join("tests/interop/pkilint_judge.py"))
        .args(["--trust-domain", trust_domain])
        .args(files)
        .output()
        .expect("pkilint_judge.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pkilint: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("PASS")).count(),
        files.len(),
        "{text}"
    );
}

/// Checks an Issued request: the chain verifies with OpenSSL against Sigil's anchors and
/// passes pkilint, the leaf carries `want_id` and the request's key (`key`, DER
/// SubjectPublicKeyInfo), and the status times are the leaf's. Returns the leaf's lifetime
/// in seconds.
fn check_issued(env: &Env, pcr: &PodCertificateRequest, key: &[u8], want_id: &str) -> i64 {
    let (type_, reason, message) = only_condition(pcr);
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Issued", "Issued"),
        "{message}"
    );
    let status = pcr.status.as_ref().unwrap();
    let chain = status
        .certificate_chain
        .as_deref()
        .expect("certificateChain");
    let blocks = pem::parse_many(chain).expect("PEM chain");
    assert!(blocks.len() >= 2, "leaf first, then the issuer chain");
    assert!(blocks.iter().all(|b| b.tag() == "CERTIFICATE"));

    let dir = env.dir.path();
    let name = pcr.metadata.name.clone().unwrap();
    let leaf_file = dir.join(format!("{name}-leaf.pem"));
    let rest_file = dir.join(format!("{name}-rest.pem"));
    let anchors_file = dir.join(format!("{name}-anchors.pem"));
    std::fs::write(&leaf_file, pem::encode(&blocks[0])).unwrap();
    std::fs::write(&rest_file, pem::encode_many(&blocks[1..])).unwrap();
    std::fs::write(&anchors_file, env.sigil().state.current().anchors_pem()).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&anchors_file)
        .arg("-untrusted")
        .arg(&rest_file)
        .args(["-purpose", "sslclient"])
        .arg(&leaf_file)
        .output()
        .expect("openssl verify");
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let (_, leaf) = x509_parser::parse_x509_certificate(blocks[0].contents()).unwrap();
    let mut uris = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::URI(u) = n {
                uris.push(u.to_string());
            }
        }
    }
    assert_eq!(uris, vec![want_id.to_string()]);
    assert_eq!(
        leaf.public_key().raw,
        key,
        "the leaf certifies the request's key"
    );
    let trust_domain = want_id
        .strip_prefix("spiffe://")
        .and_then(|r| r.split('/').next())
        .unwrap();
    let mut lint = vec![leaf_file.clone()];
    for (i, block) in blocks[1..].iter().enumerate() {
        let f = dir.join(format!("{name}-chain{i}.pem"));
        std::fs::write(&f, pem::encode(block)).unwrap();
        lint.push(f);
    }
    pkilint(trust_domain, &lint);

    let nb = leaf.validity().not_before.timestamp();
    let na = leaf.validity().not_after.timestamp();
    assert_eq!(status.not_before.as_ref().unwrap().0.as_second(), nb);
    assert_eq!(status.not_after.as_ref().unwrap().0.as_second(), na);
    let refresh = status.begin_refresh_at.as_ref().unwrap().0.as_second();
    let life = na - nb;
    assert!(
        refresh >= nb + life * 45 / 100 && refresh <= nb + life * 55 / 100 + 1,
        "beginRefreshAt {refresh} at half life ±10% of [{nb}, {na}]"
    );
    life
}

fn metric(env: &Env, needle: &str) -> bool {
    env.sigil()
        .metrics
        .encode()
        .lines()
        .any(|l| l.contains(needle))
}

use x509_parser::prelude::FromDer;

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn node_requests_are_issued_the_pods_spiffe_id() {
    let env = Env::new("issue").await;
    let pod = env
        .pod(
            "orders-1",
            0,
            json!({"dapr.io/app-id": "orders", "dapr.io/config": "appconfig"}),
        )
        .await;
    let want = format!("spiffe://shop.example/ns/{}/orders", env.ns);

    // maxExpirationSeconds 3600 is below the TTL (2 h): the leaf lives exactly 3600 s.
    let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);
    let started = Instant::now();
    let created = env
        .create_as_node(
            0,
            &env.request_for(&pod, 0, csr.clone(), Some(3600), None)
                .await,
        )
        .await
        .expect("the pod's node may create its request");
    let (pcr, _) = env.settled(&created.metadata.name.clone().unwrap()).await;
    let latency = started.elapsed();
    assert_eq!(check_issued(&env, &pcr, &csr_key(&csr), &want), 3600);
    println!("request-to-Issued latency on loopback (create call to Issued seen): {latency:?}");

    // The trust anchors are published for the signer: exactly Sigil's roots, each once.
    let bundles: Api<ClusterTrustBundle> = Api::all(env.admin.clone());
    let bundle_name = format!("{}:trust-anchors", SIGNER.replace('/', ":"));
    let mut tries = 0;
    let bundle = loop {
        match bundles.get(&bundle_name).await {
            Ok(b) => break b,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the signer's ClusterTrustBundle {bundle_name}: {e}"),
        }
    };
    assert_eq!(bundle.spec.signer_name.as_deref(), Some(SIGNER));
    let published: Vec<Vec<u8>> = pem::parse_many(&bundle.spec.trust_bundle)
        .unwrap()
        .into_iter()
        .map(|p| {
            assert_eq!(p.tag(), "CERTIFICATE");
            assert!(p.headers().iter().next().is_none(), "no PEM headers");
            p.into_contents()
        })
        .collect();
    assert_eq!(
        published,
        env.sigil().state.current().trust_bundle().roots().to_vec()
    );

    // No maxExpirationSeconds (the API server's default, 24 h): the TTL (2 h) decides.
    let csr = stub_csr(env.dir.path(), "ed25519", &[]);
    let created = env
        .create_as_node(0, &env.request_for(&pod, 0, csr.clone(), None, None).await)
        .await
        .expect("create");
    assert_eq!(created.spec.max_expiration_seconds, Some(86_400));
    let (pcr, _) = env.settled(&created.metadata.name.clone().unwrap()).await;
    assert_eq!(check_issued(&env, &pcr, &csr_key(&csr), &want), TTL_SECS);

    // RSA 3072 (the smallest RSA key the API server accepts) is signed too.
    let csr = stub_csr(env.dir.path(), "rsa:3072", &[]);
    let created = env
        .create_as_node(
            0,
            &env.request_for(&pod, 0, csr.clone(), Some(5400), None)
                .await,
        )
        .await
        .expect("create");
    let (pcr, _) = env.settled(&created.metadata.name.clone().unwrap()).await;
    assert_eq!(check_issued(&env, &pcr, &csr_key(&csr), &want), 5400);

    // Ten more, one after another: the latency spread.
    let mut samples = Vec::new();
    for _ in 0..10 {
        let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);
        let req = env.request_for(&pod, 0, csr, Some(3600), None).await;
        let t = Instant::now();
        let created = env.create_as_node(0, &req).await.expect("create");
        env.settled(&created.metadata.name.clone().unwrap()).await;
        samples.push(t.elapsed());
    }
    samples.sort();
    println!(
        "request-to-Issued latency over 10 sequential requests: min {:?}, median {:?}, max {:?}",
        samples[0], samples[5], samples[9]
    );
    env.finish().await;
}

/// An older kubelet's request: certificates.k8s.io/v1beta1 with `pkixPublicKey` and a proof
/// of possession (ECDSA over SHA-256 of the pod UID, as the kubelet signs it) instead of
/// `stubPKCS10Request`. Returns it and the key's DER SubjectPublicKeyInfo.
fn pkix_request(
    dir: &Path,
    v1: &PodCertificateRequest,
) -> (v1beta1::PodCertificateRequest, Vec<u8>) {
    let tag = format!("{}", std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos());
    let key = dir.join(format!("pkix-{tag}.key"));
    let (spki, pop) = (
        dir.join(format!("pkix-{tag}.der")),
        dir.join(format!("pkix-{tag}.pop")),
    );
    let uid = dir.join(format!("pkix-{tag}.uid"));
    std::fs::write(&uid, &v1.spec.pod_uid).unwrap();
    let s = |p: &Path| p.display().to_string();
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &s(&key),
    ]);
    openssl(&[
        "pkey",
        "-in",
        &s(&key),
        "-pubout",
        "-outform",
        "DER",
        "-out",
        &s(&spki),
    ]);
    openssl(&[
        "dgst",
        "-sha256",
        "-sign",
        &s(&key),
        "-out",
        &s(&pop),
        &s(&uid),
    ]);
    let spki = std::fs::read(spki).unwrap();
    let mut body = serde_json::to_value(v1).unwrap();
    body["apiVersion"] = json!("certificates.k8s.io/v1beta1");
    let spec = body["spec"].as_object_mut().unwrap();
    spec.remove("stubPKCS10Request");
    spec.insert("pkixPublicKey".into(), json!(STANDARD.encode(&spki)));
    spec.insert(
        "proofOfPossession".into(),
        json!(STANDARD.encode(std::fs::read(pop).unwrap())),
    );
    (serde_json::from_value(body).unwrap(), spki)
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn an_older_kubelets_v1beta1_request_with_a_pkix_public_key_is_issued() {
    let env = Env::new("beta").await;
    let pod = env
        .pod("orders-1", 0, json!({"dapr.io/app-id": "orders"}))
        .await;
    let want = format!("spiffe://public/ns/{}/orders", env.ns);
    // The v1 spec with a CSR, to take the names and UIDs from; the CSR itself is replaced.
    let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);
    let v1 = env.request_for(&pod, 0, csr, Some(3600), None).await;
    let (beta, spki) = pkix_request(env.dir.path(), &v1);
    let api: Api<v1beta1::PodCertificateRequest> = Api::namespaced(env.nodes[0].1.clone(), &env.ns);
    let created = api
        .create(&PostParams::default(), &beta)
        .await
        .expect("the node creates a v1beta1 request with pkixPublicKey");
    let (pcr, _) = env.settled(&created.metadata.name.clone().unwrap()).await;
    assert!(
        pcr.spec.stub_pkc_s10_request.0.is_empty(),
        "v1 shows no key for this request"
    );
    assert_eq!(check_issued(&env, &pcr, &spki, &want), 3600);

    // A proof made with another key is refused by the API server, never reaches Sigil.
    let (mut forged, _) = pkix_request(env.dir.path(), &v1);
    let (other, _) = pkix_request(env.dir.path(), &v1);
    forged.spec.proof_of_possession = other.spec.proof_of_possession;
    let refused = api.create(&PostParams::default(), &forged).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422),
        "a forged proof of possession: {refused:?}"
    );
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn a_request_for_a_recreated_service_account_is_denied() {
    let mut env = Env::new("sa").await;
    let pod = env
        .pod("orders-1", 0, json!({"dapr.io/app-id": "orders"}))
        .await;
    // Sigil is stopped while the ServiceAccount is replaced, so the request it finds names
    // the old account's UID, which the API server checked when the node created it.
    env.stop_sigil().await;
    let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);
    let created = env
        .create_as_node(0, &env.request_for(&pod, 0, csr, None, None).await)
        .await
        .expect("create");
    let sas: Api<ServiceAccount> = Api::namespaced(env.admin.clone(), &env.ns);
    let old_uid = sas.get("orders").await.unwrap().metadata.uid.unwrap();
    sas.delete("orders", &DeleteParams::default())
        .await
        .expect("delete the service account");
    let recreated = sas
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "orders"}})).unwrap(),
        )
        .await
        .expect("recreate it");
    assert_ne!(recreated.metadata.uid.unwrap(), old_uid);
    env.start_sigil().await;
    let (pcr, _) = env.settled(&created.metadata.name.clone().unwrap()).await;
    let (type_, reason, message) = only_condition(&pcr);
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Denied", "PodMismatch"),
        "{message}"
    );
    assert!(message.contains("serviceAccountUID"), "{message}");
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn unsupported_keys_and_unknown_annotations_are_denied() {
    let env = Env::new("deny").await;
    let pod = env
        .pod("orders-1", 0, json!({"dapr.io/app-id": "orders"}))
        .await;

    // P-521 passes the API server's checks; Sigil cannot sign for it.
    let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-521"]);
    let created = env
        .create_as_node(0, &env.request_for(&pod, 0, csr, None, None).await)
        .await
        .expect("the API server accepts a P-521 request");
    let (pcr, _) = env.settled(&created.metadata.name.clone().unwrap()).await;
    let (type_, reason, message) = only_condition(&pcr);
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Denied", "UnsupportedKeyType")
    );
    assert!(
        message.contains("ECDSAP256"),
        "names a supported type: {message}"
    );
    let status = pcr.status.unwrap();
    assert!(status.certificate_chain.is_none() && status.not_after.is_none());

    // RSA 2048 never reaches Sigil: the API server requires 3072 or 4096.
    let csr = stub_csr(env.dir.path(), "rsa:2048", &[]);
    let refused = env
        .create_as_node(0, &env.request_for(&pod, 0, csr, None, None).await)
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422),
        "RSA 2048: {refused:?}"
    );

    // Any unverifiedUserAnnotations key is unknown to Sigil.
    let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);
    let created = env
        .create_as_node(
            0,
            &env.request_for(
                &pod,
                0,
                csr,
                None,
                Some(json!({"example.com/app-id": "payments"})),
            )
            .await,
        )
        .await
        .expect("create");
    let (pcr, _) = env.settled(&created.metadata.name.clone().unwrap()).await;
    let (type_, reason, message) = only_condition(&pcr);
    assert_eq!(
        (type_.as_str(), reason.as_str()),
        ("Denied", "InvalidUnverifiedUserAnnotations")
    );
    assert!(message.contains("example.com/app-id"), "{message}");
    env.finish().await;
}

/// Whether the control plane's kube-apiserver runs the NodeRestriction admission plugin.
fn node_restriction_enabled(statedir: &Path) -> bool {
    let env = std::fs::read_to_string(statedir.join("env")).expect("STATEDIR/env");
    let pid = env
        .lines()
        .find_map(|l| l.strip_prefix("APISERVER_PID="))
        .expect("APISERVER_PID");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("apiserver cmdline");
    String::from_utf8_lossy(&cmdline).contains("NodeRestriction")
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn a_node_cannot_ask_for_another_nodes_pod() {
    let env = Env::new("othernode").await;
    let pod = env.pod("orders-1", 0, json!({})).await;
    let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);

    // Node b names itself: node restriction refuses, the pod is not bound to it.
    let as_b = env.request_for(&pod, 1, csr.clone(), None, None).await;
    let refused = env.create_as_node(1, &as_b).await;
    if node_restriction_enabled(&env.statedir) {
        assert!(
            matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
            "node b asking for node a's pod: {refused:?}"
        );
        // Node b naming node a: refused as well.
        let as_a = env.request_for(&pod, 0, csr, None, None).await;
        let refused = env.create_as_node(1, &as_a).await;
        assert!(
            matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
            "node b posing as node a: {refused:?}"
        );
    } else {
        // Without NodeRestriction the API server lets any node create any request; Sigil
        // still refuses this one (the pod is bound to node a), but could not tell a node
        // naming another node. Fail: the harness must run NodeRestriction, as every real
        // cluster does.
        let created = refused.expect("without NodeRestriction the create is accepted");
        let (pcr, _) = env.settled(&created.metadata.name.clone().unwrap()).await;
        let (type_, reason, message) = only_condition(&pcr);
        assert_eq!(
            (type_.as_str(), reason.as_str()),
            ("Denied", "PodMismatch"),
            "{message}"
        );
        panic!(
            "kube-apiserver runs without the NodeRestriction admission plugin: add \
             --enable-admission-plugins=NodeRestriction to conformance/kube/controlplane.sh \
             (Sigil denied the request itself: {message})"
        );
    }
    env.finish().await;
}

/// Successful and conflicting status writes per request, from the API server's audit log.
fn status_writes(statedir: &Path, ns: &str) -> std::collections::BTreeMap<String, (u32, u32)> {
    let mut out = std::collections::BTreeMap::new();
    let log = std::fs::read_to_string(statedir.join("audit.log")).expect("audit log");
    for line in log.lines() {
        let e: Value = serde_json::from_str(line).expect("audit JSON");
        let r = &e["objectRef"];
        if r["resource"] != "podcertificaterequests"
            || r["subresource"] != "status"
            || r["namespace"] != ns
            || e["verb"] != "update"
        {
            continue;
        }
        let name = r["name"].as_str().unwrap_or_default().to_string();
        let entry = out.entry(name).or_insert((0, 0));
        match e["responseStatus"]["code"].as_u64() {
            Some(200) => entry.0 += 1,
            Some(409) => entry.1 += 1,
            other => panic!("status write answered {other:?}: {line}"),
        }
    }
    out
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn two_replicas_settle_each_request_once() {
    let env = Env::new("replicas").await;
    let second = env.replica().await;
    let pod = env
        .pod("orders-1", 0, json!({"dapr.io/app-id": "orders"}))
        .await;
    let want = format!("spiffe://public/ns/{}/orders", env.ns);
    let mut created = Vec::new();
    for _ in 0..20 {
        let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);
        let req = env
            .request_for(&pod, 0, csr.clone(), Some(3600), None)
            .await;
        let pcr = env.create_as_node(0, &req).await.expect("create");
        created.push((pcr.metadata.name.clone().unwrap(), csr));
    }
    for (name, csr) in &created {
        let (pcr, _) = env.settled(name).await;
        assert_eq!(check_issued(&env, &pcr, &csr_key(csr), &want), 3600);
    }
    let writes = status_writes(&env.statedir, &env.ns);
    let conflicts: u32 = writes.values().map(|w| w.1).sum();
    for (name, _) in &created {
        assert_eq!(
            writes.get(name).map(|w| w.0),
            Some(1),
            "{name}: exactly one successful status write (writes: {writes:?})"
        );
    }
    println!("two replicas, 20 requests: 20 status writes, {conflicts} conflicts (409)");
    second.shutdown().await.unwrap();
    env.finish().await;
}

/// Starts the API server again if the test ends (or panics) while it is down.
struct ApiserverDown<'a>(&'a Path, bool);

impl Drop for ApiserverDown<'_> {
    fn drop(&mut self) {
        if self.1 {
            controlplane("start-apiserver", self.0);
        }
    }
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn requests_after_an_apiserver_restart_are_not_lost() {
    let _exclusive = APISERVER.write().await;
    let env = Env::exclusive("restart").await;
    let pod = env
        .pod("orders-1", 0, json!({"dapr.io/app-id": "orders"}))
        .await;
    let want = format!("spiffe://public/ns/{}/orders", env.ns);
    let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);
    let first = env
        .create_as_node(
            0,
            &env.request_for(&pod, 0, csr.clone(), Some(3600), None)
                .await,
        )
        .await
        .expect("create");
    let (pcr, _) = env.settled(&first.metadata.name.clone().unwrap()).await;
    check_issued(&env, &pcr, &csr_key(&csr), &want);
    let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);
    let annotated = env
        .create_as_node(
            0,
            &env.request_for(&pod, 0, csr, None, Some(json!({"example.com/x": "y"})))
                .await,
        )
        .await
        .expect("create");
    let (pcr, _) = env.settled(&annotated.metadata.name.clone().unwrap()).await;
    assert_eq!(only_condition(&pcr).0, "Denied");

    // SIGKILL the API server under Sigil's watch, start it again, and create requests at
    // once: Sigil has to find them by listing again, whatever state its watch is in.
    let statedir = env.statedir.clone();
    let mut down = ApiserverDown(&statedir, true);
    controlplane("kill-apiserver", &statedir);
    tokio::time::sleep(Duration::from_secs(1)).await;
    controlplane("start-apiserver", &statedir);
    down.1 = false;
    let back = Instant::now();
    let mut created = Vec::new();
    for _ in 0..5 {
        let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);
        let req = env
            .request_for(&pod, 0, csr.clone(), Some(3600), None)
            .await;
        let pcr = env
            .create_as_node(0, &req)
            .await
            .expect("create after the restart");
        created.push((pcr.metadata.name.clone().unwrap(), csr));
    }
    for (name, csr) in &created {
        let (pcr, _) = env.settled(name).await;
        assert_eq!(check_issued(&env, &pcr, &csr_key(csr), &want), 3600);
    }
    // This test runs alone (it holds APISERVER), so this replica settled every request.
    for line in [
        r#"sigil_pod_certificate_requests_total{outcome="issued",reason="Issued"} 6"#,
        r#"sigil_pod_certificate_requests_total{outcome="denied",reason="InvalidUnverifiedUserAnnotations"} 1"#,
        "sigil_pod_certificate_duration_seconds_count 7",
    ] {
        assert!(
            metric(&env, line),
            "no {line:?} in\n{}",
            env.sigil().metrics.encode()
        );
    }
    println!(
        "apiserver restart: 5 requests created right after it was back, all Issued {:?} after it was back",
        back.elapsed()
    );
    env.finish().await;
}

/// The roots in the signer's ClusterTrustBundle (DER), once it exists.
async fn published_roots(admin: &Client) -> Vec<Vec<u8>> {
    let bundles: Api<ClusterTrustBundle> = Api::all(admin.clone());
    let name = format!("{}:trust-anchors", SIGNER.replace('/', ":"));
    let bundle = bundles
        .get(&name)
        .await
        .expect("the signer's ClusterTrustBundle");
    pem::parse_many(&bundle.spec.trust_bundle)
        .unwrap()
        .into_iter()
        .map(pem::Pem::into_contents)
        .collect()
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn a_root_rotation_publishes_both_roots() {
    use k8s_openapi::api::core::v1::Secret;
    let _exclusive = APISERVER.write().await;
    let env = Env::exclusive("rootrot").await;
    let old_roots = env.sigil().state.current().trust_bundle().roots().to_vec();

    // Step one of a root rotation: a new root joins ca.crt in the Secret, the issuer stays.
    let new = env.dir.path().join("new-ca");
    let out = Command::new(env!("CARGO_BIN_EXE_sigil"))
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
    let new_root = pem::parse(std::fs::read(new.join("ca.crt")).unwrap())
        .unwrap()
        .into_contents();
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), CP_NS);
    let mut secret = secrets.get("dapr-trust-bundle").await.unwrap();
    let data = secret.data.get_or_insert_with(Default::default);
    let mut ca = data.get("ca.crt").expect("ca.crt").0.clone();
    ca.extend_from_slice(pem::encode(&pem::Pem::new("CERTIFICATE", new_root.clone())).as_bytes());
    data.insert("ca.crt".into(), ByteString(ca));
    secrets
        .replace("dapr-trust-bundle", &PostParams::default(), &secret)
        .await
        .expect("write the two-root ca.crt");

    let mut want = old_roots.clone();
    want.push(new_root);
    let t0 = Instant::now();
    loop {
        let published = published_roots(&env.admin).await;
        if published == want {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "after 30 s the ClusterTrustBundle holds {} roots, not the old and the new",
            published.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "root rotation: both roots in the ClusterTrustBundle {:?} after the Secret changed",
        t0.elapsed()
    );

    // Certificates keep coming, and verify against the two-root bundle.
    let pod = env
        .pod("orders-1", 0, json!({"dapr.io/app-id": "orders"}))
        .await;
    let csr = stub_csr(env.dir.path(), "ec", &["ec_paramgen_curve:P-256"]);
    let created = env
        .create_as_node(
            0,
            &env.request_for(&pod, 0, csr.clone(), Some(3600), None)
                .await,
        )
        .await
        .expect("create");
    let (pcr, _) = env.settled(&created.metadata.name.clone().unwrap()).await;
    let want_id = format!("spiffe://public/ns/{}/orders", env.ns);
    check_issued(&env, &pcr, &csr_key(&csr), &want_id);
    env.finish().await;
}
