use super::*;

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
        .map(|c| format!("{} {} -> {}", c.verb, c.resource, c.code))
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
                .any(|c| (c.verb.as_str(), c.resource.as_str()) == needed && c.code < 300),
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
                    let used = |c: &&ApiCall| {
                        c.verb == verb
                            && (c.resource == res || c.resource.starts_with(&format!("{res}/")))
                    };
                    if !requests.iter().any(|c| used(&c)) {
                        unused.insert(format!("{} {verb} {res}", obj["kind"].as_str().unwrap()));
                    }
                }
            }
        }
    }
    println!("FIGURES chart grants Sigil never used: {unused:#?}");
    // Nothing it tried was forbidden: the chart grants everything Sigil does.
    let forbidden: Vec<_> = requests.iter().filter(|c| c.code == 403).collect();
    assert!(
        forbidden.is_empty(),
        "Sigil needs grants the chart does not give: {forbidden:?}"
    );
}
