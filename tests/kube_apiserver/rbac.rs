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
        .map(|(verb, res, sub, code)| {
            let res = if sub.is_empty() {
                res.clone()
            } else {
                format!("{res}/{sub}")
            };
            format!("{verb} {res} -> {code}")
        })
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
                .any(|(v, r, _, c)| (v.as_str(), r.as_str()) == needed && *c < 300),
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
                    if !requests.iter().any(|(v, r, _, _)| v == verb && r == res) {
                        unused.insert(format!("{} {verb} {res}", obj["kind"].as_str().unwrap()));
                    }
                }
            }
        }
    }
    println!("FIGURES chart grants Sigil never used: {unused:#?}");
    // Nothing it tried was forbidden: the chart grants everything Sigil does.
    let forbidden: Vec<_> = requests.iter().filter(|r| r.3 == 403).collect();
    assert!(
        forbidden.is_empty(),
        "Sigil needs grants the chart does not give: {forbidden:?}"
    );
}
