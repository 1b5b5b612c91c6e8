use super::*;

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
async fn control_plane_identities_are_earned_by_the_annotated_pod_in_the_namespace() {
    let env = Env::new("cp", &["fake-operator"]).await;
    let ns = env.ns.clone();
    let run = rand_suffix();
    for sa in [
        "dapr-injector",
        "dapr-operator",
        "dapr-sentry",
        "dash",
        "impostor",
    ] {
        service_account(&env.admin, CP_NS, sa).await;
    }
    let issue_to = |pod: Pod, sa: &'static str| {
        let env = &env;
        async move {
            env.token_in(CP_NS, sa, &sentry_audience(), Some(&pod))
                .await
        }
    };

    // A real control-plane pod: dapr-injector, the control-plane trust domain, Dapr's DNS name
    // for the service, whatever the pod's own name.
    let injector = env
        .pod_in(
            CP_NS,
            &format!("dapr-sidecar-injector-{run}"),
            "dapr-injector",
            json!({"dapr.io/control-plane": "injector"}),
        )
        .await;
    let t = issue_to(injector, "dapr-injector").await;
    let (uris, dns) = env
        .issue(request("dapr-injector", CP_NS, &t))
        .await
        .expect("the injector's certificate");
    assert_eq!(
        uris,
        vec![format!("spiffe://cluster.local/ns/{CP_NS}/dapr-injector")]
    );
    assert_eq!(dns, vec![format!("dapr-sidecar-injector.{CP_NS}.svc")]);
    // The DNS names follow the verified annotation, not the id asked for.
    env.denied(
        "dapr-operator",
        CP_NS,
        &t,
        "the injector asking for the operator's id",
        "may ask for \"dapr-injector\"",
    )
    .await;

    // The annotation outside the control-plane namespace.
    let outside = env
        .pod(
            "fake-operator",
            "fake-operator",
            json!({"dapr.io/control-plane": "operator"}),
        )
        .await;
    let t = env
        .token("fake-operator", &sentry_audience(), Some(&outside))
        .await;
    env.denied(
        "dapr-operator",
        &ns,
        &t,
        "control-plane annotation outside the control-plane namespace",
        "outside the control-plane namespace",
    )
    .await;

    // Together with dapr.io/app-id.
    let both = env
        .pod_in(
            CP_NS,
            &format!("dapr-operator-{run}"),
            "dapr-operator",
            json!({"dapr.io/control-plane": "operator", "dapr.io/app-id": "dapr-operator"}),
        )
        .await;
    let t = issue_to(both, "dapr-operator").await;
    env.denied(
        "dapr-operator",
        CP_NS,
        &t,
        "control-plane and app-id annotations together",
        "must not also carry",
    )
    .await;

    // A service Dapr does not have.
    let dash = env
        .pod_in(
            CP_NS,
            &format!("dash-{run}"),
            "dash",
            json!({"dapr.io/control-plane": "dashboard"}),
        )
        .await;
    let t = issue_to(dash, "dash").await;
    env.denied(
        "dapr-dashboard",
        CP_NS,
        &t,
        "an unknown control-plane service",
        "not a Dapr control-plane service",
    )
    .await;

    // A control-plane app id by annotation, or by pod name, without the control-plane
    // annotation: an ordinary pod in the control-plane namespace cannot take it.
    let by_annotation = env
        .pod_in(
            CP_NS,
            &format!("impostor-{run}"),
            "impostor",
            json!({"dapr.io/app-id": "dapr-operator"}),
        )
        .await;
    let t = issue_to(by_annotation, "impostor").await;
    env.denied(
        "dapr-operator",
        CP_NS,
        &t,
        "dapr-operator by app-id annotation",
        "control-plane identity",
    )
    .await;
    // The pod name is the app id without annotations; a name left by an earlier run is
    // deleted first (at once: no kubelet confirms a graceful deletion).
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), CP_NS);
    let _ = pods
        .delete("dapr-placement", &DeleteParams::default().grace_period(0))
        .await;
    let mut by_name = None;
    for _ in 0..50 {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "dapr-placement", "namespace": CP_NS},
            "spec": {"serviceAccountName": "impostor", "nodeName": NODE,
                     "containers": [{"name": "app", "image": "registry.example/x:1"}]}
        }))
        .unwrap();
        match pods.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                by_name = Some(p);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let t = issue_to(by_name.expect("pod dapr-placement"), "impostor").await;
    env.denied(
        "dapr-placement",
        CP_NS,
        &t,
        "dapr-placement by pod name",
        "control-plane identity",
    )
    .await;

    // dapr-sentry is the CA's own identity: never issued, even to a pod annotated as Sentry.
    let sentry = env
        .pod_in(
            CP_NS,
            &format!("dapr-sentry-{run}"),
            "dapr-sentry",
            json!({"dapr.io/control-plane": "sentry"}),
        )
        .await;
    let t = issue_to(sentry, "dapr-sentry").await;
    env.denied(
        "dapr-sentry",
        CP_NS,
        &t,
        "the CA's own identity",
        "never issued",
    )
    .await;

    // Kubernetes mode enables only the kubernetes validator; UNKNOWN (0) means it.
    let worker = env
        .pod(
            "worker",
            "fake-operator",
            json!({"dapr.io/app-id": "worker"}),
        )
        .await;
    let t = env
        .token("fake-operator", &sentry_audience(), Some(&worker))
        .await;
    let mut insecure = request("worker", &ns, &t);
    insecure.token_validator = 1;
    let err = env.issue(insecure).await.expect_err("insecure validator");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut unknown = request("worker", &ns, &t);
    unknown.token_validator = 0;
    assert_eq!(
        env.issue(unknown).await.unwrap().0,
        vec![format!("spiffe://public/ns/{ns}/worker")]
    );
    env.finish().await;
}

