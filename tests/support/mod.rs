//! Test support: a fake Kubernetes API server speaking the real wire format over HTTPS,
//! and helpers to start Sigil in kubernetes mode against it and call it over TLS.
//!
//! The fake serves exactly what Sigil calls: TokenReview (it really verifies ES256
//! service-account JWTs signed by [`Fake::token`], their expiry and audiences), GET pods,
//! GET `configurations.dapr.io`, and GET/POST/PUT Secrets and ConfigMaps with
//! `resourceVersion` conflict detection (409). Errors are `Status` bodies as the real API
//! server sends them. Unlike a real API server, TokenReview does not check that a bound pod
//! still exists with the token's UID, so Sigil's own pod checks are what the tests exercise.
//! Every request is counted by method and resource.
//!
//! Every test starts Sigil the one way `sigil serve` does, from a command line:
//! [`serve_args`] and [`start`]. [`standalone`] holds what the standalone-mode tests share,
//! [`apiserver`] what the tests against a real kube-apiserver share.
#![allow(dead_code)]

pub mod apiserver;
pub mod standalone;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Barrier;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// Sigil's namespace in the tests.
pub const CP_NS: &str = "dapr-system";
/// `iss` of the service-account tokens the fake signs.
pub const TOKEN_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The bearer token Sigil presents to the fake (from the kubeconfig).
const CLIENT_TOKEN: &str = "sigil-test-client-token";
/// Sentry's audience in the tests (control-plane trust domain `cluster.local`).
pub fn sentry_audience() -> String {
    format!("spiffe://cluster.local/ns/{CP_NS}/dapr-sentry")
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Collection paths.
pub fn pods(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}
/// Secrets collection.
pub fn secrets(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/secrets")
}
/// ConfigMaps collection.
pub fn configmaps(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps")
}
/// Dapr Configurations collection.
pub fn configurations(ns: &str) -> String {
    format!("/apis/dapr.io/v1alpha1/namespaces/{ns}/configurations")
}

#[derive(Default)]
struct State {
    objects: HashMap<String, Value>,
    next_rv: u64,
    counts: HashMap<String, usize>,
    fail_with: Option<u16>,
    /// Read requests and never answer (the connection stays open).
    silent: bool,
    review_audiences_override: Option<Vec<String>>,
    secret_write_gate: Option<(Arc<Barrier>, usize)>,
    /// `"<METHOD> <resource>"` keys answered 403 (a grant the service account lacks).
    forbidden: std::collections::HashSet<String>,
    /// How long a TokenReview takes to answer.
    review_delay: Option<std::time::Duration>,
}

struct Shared {
    state: Mutex<State>,
    token_public_key: Vec<u8>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake API server.
pub struct Fake {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// A kubeconfig pointing at it, trusting its CA.
    pub kubeconfig: PathBuf,
    shared: Arc<Shared>,
    signer: EcdsaKeyPair,
    task: Mutex<Option<JoinHandle<()>>>,
    _dir: tempfile::TempDir,
}

/// What a minted service-account token says.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    /// Service account namespace.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// Pod name claim.
    pub pod: Option<String>,
    /// Pod UID claim.
    pub pod_uid: Option<String>,
    /// Audiences.
    pub audiences: Vec<String>,
    /// Seconds from now until `exp` (negative: already expired).
    pub expires_in: i64,
}

impl TokenSpec {
    /// A projected token for `pod` (UID `uid-<pod>`) with Sentry's audience, valid 1 h.
    pub fn for_pod(namespace: &str, service_account: &str, pod: &str) -> Self {
        Self {
            namespace: namespace.into(),
            service_account: service_account.into(),
            pod: Some(pod.into()),
            pod_uid: Some(format!("uid-{pod}")),
            audiences: vec![sentry_audience()],
            expires_in: 3600,
        }
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code
    })
}

