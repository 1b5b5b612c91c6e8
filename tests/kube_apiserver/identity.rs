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
