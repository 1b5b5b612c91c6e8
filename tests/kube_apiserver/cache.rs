use super::*;

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
    // requests in flight share one validation, and one that misses the cache just as the
    // first finishes finds its answer cached: one review per token.
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
    assert_eq!(reviews, PODS as u64, "one TokenReview per distinct token");
    assert_eq!(gets, PODS as u64, "one pod read per distinct token");
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn a_validated_token_is_cached_and_another_id_is_checked_anew() {
    let env = Env::new("cached", &["orders"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let t = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let first = env.sign("orders", &ns, &t).await.unwrap();
    let second = env.sign("orders", &ns, &t).await.unwrap();
    assert_eq!(first, second);
    // Counted by the API server (its audit log, this Sigil's credential only).
    assert_eq!(env.api_calls("create", "tokenreviews"), 1);
    assert_eq!(env.api_calls("get", "pods"), 1);
    assert_eq!(env.sigil.metrics.cache_hits.get(), 1);
    assert_eq!(env.sigil.metrics.cache_misses.get(), 1);
    // The same token asking for another id is another key: reviewed anew, and refused.
    env.denied("payments", &ns, &t, "another id", "app id mismatch")
        .await;
    assert_eq!(env.api_calls("create", "tokenreviews"), 2);
    env.finish().await;
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn with_no_cache_every_request_is_reviewed() {
    let env = Env::with_flags("nocache", &["orders"], &["--token-cache-ttl", "0"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let t = env.token("orders", &sentry_audience(), Some(&orders)).await;
    for _ in 0..3 {
        env.sign("orders", &ns, &t).await.unwrap();
    }
    assert_eq!(env.api_calls("create", "tokenreviews"), 3);
    assert_eq!(env.api_calls("get", "pods"), 3);
    assert_eq!(env.sigil.metrics.cache_hits.get(), 0);
    env.finish().await;
}

/// `token` with its claims changed by `edit` (the signature no longer matches: only a local
/// look at the token can refuse it without asking the API server).
fn with_claims(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut claims = jwt_claims(token);
    edit(&mut claims);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    parts.join(".")
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn requests_refused_by_a_local_look_cost_no_api_call() {
    let env = Env::new("precheck", &["orders"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let t = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = with_claims(&t, |c| c["exp"] = json!(now - 600));
    let no_audience = with_claims(&t, |c| {
        c.as_object_mut().unwrap().remove("aud");
    });
    for (id, token, why, reason) in [
        ("", t.as_str(), "empty app id", "app-id cannot be empty"),
        ("orders", "", "no token", "token is required"),
        ("orders", "not-a-jwt", "garbage", "not a JWT"),
        ("orders", &expired, "expired", "expired"),
        ("orders", &no_audience, "no audience", "audience"),
    ] {
        env.denied(id, &ns, token, why, reason).await;
    }
    assert_eq!(
        (
            env.api_calls("create", "tokenreviews"),
            env.api_calls("get", "pods")
        ),
        (0, 0),
        "no request reached the API server"
    );
    // The real token does reach it: the counts above could have moved.
    env.sign("orders", &ns, &t).await.unwrap();
    assert_eq!(env.api_calls("create", "tokenreviews"), 1);
    env.finish().await;
}