fn respond(code: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn tls_material() -> (rustls::ServerConfig, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake kube CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    let cert = params.signed_by(&key, &issuer).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (cfg, ca_cert.pem())
}

impl Fake {
    /// Starts the fake on 127.0.0.1 with an ephemeral port.
    pub async fn start() -> Fake {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let signer = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_rv: 100,
                ..Default::default()
            }),
            token_public_key: signer.public_key().as_ref().to_vec(),
        });
        let (tls, ca_pem) = tls_material();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let served = shared.clone();
        let task = tokio::spawn(async move {
            // Dropping this set (when the task is aborted) closes every open connection.
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let shared = served.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });

        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {}\nusers:\n- name: sigil\n  user:\n    token: {CLIENT_TOKEN}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: sigil\n    namespace: {CP_NS}\ncurrent-context: fake\n",
                STANDARD.encode(ca_pem.as_bytes())
            ),
        )
        .unwrap();
        Fake {
            addr,
            kubeconfig,
            shared,
            signer,
            task: Mutex::new(Some(task)),
            _dir: dir,
        }
    }

    /// Stops listening and drops every open connection: the API server is down.
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Answers every request with this HTTP status (a `Status` body), or normally again.
    pub fn fail_with(&self, code: Option<u16>) {
        self.shared.lock().fail_with = code;
    }

    /// Accepts requests and never answers them (an overloaded or wedged API server), or
    /// answers normally again.
    pub fn go_silent(&self, silent: bool) {
        self.shared.lock().silent = silent;
    }

    /// Makes TokenReview confirm these audiences instead of the true intersection.
    pub fn lie_about_audiences(&self, audiences: Option<Vec<String>>) {
        self.shared.lock().review_audiences_override = audiences;
    }

    /// Holds the next `n` Secret writes until all `n` have arrived, so writers race on the
    /// same `resourceVersion`.
    pub fn gate_secret_writes(&self, n: usize) {
        self.shared.lock().secret_write_gate = Some((Arc::new(Barrier::new(n)), n));
    }

    /// Makes every TokenReview take `delay` (a busy API server), or answer at once again.
    pub fn delay_reviews(&self, delay: Option<std::time::Duration>) {
        self.shared.lock().review_delay = delay;
    }

    /// Answers `"<METHOD> <resource>"` (e.g. `"PUT configmaps"`) with 403 Forbidden from now
    /// on, as RBAC does for a missing grant.
    pub fn forbid(&self, key: &str) {
        self.shared.lock().forbidden.insert(key.to_string());
    }

    /// Requests seen, by `"<METHOD> <resource>"` or `"<METHOD> <resource> <code>"`.
    pub fn count(&self, key: &str) -> usize {
        self.shared.lock().counts.get(key).copied().unwrap_or(0)
    }

    /// Stores `obj` (its `metadata.name`) in `collection`, as if created by someone else.
    pub fn put(&self, collection: &str, mut obj: Value) {
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut st = self.shared.lock();
        st.next_rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.next_rv.to_string());
        st.objects.insert(format!("{collection}/{name}"), obj);
    }

    /// The stored object.
    pub fn get(&self, collection: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .objects
            .get(&format!("{collection}/{name}"))
            .cloned()
    }

    /// Adds a pod with UID `uid-<name>`, one app container and the given annotations.
    pub fn add_pod(&self, ns: &str, name: &str, service_account: &str, annotations: Value) {
        self.put(
            &pods(ns),
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": format!("uid-{name}"),
                    "annotations": annotations
                },
                "spec": {
                    "serviceAccountName": service_account,
                    "containers": [
                        {"name": "app", "image": "registry.example/shop/app:1.0"},
                        {"name": "daprd", "image": "ghcr.io/dapr/daprd:1.15.0"}
                    ]
                },
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{
                        "name": "app",
                        "image": "registry.example/shop/app:1.0",
                        "imageID": "registry.example/shop/app@sha256:0123abcd",
                        "ready": true,
                        "restartCount": 0
                    }]
                }
            }),
        );
    }

    /// Adds a Dapr Configuration with `spec`.
    pub fn add_configuration(&self, ns: &str, name: &str, spec: Value) {
        self.put(
            &configurations(ns),
            json!({
                "apiVersion": "dapr.io/v1alpha1",
                "kind": "Configuration",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec
            }),
        );
    }

    /// A service-account JWT signed with the fake's key (ES256).
    pub fn token(&self, spec: &TokenSpec) -> String {
        let now = now_unix();
        let mut k8s = json!({
            "namespace": spec.namespace,
            "serviceaccount": {"name": spec.service_account, "uid": "sa-uid"}
        });
        if let Some(pod) = &spec.pod {
            k8s["pod"] = json!({"name": pod});
            if let Some(uid) = &spec.pod_uid {
                k8s["pod"]["uid"] = json!(uid);
            }
        }
        let claims = json!({
            "iss": TOKEN_ISSUER,
            "sub": format!("system:serviceaccount:{}:{}", spec.namespace, spec.service_account),
            "aud": spec.audiences,
            "iat": now - 10,
            "nbf": now - 10,
            "exp": now + spec.expires_in,
            "kubernetes.io": k8s
        });
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","kid":"fake"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let sig = self
            .signer
            .sign(&SystemRandom::new(), input.as_bytes())
            .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Verifies a token as the API server's service-account authenticator would; returns the
/// user name and the confirmed audiences.
fn verify_token(
    public_key: &[u8],
    token: &str,
    wanted: &[String],
) -> Result<(String, Vec<String>), String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return Err("invalid bearer token".into());
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("invalid bearer token")?;
    if header["alg"] != "ES256" {
        return Err("invalid bearer token, unexpected algorithm".into());
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| "invalid signature")?;
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
        .verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| "invalid bearer token, square/go-jose: error in cryptographic primitive")?;
    let claims: Value = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("invalid bearer token")?;
    let now = now_unix();
    if claims["iss"] != TOKEN_ISSUER {
        return Err("invalid bearer token, issuer mismatch".into());
    }
    if claims["exp"].as_i64().is_none_or(|exp| exp < now) {
        return Err("invalid bearer token, service account token has expired".into());
    }
    if claims["nbf"].as_i64().is_some_and(|nbf| nbf > now) {
        return Err("invalid bearer token, service account token is not valid yet".into());
    }
    let token_aud: Vec<String> = match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => vec![],
    };
    let confirmed: Vec<String> = wanted
        .iter()
        .filter(|a| token_aud.contains(a))
        .cloned()
        .collect();
    if confirmed.is_empty() {
        return Err("token audiences is invalid for the target audiences".into());
    }
    let sub = claims["sub"].as_str().unwrap_or_default().to_string();
    if !sub.starts_with("system:serviceaccount:") {
        return Err("invalid bearer token".into());
    }
    Ok((sub, confirmed))
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {CLIENT_TOKEN}"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return respond(400, &status_body(400, "BadRequest", "unreadable body")),
    };
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // (collection path, resource, object name)
    let (collection, resource, name) = match segs.as_slice() {
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => {
            (path.clone(), "tokenreviews".to_string(), None)
        }
        ["api", "v1", "namespaces", _, res, rest @ ..] if rest.len() <= 1 => (
            format!("/{}", segs[..5].join("/")),
            res.to_string(),
            rest.first().map(|s| s.to_string()),
        ),
        ["apis", _, _, "namespaces", _, res, rest @ ..] if rest.len() <= 1 => (
            format!("/{}", segs[..6].join("/")),
            res.to_string(),
            rest.first().map(|s| s.to_string()),
        ),
        _ => {
            return respond(
                404,
                &status_body(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            )
        }
    };
    let key = format!("{method} {resource}");
    let (fail, silent, delay) = {
        let mut st = shared.lock();
        *st.counts.entry(key.clone()).or_default() += 1;
        let fail = st.fail_with.or(st.forbidden.contains(&key).then_some(403));
        (
            fail,
            st.silent,
            st.review_delay.filter(|_| resource == "tokenreviews"),
        )
    };
    if silent {
        std::future::pending::<()>().await;
    }
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let (code, answer) = if !authorized {
        (401, status_body(401, "Unauthorized", "Unauthorized"))
    } else if let Some(code) = fail {
        (
            code,
            status_body(code, "InternalError", "etcdserver: request timed out"),
        )
    } else {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match (method.as_str(), resource.as_str(), name) {
            ("POST", "tokenreviews", None) => token_review(shared, body),
            ("GET", _, Some(name)) => get_object(shared, &collection, &resource, &name),
            ("POST", "secrets" | "configmaps", None) => {
                create_object(shared, &collection, &resource, body)
            }
            ("PUT", "secrets" | "configmaps", Some(name)) => {
                if resource == "secrets" {
                    wait_at_gate(shared).await;
                }
                replace_object(shared, &collection, &resource, &name, body)
            }
            _ => (
                405,
                status_body(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method",
                ),
            ),
        }
    };
    *shared
        .lock()
        .counts
        .entry(format!("{key} {code}"))
        .or_default() += 1;
    respond(code, &answer)
}