/// Dapr's OID for the container-images extension.
const IMAGES_OID: &str = "1.3.6.1.4.1.57683.100.1";

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn the_answer_carries_the_chain_the_trust_bundle_and_the_pods_images() {
    let env = Env::new("answer", &["orders"]).await;
    let ns = env.ns.clone();
    configuration(
        &env.admin,
        &ssa(),
        &ns,
        "appconfig",
        json!({"accessControl": {"trustDomain": "shop.example", "defaultAction": "deny"}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-5d8f", "namespace": ns,
                     "annotations": {"dapr.io/app-id": "orders", "dapr.io/config": "appconfig"}},
        "spec": {"serviceAccountName": "orders", "nodeName": NODE, "containers": [
            {"name": "app", "image": "registry.example/shop/app:1.0"},
            {"name": "daprd", "image": "ghcr.io/dapr/daprd:1.15.0"},
        ]}
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    // What a kubelet would report once the app container has started (daprd has not yet).
    pods.patch_status(
        "orders-5d8f",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "containerStatuses": [{
                "name": "app", "image": "registry.example/shop/app:1.0",
                "imageID": "registry.example/shop/app@sha256:0123abcd",
                "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
            }]}}),
        ),
    )
    .await
    .expect("pod status");
    let t = env.token("orders", &sentry_audience(), Some(&pod)).await;
    let mut req = request("orders", &ns, &t);
    req.trust_domain = "ignored.example".into();
    let resp = ca_client(&env.sigil)
        .await
        .sign_certificate(req)
        .await
        .expect("issued")
        .into_inner();

    let pems: Vec<_> = x509_parser::pem::Pem::iter_from_buffer(&resp.workload_certificate)
        .map(|p| p.unwrap())
        .collect();
    assert_eq!(pems.len(), 2, "leaf and issuer; the root is left out");
    let leaf = pems[0].parse_x509().unwrap();
    // The request's trust domain is ignored; the pod's Configuration gives it.
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        names,
        vec![format!("URI(spiffe://shop.example/ns/{ns}/orders)")]
    );
    assert_eq!(
        resp.valid_until.as_ref().unwrap().seconds,
        leaf.validity().not_after.timestamp()
    );
    assert_eq!(
        resp.trust_chain_certificates,
        vec![env
            .sigil
            .state
            .current()
            .trust_bundle()
            .to_pem()
            .into_bytes()]
    );
    assert!(resp.jwt.is_none(), "no JWT asked for");

    // Dapr's container-images extension: a non-critical OCTET STRING of JSON, from the pod
    // as the API server has it.
    let ext = leaf
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == IMAGES_OID)
        .expect("the container-images extension");
    assert!(!ext.critical);
    let (_, json) =
        x509_parser::der_parser::der::parse_der_octetstring(ext.value).expect("OCTET STRING");
    let images: Value = serde_json::from_slice(json.as_slice().unwrap()).expect("JSON");
    assert_eq!(images[0]["role"], "app");
    assert_eq!(images[0]["containerName"], "app");
    assert_eq!(images[0]["image"], "registry.example/shop/app:1.0");
    assert_eq!(images[0]["digest"], "sha256:0123abcd");
    assert_eq!(images[1]["role"], "daprd");
    assert_eq!(images[1]["containerName"], "daprd");
    assert!(images[1].get("digest").is_none(), "not started: no digest");
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn jwks_callers_next_to_the_kubernetes_default_and_out_of_the_control_plane_namespace() {
    use sigil_pki::jose::testing::{token_with_kid, TestKey};
    use sigil_proto::TokenValidator;
    // daprsystem is shared: it gains a JWKS validator for this test alone.
    let _exclusive = TRUST_BUNDLE.write().await;
    let admin = admin_client(&statedir()).await;
    cluster_setup(&admin).await;
    let key = TestKey::ed25519();
    let jwks = json!({"keys": [key.jwk(Some("k"))]}).to_string();
    let mtls = json!({"enabled": true, "workloadCertTTL": "1h",
                      "controlPlaneTrustDomain": "cluster.local"});
    let mut with_jwks = mtls.clone();
    with_jwks["tokenValidators"] = json!([{"name": "jwks", "options": {"source": jwks}}]);
    configuration(
        &admin,
        &ssa(),
        CP_NS,
        "daprsystem",
        json!({"mtls": with_jwks}),
    )
    .await;
    let jwt_for = |id: &str, ns: &str, validator: TokenValidator| {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"sub": format!("spiffe://public/ns/{ns}/{id}"),
                            "aud": [sentry_audience()], "iat": now, "nbf": now,
                            "exp": now + 600, "iss": "test"});
        let mut r = request(id, ns, &token_with_kid(&key, "k", &claims));
        r.trust_domain = String::new();
        r.token_validator = validator as i32;
        r
    };

    let env = Env::build("jwks", &[], None, &[]).await;
    // A JWKS caller gets its identity outside the control-plane namespace...
    let (uris, _) = env
        .issue(jwt_for("orders", "shop", TokenValidator::Jwks))
        .await
        .expect("a JWKS caller in its namespace");
    assert_eq!(uris, ["spiffe://public/ns/shop/orders"]);
    // ...the default validator stays Kubernetes (the same JWT is a refused TokenReview)...
    let err = env
        .issue(jwt_for("orders", "shop", TokenValidator::Unknown))
        .await
        .expect_err("a JWKS token through the default validator");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // ...and nothing in the control-plane namespace.
    let err = env
        .issue(jwt_for("orders", CP_NS, TokenValidator::Jwks))
        .await
        .expect_err("a JWKS caller in the control-plane namespace");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    env.finish().await;

    // Unless configured to; Dapr's control-plane identities stay out of reach even then.
    let env = Env::build(
        "jwkscp",
        &[],
        None,
        &["--jwks-allow-control-plane-namespace"],
    )
    .await;
    let (uris, _) = env
        .issue(jwt_for("orders", CP_NS, TokenValidator::Jwks))
        .await
        .expect("allowed by --jwks-allow-control-plane-namespace");
    assert_eq!(uris, [format!("spiffe://public/ns/{CP_NS}/orders")]);
    for id in ["dapr-sentry", "dapr-operator", "dapr-placement"] {
        let err = env
            .issue(jwt_for(id, CP_NS, TokenValidator::Jwks))
            .await
            .expect_err(id);
        assert_eq!(err.code(), Code::PermissionDenied, "{id}: {err:?}");
    }
    env.finish().await;
    configuration(&admin, &ssa(), CP_NS, "daprsystem", json!({"mtls": mtls})).await;
}
