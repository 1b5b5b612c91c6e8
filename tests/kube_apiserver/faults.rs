use super::*;

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
    let load = FaultLoad::start(&env.sigil, &ns, &cached, unreviewed).await;
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
    settled(&env.admin).await;
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
    async fn start(
        server: &RunningServer,
        ns: &str,
        cached: &str,
        unreviewed: Vec<String>,
    ) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let down = std::sync::Arc::new(AtomicBool::new(true));
        let mut tasks = tokio::task::JoinSet::new();
        // Sigil itself stays up: only its control plane fails.
        let client = ca_client(server).await;
        for worker in 0..2 {
            let (stop, down) = (stop.clone(), down.clone());
            let (ns, cached) = (ns.to_string(), cached.to_string());
            let unreviewed = unreviewed.clone();
            let mut client = client.clone();
            tasks.spawn(async move {
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
    let load = FaultLoad::start(&env.sigil, &ns, &cached, unreviewed).await;
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
    settled(&env.admin).await;
    env.finish().await;
}

/// Waits until the API server answers the reads every Sigil start makes (the Dapr
/// Configuration, served through its CRD, and the trust-bundle Secret) promptly, three times
/// in a row: after a fault it may still take seconds, and the tests after this one start
/// Sigils that give each call 2.5 s.
async fn settled(admin: &Client) {
    use k8s_openapi::api::core::v1::Secret;
    let configurations: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        CP_NS,
        &support::apiserver::configuration_resource(),
    );
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), CP_NS);
    let t0 = std::time::Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    let mut prompt = 0;
    while prompt < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the API server did not answer promptly again within 60 s of the fault"
        );
        let reads = async {
            configurations.get("daprsystem").await.is_ok()
                && secrets.get("dapr-trust-bundle").await.is_ok()
        };
        match tokio::time::timeout(Duration::from_millis(500), reads).await {
            Ok(true) => prompt += 1,
            _ => {
                prompt = 0;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    println!(
        "the API server answered promptly again {:?} after service resumed",
        t0.elapsed()
    );
}