async fn wait_at_gate(shared: &Shared) {
    let barrier = {
        let mut st = shared.lock();
        match st.secret_write_gate.as_mut() {
            Some((b, left)) if *left > 0 => {
                *left -= 1;
                Some(b.clone())
            }
            _ => None,
        }
    };
    if let Some(b) = barrier {
        // A safety valve only: the test asserts on what was written, not on timing.
        let _ = tokio::time::timeout(Duration::from_secs(20), b.wait()).await;
    }
}

fn token_review(shared: &Shared, body: Value) -> (u16, Value) {
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let mut wanted: Vec<String> = body["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if wanted.is_empty() {
        wanted = vec![TOKEN_ISSUER.to_string()];
    }
    let status = match verify_token(&shared.token_public_key, token, &wanted) {
        Ok((username, confirmed)) => {
            let ns = username.split(':').nth(2).unwrap_or_default().to_string();
            let audiences = shared
                .lock()
                .review_audiences_override
                .clone()
                .unwrap_or(confirmed);
            json!({
                "authenticated": true,
                "user": {
                    "username": username,
                    "uid": "sa-uid",
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"]
                },
                "audiences": audiences
            })
        }
        Err(e) => json!({"user": {}, "error": e}),
    };
    (
        201,
        json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": body["spec"],
            "status": status
        }),
    )
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "pods" => "Pod",
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "configurations" => "Configuration",
        _ => "Unknown",
    }
}

