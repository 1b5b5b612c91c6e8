use super::*;

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

// ---- the CA is never lost, silently replaced or mirrored the wrong way ---------------------

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use std::collections::BTreeMap;

/// Sigil's annotation on a Secret it stored CA material in.
const CA_STORED: &str = "sigil.dev/ca-stored";
/// The trust-bundle objects' name.
const BUNDLE: &str = "dapr-trust-bundle";

fn secrets(admin: &Client) -> Api<Secret> {
    Api::namespaced(admin.clone(), CP_NS)
}

fn configmaps(admin: &Client) -> Api<ConfigMap> {
    Api::namespaced(admin.clone(), CP_NS)
}

/// Replaces the Secret's data with `data`, and Sigil's annotation with `ca_stored` (the
/// chart's other metadata kept); returns the Secret as stored.
async fn put_secret(admin: &Client, data: &[(&str, &[u8])], ca_stored: Option<&str>) -> Secret {
    let mut secret = secrets(admin).get(BUNDLE).await.expect("the Secret");
    secret.data = (!data.is_empty()).then(|| {
        data.iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
            .collect()
    });
    let annotations = secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    match ca_stored {
        Some(v) => annotations.insert(CA_STORED.into(), v.into()),
        None => annotations.remove(CA_STORED),
    };
    secrets(admin)
        .replace(BUNDLE, &PostParams::default(), &secret)
        .await
        .expect("replace the Secret")
}

/// Puts back Secret data saved with [`secret_data`], for the tests after this one.
async fn put_back(admin: &Client, saved: &BTreeMap<String, Vec<u8>>) {
    let data: Vec<(&str, &[u8])> = saved.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
    put_secret(admin, &data, None).await;
}

/// Replaces the ConfigMap's data with `data`.
async fn put_configmap(admin: &Client, data: &[(&str, &str)]) {
    let mut cm = configmaps(admin).get(BUNDLE).await.expect("the ConfigMap");
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    configmaps(admin)
        .replace(BUNDLE, &PostParams::default(), &cm)
        .await
        .expect("replace the ConfigMap");
}

