//! Kubernetes mode against a fake Kubernetes API server (over HTTPS, with the real `kube`
//! client), for what a real one cannot be made to do on demand: answer 500, never answer,
//! confirm audiences the token does not have, hold two writers on one resourceVersion so that
//! exactly one gets a 409, delay reviews so that identical requests overlap. Everything else
//! in Kubernetes mode runs against a real kube-apiserver and etcd: `tests/kube_apiserver/`.

mod support;

use serde_json::json;
use sigil::server::RunningServer;
use support::*;
use tonic::Code;

/// A fake with Sentry's `daprsystem` Configuration (1 h workload certs) and Sigil running.
async fn env() -> (Fake, RunningServer) {
    let fake = Fake::start().await;
    fake.add_configuration(
        CP_NS,
        "daprsystem",
        json!({"mtls": {"enabled": true, "workloadCertTTL": "1h", "controlPlaneTrustDomain": "cluster.local"}}),
    );
    let server = start_sigil(&fake, &[]).await.unwrap();
    (fake, server)
}

async fn denied_with(
    server: &RunningServer,
    req: sigil_proto::SignCertificateRequest,
) -> tonic::Status {
    let err = ca_client(server)
        .await
        .sign_certificate(req)
        .await
        .expect_err("the request should have been refused");
    err
}

fn app_pod(fake: &Fake, ns: &str, pod: &str, sa: &str, app_id: &str) {
    fake.add_pod(ns, pod, sa, json!({"dapr.io/app-id": app_id}));
}

#[tokio::test]
async fn review_confirming_other_audiences_is_denied() {
    let (fake, server) = env().await;
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    fake.lie_about_audiences(Some(vec!["https://vault.example".into()]));
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    let err = denied_with(&server, request("orders", "shop", &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not meant for Sentry"), "{err:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_server_errors_are_unavailable() {
    let (fake, server) = env().await;
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    fake.fail_with(Some(500));
    let err = denied_with(&server, request("orders", "shop", &token)).await;
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // Failures are not cached: once the API server recovers, the same token works.
    fake.fail_with(None);
    ca_client(&server)
        .await
        .sign_certificate(request("orders", "shop", &token))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn api_server_that_never_answers_is_unavailable_within_the_call_timeout() {
    let fake = Fake::start().await;
    // --request-timeout 8s gives every API call 2 s: well before the request's deadline.
    let server = start_sigil(&fake, &["--request-timeout", "8s"])
        .await
        .unwrap();
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    fake.go_silent(true);
    let err = denied_with(&server, request("orders", "shop", &token)).await;
    // Our per-call deadline fired (UNAVAILABLE with its message), not the request deadline.
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("no answer from the API server"),
        "{err:?}"
    );
    assert_eq!(fake.count("POST tokenreviews"), 1);
    // Once it answers again, the same token works (the failure was not cached).
    fake.go_silent(false);
    ca_client(&server)
        .await
        .sign_certificate(request("orders", "shop", &token))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
}

// ---- the dapr-trust-bundle Secret: two replicas racing on one resourceVersion ---------

fn secret_bytes(secret: &serde_json::Value, key: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str().unwrap())
        .unwrap()
}

fn roots(pem: &[u8]) -> Vec<Vec<u8>> {
    sigil_pki::TrustBundle::from_pem(pem)
        .unwrap()
        .roots()
        .to_vec()
}

#[tokio::test]
async fn two_replicas_starting_on_an_empty_secret_share_one_ca() {
    let fake = Fake::start().await;
    // As Helm leaves them: both objects exist, empty.
    fake.put(
        &secrets(CP_NS),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "dapr-trust-bundle", "namespace": CP_NS}}),
    );
    fake.put(
        &configmaps(CP_NS),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "dapr-trust-bundle", "namespace": CP_NS}}),
    );
    // Both replicas' writes are held until both arrived, so they race on one resourceVersion.
    fake.gate_secret_writes(2);
    let (a, b) = tokio::join!(start_sigil(&fake, &[]), start_sigil(&fake, &[]));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(fake.count("PUT secrets 200"), 1, "exactly one write wins");
    assert_eq!(
        fake.count("PUT secrets 409"),
        1,
        "the other one gets a conflict"
    );
    let secret = fake.get(&secrets(CP_NS), "dapr-trust-bundle").unwrap();
    let ca = roots(&secret_bytes(&secret, "ca.crt"));
    assert_eq!(a.state.current().trust_bundle().roots().to_vec(), ca);
    assert_eq!(b.state.current().trust_bundle().roots().to_vec(), ca);
    assert_eq!(a.state.current_fingerprint(), b.state.current_fingerprint());
    let cm = fake.get(&configmaps(CP_NS), "dapr-trust-bundle").unwrap();
    assert_eq!(roots(cm["data"]["ca.crt"].as_str().unwrap().as_bytes()), ca);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn identical_requests_in_flight_share_one_token_review() {
    let fake = Fake::start().await;
    // No cache: only the sharing of a validation under way can save the API calls.
    let server = start_sigil(&fake, &["--token-cache-ttl", "0"])
        .await
        .unwrap();
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    fake.delay_reviews(Some(std::time::Duration::from_millis(500)));
    let client = ca_client(&server).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut c = client.clone();
        let t = token.clone();
        calls.spawn(async move { c.sign_certificate(request("orders", "shop", &t)).await });
    }
    while let Some(r) = calls.join_next().await {
        r.unwrap().expect("every retry gets its certificate");
    }
    assert_eq!(
        fake.count("POST tokenreviews"),
        1,
        "one review for 20 identical requests"
    );
    // A different request is not folded into another one's answer.
    let err = denied_with(&server, request("payments", "shop", &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(fake.count("POST tokenreviews"), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_api_server_silent_for_a_moment_at_start_is_waited_for() {
    let fake = Fake::start().await;
    fake.add_configuration(
        CP_NS,
        "daprsystem",
        json!({"mtls": {"enabled": true, "workloadCertTTL": "1h"}}),
    );
    // Silent for 3 s, longer than one call's 2 s deadline (--request-timeout 8s): the start
    // tries the Configuration again instead of giving up.
    fake.go_silent(true);
    let speak_later = async {
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        fake.go_silent(false);
    };
    let (server, ()) = tokio::join!(
        start_sigil(&fake, &["--request-timeout", "8s"]),
        speak_later
    );
    let server = server.expect("the start waits out a moment of silence");
    assert!(fake.count("GET configurations") >= 2, "tried again");
    server.shutdown().await.unwrap();
}