fn not_found(resource: &str, name: &str) -> (u16, Value) {
    let mut s = status_body(404, "NotFound", &format!("{resource} \"{name}\" not found"));
    s["details"] = json!({"name": name, "kind": resource});
    (404, s)
}

fn get_object(shared: &Shared, collection: &str, resource: &str, name: &str) -> (u16, Value) {
    match shared.lock().objects.get(&format!("{collection}/{name}")) {
        Some(obj) => (200, obj.clone()),
        None => not_found(resource, name),
    }
}

fn create_object(
    shared: &Shared,
    collection: &str,
    resource: &str,
    mut obj: Value,
) -> (u16, Value) {
    let Some(name) = obj["metadata"]["name"].as_str().map(String::from) else {
        return (
            422,
            status_body(422, "Invalid", "metadata.name: Required value"),
        );
    };
    let key = format!("{collection}/{name}");
    let mut st = shared.lock();
    if st.objects.contains_key(&key) {
        let mut s = status_body(
            409,
            "AlreadyExists",
            &format!("{resource} \"{name}\" already exists"),
        );
        s["details"] = json!({"name": name, "kind": resource});
        return (409, s);
    }
    st.next_rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.next_rv.to_string());
    obj["metadata"]["uid"] = json!(format!("uid-{resource}-{name}"));
    obj["apiVersion"] = json!("v1");
    obj["kind"] = json!(kind_of(resource));
    st.objects.insert(key, obj.clone());
    (201, obj)
}