/// The Secret's data, empty when it has none.
async fn secret_data(admin: &Client) -> BTreeMap<String, Vec<u8>> {
    secrets(admin)
        .get(BUNDLE)
        .await
        .expect("the Secret")
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// The ConfigMap's data, empty when it has none.
async fn configmap_data(admin: &Client) -> BTreeMap<String, String> {
    configmaps(admin)
        .get(BUNDLE)
        .await
        .expect("the ConfigMap")
        .data
        .unwrap_or_default()
}

/// A CA of its own for the control plane's trust domain, as a user would bring it.
fn another_ca() -> sigil_pki::CaFiles {
    let params = sigil_pki::CaParams::new("cluster.local".parse().unwrap(), CP_NS.parse().unwrap());
    sigil_pki::Authority::generate(&params, time::OffsetDateTime::now_utc()).unwrap()
}

/// The CA material of `ca` as the Secret's data.
fn material(ca: &sigil_pki::CaFiles) -> [(&'static str, &[u8]); 3] {
    [
        ("ca.crt", &ca.ca_crt[..]),
        ("issuer.crt", &ca.issuer_crt[..]),
        ("issuer.key", &ca.issuer_key[..]),
    ]
}

/// Polls `done` every 100 ms for at most 60 s (a safety valve, not a timing assertion).
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A token of ServiceAccount `name` in Sigil's namespace, bound to the chart's ClusterRole and,
/// in the namespace, to a Role of exactly `rules` (in place of the chart's Role), once the
/// API server's authorizer grants what `rules` grants first.
async fn token_with_rules(admin: &Client, name: &str, rules: Value) -> String {
    let cluster_role = manifest_cluster_role();
    service_account(admin, CP_NS, name).await;
    let subject = json!([{"kind": "ServiceAccount", "name": name, "namespace": CP_NS}]);
    for (kind, namespaced, obj) in [
        (
            "ClusterRoleBinding",
            false,
            json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": subject}),
        ),
        (
            "Role",
            true,
            json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": CP_NS}, "rules": rules}),
        ),
        (
            "RoleBinding",
            true,
            json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": CP_NS},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subject}),
        ),
    ] {
        let (group, version, plural, _) = applied_kind(kind).expect("an RBAC kind");
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        apply(admin, &ar, namespaced, obj).await;
    }
    // RBAC reaches the authorizer through its informers: wait until the first rule holds.
    let first = &rules[0];
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{CP_NS}:{name}")),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(CP_NS.into()),
                verb: first["verbs"][0].as_str().map(Into::into),
                resource: first["resources"][0].as_str().map(Into::into),
                name: Some(BUNDLE.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(admin.clone());
    eventually("the test Role in force", || {
        let (reviews, review) = (reviews.clone(), review.clone());
        async move {
            reviews
                .create(&PostParams::default(), &review)
                .await
                .ok()
                .and_then(|r| r.status)
                .is_some_and(|s| s.allowed)
        }
    })
    .await;
    token(
        admin,
        CP_NS,
        name,
        "https://kubernetes.default.svc.cluster.local",
        None,
    )
    .await
    .expect("token")
}

/// The manifest's object of `kind` (the first).
fn manifest_object(kind: &str) -> Value {
    serde_yaml::Deserializer::from_str(MANIFEST)
        .filter_map(|d| <Value as serde::Deserialize>::deserialize(d).ok())
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("the manifest has no {kind}"))
}

/// The name of the manifest's ClusterRole.
fn manifest_cluster_role() -> String {
    manifest_object("ClusterRole")["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_string()
}

/// Sigil's annotation on the Secret, if any.
fn annotation(secret: &Secret) -> Option<String> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(CA_STORED)
        .cloned()
}

/// Ok when a deletion found nothing to delete.
fn gone<T>(deleted: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match deleted {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn missing_trust_bundle_objects_are_created_only_where_the_grants_allow() {
    let statedir = statedir();
    let admin = admin_client(&statedir).await;
    cluster_setup(&admin).await;
    let _exclusive = TRUST_BUNDLE.write().await;
    let dir = tempfile::tempdir().unwrap();
    gone(
        secrets(&admin)
            .delete(BUNDLE, &DeleteParams::default())
            .await,
    )
    .unwrap();
    gone(
        configmaps(&admin)
            .delete(BUNDLE, &DeleteParams::default())
            .await,
    )
    .unwrap();

    // The chart creates both objects and grants no `create`: a start without them fails and
    // says why, and creates nothing. (As a copy of the chart's ServiceAccount, same grants:
    // the refusal provoked here is not one of the chart's own.)
    let chart_token = token_with_rules(
        &admin,
        "sigil-chart-copy",
        manifest_object("Role")["rules"].clone(),
    )
    .await;
    let err = try_start_sigil_as(&statedir, dir.path(), &chart_token, &[])
        .await
        .err()
        .expect("no Secret, no grant to create it: the start fails")
        .to_string();
    assert!(err.contains("forbidden"), "{err}");
    assert!(secrets(&admin).get_opt(BUNDLE).await.unwrap().is_none());
    assert!(configmaps(&admin).get_opt(BUNDLE).await.unwrap().is_none());

    // With `create` granted as well (a chart that leaves the objects to Sigil), the first start
    // makes both: the material in the Secret, only the anchors in the ConfigMap.
    let t = token_with_rules(
        &admin,
        "sigil-may-create",
        json!([
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets", "configmaps"],
             "resourceNames": [BUNDLE], "verbs": ["get", "update"]},
        ]),
    )
    .await;
    let sigil = start_sigil_as(&statedir, dir.path(), &t, &[]).await;
    let data = secret_data(&admin).await;
    assert!(data["issuer.key"].starts_with(b"-----BEGIN"));
    assert!(!data["issuer.crt"].is_empty());
    assert_eq!(
        String::from_utf8(data["ca.crt"].clone()).unwrap(),
        sigil.state.current().trust_bundle().to_pem()
    );
    let stored = secrets(&admin).get(BUNDLE).await.unwrap();
    assert!(
        annotation(&stored).is_some(),
        "Sigil's annotation on the Secret it filled"
    );
    let cm = configmap_data(&admin).await;
    assert_eq!(cm["ca.crt"].as_bytes(), &data["ca.crt"][..]);
    assert!(!cm.contains_key("issuer.key"));
    assert_eq!(calls_with_token(&t, "create", "secrets"), 1);
    sigil.shutdown().await.unwrap();
    // The chart's metadata back on the objects Sigil made, for the tests after this one.
    apply_manifest(&admin).await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn the_configmap_is_rewritten_from_the_secret_never_the_reverse() {
    let statedir = statedir();
    let admin = admin_client(&statedir).await;
    cluster_setup(&admin).await;
    let _exclusive = TRUST_BUNDLE.write().await;
    let (users, other) = (another_ca(), another_ca());
    let before = put_secret(&admin, &material(&users), None).await;
    put_configmap(
        &admin,
        &[
            ("ca.crt", std::str::from_utf8(&other.ca_crt).unwrap()),
            ("note", "kept"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let t = chart_sigil_token(&admin).await;
    let sigil = start_sigil_as(&statedir, dir.path(), &t, &[]).await;
    assert_eq!(
        sigil.state.current().trust_bundle().to_pem().as_bytes(),
        &users.ca_crt[..],
        "the Secret's CA is served"
    );
    let after = secrets(&admin).get(BUNDLE).await.unwrap();
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "the Secret was written"
    );
    let cm = configmap_data(&admin).await;
    assert_eq!(cm["ca.crt"].as_bytes(), &users.ca_crt[..]);
    assert_eq!(cm["note"], "kept", "other keys of the ConfigMap are kept");
    assert_eq!(calls_with_token(&t, "update", "configmaps"), 1);
    assert_eq!(calls_with_token(&t, "update", "secrets"), 0);
    sigil.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn a_partly_filled_secret_stops_the_start_and_is_left_alone() {
    let statedir = statedir();
    let admin = admin_client(&statedir).await;
    cluster_setup(&admin).await;
    let _exclusive = TRUST_BUNDLE.write().await;
    let saved = secret_data(&admin).await;
    let ca = another_ca();
    let partial = put_secret(&admin, &material(&ca)[..1], None).await;
    let dir = tempfile::tempdir().unwrap();
    let t = chart_sigil_token(&admin).await;
    let err = try_start_sigil_as(&statedir, dir.path(), &t, &[])
        .await
        .err()
        .expect("a Secret with ca.crt alone stops the start")
        .to_string();
    assert!(err.contains("only part of the CA material"), "{err}");
    assert!(err.contains("issuer.key"), "{err}");
    let after = secrets(&admin).get(BUNDLE).await.unwrap();
    assert_eq!(
        partial.metadata.resource_version,
        after.metadata.resource_version
    );
    assert_eq!(calls_with_token(&t, "update", "secrets"), 0);
    // Put back what was there, for the tests after this one.
    put_back(&admin, &saved).await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn an_emptied_secret_is_written_back_while_serving_and_refused_at_start() {
    let statedir = statedir();
    let admin = admin_client(&statedir).await;
    cluster_setup(&admin).await;
    let _exclusive = TRUST_BUNDLE.write().await;
    let dir = tempfile::tempdir().unwrap();
    let t = chart_sigil_token(&admin).await;
    let sigil = start_sigil_as(&statedir, dir.path(), &t, &["--reload-interval", "200ms"]).await;
    let anchors = sigil.state.current().anchors_pem().to_string();

    // `helm upgrade --force`: the Secret replaced by the chart's empty one. The running
    // replica writes the CA in force back; nothing is generated.
    put_secret(&admin, &[], None).await;
    eventually("the CA written back", || {
        let admin = admin.clone();
        async move { secret_data(&admin).await.contains_key("ca.crt") }
    })
    .await;
    assert_eq!(secret_data(&admin).await["ca.crt"], anchors.as_bytes());
    assert_eq!(sigil.metrics.ca_material_lost.get(), 1);
    assert_eq!(sigil.state.current().anchors_pem(), anchors);
    let marker = secrets(&admin).get(BUNDLE).await.unwrap();
    let marker = annotation(&marker).expect("the written-back Secret carries Sigil's annotation");
    assert!(marker.starts_with("sha256:"), "{marker}");

    // Partly emptied (issuer.key dropped, as by a slip in `kubectl edit`): counted, the CA in
    // force keeps serving, and the Secret is left as the person left it (it may be an edit
    // under way): never regenerated, never overwritten.
    let full = secret_data(&admin).await;
    let partial: Vec<(&str, &[u8])> = full
        .iter()
        .filter(|(k, _)| k.as_str() != "issuer.key")
        .map(|(k, v)| (k.as_str(), &v[..]))
        .collect();
    let partial_secret = put_secret(&admin, &partial, Some(&marker)).await;
    let metrics = sigil.metrics.clone();
    eventually("the partly emptied Secret counted", || {
        let n = metrics.ca_material_lost.get();
        async move { n == 2 }
    })
    .await;
    assert_eq!(sigil.state.current().anchors_pem(), anchors);
    let ns = format!("kt-partial-{}", rand_suffix());
    namespace(&admin, &ssa(), &ns).await;
    service_account(&admin, &ns, "orders").await;
    let pod = create_pod(
        &admin,
        &ns,
        "orders-1",
        "orders",
        json!({"dapr.io/app-id": "orders"}),
    )
    .await;
    let pod_token = token(&admin, &ns, "orders", &sentry_audience(), Some(&pod))
        .await
        .expect("a pod token");
    let resp = ca_client(&sigil)
        .await
        .sign_certificate(request("orders", &ns, &pod_token))
        .await
        .expect("still issuing with the CA in force")
        .into_inner();
    assert_eq!(
        resp.trust_chain_certificates,
        vec![anchors.clone().into_bytes()]
    );
    let after = secrets(&admin).get(BUNDLE).await.unwrap();
    assert_eq!(
        partial_secret.metadata.resource_version, after.metadata.resource_version,
        "the partly emptied Secret was written"
    );
    let full: Vec<(&str, &[u8])> = full.iter().map(|(k, v)| (k.as_str(), &v[..])).collect();
    put_secret(&admin, &full, Some(&marker)).await;
    sigil.shutdown().await.unwrap();

    // Emptied with no replica running: the ConfigMap still holds the anchors, so a start
    // refuses instead of making a new root, and writes nothing.
    put_secret(&admin, &[], None).await;
    let t = chart_sigil_token(&admin).await;
    let err = try_start_sigil_as(&statedir, dir.path(), &t, &[])
        .await
        .err()
        .expect("an emptied Secret with anchors in the ConfigMap stops the start")
        .to_string();
    assert!(err.contains("held CA material before"), "{err}");
    assert!(
        err.contains("ConfigMap") && err.contains("To restore"),
        "{err}"
    );
    assert!(secret_data(&admin).await.is_empty());
    assert_eq!(calls_with_token(&t, "update", "secrets"), 0);

    // The ConfigMap emptied too, but the Secret kept Sigil's annotation (an edit that dropped
    // the data): still refused.
    put_configmap(&admin, &[]).await;
    put_secret(&admin, &[], Some(&marker)).await;
    let err = try_start_sigil_as(&statedir, dir.path(), &t, &[])
        .await
        .err()
        .expect("an emptied Secret with Sigil's annotation stops the start")
        .to_string();
    assert!(err.contains("annotation sigil.dev/ca-stored"), "{err}");

    // Starting over on purpose, as the error explains: no annotation, no anchors left.
    put_secret(&admin, &[], None).await;
    let fresh = start_sigil_as(&statedir, dir.path(), &t, &[]).await;
    assert_ne!(fresh.state.current().anchors_pem(), anchors);
    fresh.shutdown().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn an_unrelated_root_is_not_swapped_in_while_serving() {
    let _exclusive = TRUST_BUNDLE.write().await;
    let env = Env::build(
        "stranger",
        &["orders"],
        None,
        &["--reload-interval", "200ms"],
    )
    .await;
    let ns = env.ns.clone();
    let saved = secret_data(&env.admin).await;
    let anchors = env.sigil.state.current().anchors_pem().to_string();
    let stranger = another_ca();
    put_secret(&env.admin, &material(&stranger), None).await;
    let metrics = env.sigil.metrics.clone();
    eventually("the refusal counted", || {
        let n = metrics.ca_root_replacement_refused.get();
        async move { n >= 1 }
    })
    .await;
    assert_eq!(env.sigil.state.current().anchors_pem(), anchors);
    // Still signing with the CA in force.
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let t = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let resp = ca_client(&env.sigil)
        .await
        .sign_certificate(request("orders", &ns, &t))
        .await
        .expect("issued")
        .into_inner();
    assert_eq!(resp.trust_chain_certificates, vec![anchors.into_bytes()]);
    put_back(&env.admin, &saved).await;
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn a_configmap_sigil_may_not_write_is_a_warning_not_a_failed_start() {
    let statedir = statedir();
    let admin = admin_client(&statedir).await;
    cluster_setup(&admin).await;
    let _exclusive = TRUST_BUNDLE.write().await;
    // A stale ConfigMap, so that the start has something to mirror.
    let stale = another_ca();
    put_configmap(
        &admin,
        &[("ca.crt", std::str::from_utf8(&stale.ca_crt).unwrap())],
    )
    .await;
    // The chart's Role without its ConfigMap grant.
    let t = token_with_rules(
        &admin,
        "sigil-no-configmap",
        json!([{"apiGroups": [""], "resources": ["secrets"],
                "resourceNames": [BUNDLE], "verbs": ["get", "update"]}]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sigil = start_sigil_as(&statedir, dir.path(), &t, &[]).await;
    assert!(sigil.metrics.trust_bundle_mirror_failures.get() >= 1);
    assert_eq!(
        configmap_data(&admin).await["ca.crt"].as_bytes(),
        &stale.ca_crt[..],
        "the ConfigMap was written without the grant"
    );
    // The CA is the Secret's, and served.
    assert_eq!(
        secret_data(&admin).await["ca.crt"],
        sigil.state.current().anchors_pem().as_bytes()
    );
    let denied = audited_calls(&statedir, |u| {
        u["username"] == format!("system:serviceaccount:{CP_NS}:sigil-no-configmap").as_str()
    })
    .into_iter()
    .filter(|c| c.resource == "configmaps" && c.code == 403)
    .count();
    assert!(denied >= 1, "the API server refused the ConfigMap write");
    sigil.shutdown().await.unwrap();
}

/// The root of `sigil_pki::Authority::generate` for the control plane's trust domain,
/// re-issued with its key: the same subject and key, a new serial and validity. What
/// `dapr mtls renew-certificate --private-key` does to the root.
fn reissued_root(root_key_pem: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::from_pem(root_key_pem).expect("the root key");
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "cluster.local");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyCertSign,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(15);
    params.not_after = now + time::Duration::days(365);
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand_suffix().into_bytes()));
    params.self_signed(&key).unwrap().pem().into_bytes()
}

/// `openssl verify` of `chain_pem` (leaf first) against `anchors_pem`.
fn openssl_verifies(dir: &Path, chain_pem: &[u8], anchors_pem: &[u8]) -> bool {
    let pems: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(chain_pem)
        .map(|p| p.unwrap())
        .collect();
    let write = |name: &str, pem: &x509_parser::pem::Pem| {
        let text = pem::encode(&pem::Pem::new("CERTIFICATE", pem.contents.clone()));
        std::fs::write(dir.join(name), text).unwrap();
    };
    write("leaf.pem", &pems[0]);
    write("issuer.pem", &pems[1]);
    std::fs::write(dir.join("anchors.pem"), anchors_pem).unwrap();
    std::process::Command::new("openssl")
        .current_dir(dir)
        .args([
            "verify",
            "-CAfile",
            "anchors.pem",
            "-untrusted",
            "issuer.pem",
            "leaf.pem",
        ])
        .output()
        .expect("openssl runs")
        .status
        .success()
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn a_root_renewed_with_its_key_as_the_dapr_cli_does_is_swapped_in_while_serving() {
    let _exclusive = TRUST_BUNDLE.write().await;
    let statedir = statedir();
    let admin = admin_client(&statedir).await;
    cluster_setup(&admin).await;
    let saved = secret_data(&admin).await;
    // The CA as a user keeps it: the root key on the side.
    let params = sigil_pki::CaParams::new("cluster.local".parse().unwrap(), CP_NS.parse().unwrap());
    let now = time::OffsetDateTime::now_utc();
    let (first, root_key) = sigil_pki::Authority::generate_keeping_root(&params, now).unwrap();
    put_secret(&admin, &material(&first), None).await;
    let env = Env::build("renew", &["orders"], None, &["--reload-interval", "200ms"]).await;
    let ns = env.ns.clone();
    assert_eq!(
        env.sigil.state.current().anchors_pem().as_bytes(),
        &first.ca_crt[..]
    );

    // The renewal: ca.crt is the re-issued root alone, with a new issuer under it, written
    // over the Secret's data.
    let new_root = reissued_root(&root_key);
    let (issuer_crt, issuer_key) = sigil_pki::Authority::new_issuer(
        &new_root,
        &sigil_pki::PrivateKey::from_pem(root_key.as_bytes()).unwrap(),
        &params,
        now,
    )
    .unwrap();
    put_secret(
        &env.admin,
        &[
            ("ca.crt", &new_root[..]),
            ("issuer.crt", &issuer_crt[..]),
            ("issuer.key", &issuer_key[..]),
        ],
        None,
    )
    .await;
    let sigil = &env.sigil;
    eventually("the renewed CA swapped in", || {
        let served = sigil.state.current().anchors_pem().to_string();
        let new_root = new_root.clone();
        async move { served.as_bytes() == &new_root[..] }
    })
    .await;
    assert_eq!(sigil.metrics.ca_root_replacement_refused.get(), 0);

    // A certificate from the new issuer verifies against the old root, which every workload
    // still holds: the renewal breaks no one.
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let t = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let resp = ca_client(sigil)
        .await
        .sign_certificate(request("orders", &ns, &t))
        .await
        .expect("issued")
        .into_inner();
    let dir = tempfile::tempdir().unwrap();
    assert!(
        openssl_verifies(dir.path(), &resp.workload_certificate, &first.ca_crt),
        "the new chain does not verify against the old root"
    );
    // A root of another key would not (the control for the check above).
    assert!(!openssl_verifies(
        dir.path(),
        &resp.workload_certificate,
        &another_ca().ca_crt
    ));
    put_back(&env.admin, &saved).await;
    env.finish().await;
}
