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