fn replace_object(
    shared: &Shared,
    collection: &str,
    resource: &str,
    name: &str,
    mut obj: Value,
) -> (u16, Value) {
    let key = format!("{collection}/{name}");
    let mut st = shared.lock();
    let Some(current) = st.objects.get(&key) else {
        return not_found(resource, name);
    };
    let current_rv = current["metadata"]["resourceVersion"].clone();
    if !obj["metadata"]["resourceVersion"].is_null()
        && obj["metadata"]["resourceVersion"] != current_rv
    {
        let mut s = status_body(
            409,
            "Conflict",
            &format!("Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
        );
        s["details"] = json!({"name": name, "kind": resource});
        return (409, s);
    }
    st.next_rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.next_rv.to_string());
    st.objects.insert(key, obj.clone());
    (200, obj)
}

// ---- Sigil side --------------------------------------------------------------------------

/// `sigil serve`'s flags from a command line (`argv` without the program name).
pub fn serve_args(argv: &[&str]) -> sigil::config::ServeArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: sigil::config::ServeArgs,
    }
    let argv = std::iter::once("sigil").chain(argv.iter().copied());
    Serve::try_parse_from(argv).expect("test flags parse").args
}

/// Starts Sigil with `args` as `sigil serve` does: in kubernetes mode the Dapr
/// Configuration is read from the API server first.
pub async fn start(
    args: sigil::config::ServeArgs,
) -> Result<sigil::server::RunningServer, sigil::Error> {
    let config = sigil::cluster::config_from_args(args).await?;
    sigil::server::start(config, Arc::new(sigil_pki::SystemClock)).await
}

/// Flags of `sigil serve` for a test: kubernetes mode against the API server of
/// `kubeconfig`, loopback, port 0.
pub fn kubernetes_args(kubeconfig: &std::path::Path, extra: &[&str]) -> sigil::config::ServeArgs {
    let kubeconfig = kubeconfig.display().to_string();
    let mut argv = vec![
        "--mode",
        "kubernetes",
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        CP_NS,
        "--listen-address",
        "127.0.0.1",
        "--port",
        "0",
        "--healthz-port",
        "0",
        "--enable-metrics=false",
    ];
    argv.extend_from_slice(extra);
    serve_args(&argv)
}

/// Starts Sigil in kubernetes mode against `fake`.
pub async fn start_sigil(
    fake: &Fake,
    extra: &[&str],
) -> Result<sigil::server::RunningServer, sigil::Error> {
    start_sigil_for(&fake.kubeconfig, extra).await
}

/// Starts Sigil in kubernetes mode against the API server of `kubeconfig`.
pub async fn start_sigil_for(
    kubeconfig: &std::path::Path,
    extra: &[&str],
) -> Result<sigil::server::RunningServer, sigil::Error> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("sigil=debug")
        .try_init();
    start(kubernetes_args(kubeconfig, extra)).await
}

/// A gRPC client trusting the server's CA and checking its `dapr-sentry` Service name.
pub async fn ca_client(
    server: &sigil::server::RunningServer,
) -> sigil_proto::sentry::ca_client::CaClient<tonic::transport::Channel> {
    let anchors = server.state.current().trust_bundle().to_pem();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(anchors))
        .domain_name(format!("dapr-sentry.{CP_NS}.svc"));
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", server.grpc_addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    sigil_proto::sentry::ca_client::CaClient::new(channel)
}

/// A PEM CSR with a fresh P-256 key and an empty subject.
pub fn csr_pem() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
        .into_bytes()
}

/// A Kubernetes-validator request.
pub fn request(id: &str, namespace: &str, token: &str) -> sigil_proto::SignCertificateRequest {
    sigil_proto::SignCertificateRequest {
        id: id.into(),
        token: token.into(),
        trust_domain: "ignored.example".into(),
        namespace: namespace.into(),
        certificate_signing_request: csr_pem(),
        token_validator: 2,
        jwt_audiences: vec![],
    }
}
