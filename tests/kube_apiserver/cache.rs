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
