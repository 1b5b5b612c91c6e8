//! Kubernetes mode end to end: Sigil (`sigil::server::start`) against a fake Kubernetes API
//! server over HTTPS with the real `kube` client, called by a tonic client over TLS.

mod support;

use serde_json::json;
use sigil::server::RunningServer;
use sigil_proto::SignCertificateResponse;
use support::*;
use tonic::Code;
use x509_parser::extensions::GeneralName;

/// Dapr's OID for the container-images extension.
const IMAGES_OID: &str = "1.3.6.1.4.1.57683.100.1";

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

struct Leaf {
    uris: Vec<String>,
    dns: Vec<String>,
    not_before: i64,
    not_after: i64,
    images_json: Option<String>,
}

fn leaf(resp: &SignCertificateResponse) -> Leaf {
    let (_, pem) = x509_parser::pem::parse_x509_pem(&resp.workload_certificate).unwrap();
    let cert = pem.parse_x509().unwrap();
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                _ => {}
            }
        }
    }
    let images_json = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == IMAGES_OID)
        .map(|e| {
            // As Dapr: a non-critical extension whose value is a DER OCTET STRING of JSON.
            assert!(!e.critical);
            let v = e.value;
            assert_eq!(v[0], 0x04, "OCTET STRING");
            let (len, start) = if v[1] < 0x80 {
                (v[1] as usize, 2)
            } else {
                let n = (v[1] & 0x7f) as usize;
                (
                    v[2..2 + n].iter().fold(0usize, |a, b| a << 8 | *b as usize),
                    2 + n,
                )
            };
            String::from_utf8(v[start..start + len].to_vec()).unwrap()
        });
    Leaf {
        uris,
        dns,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        images_json,
    }
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
async fn issues_a_certificate_with_the_apps_configuration_trust_domain() {
    let (fake, server) = env().await;
    fake.add_pod(
        "shop",
        "orders-5d8f",
        "orders",
        json!({"dapr.io/app-id": "orders", "dapr.io/config": "appconfig"}),
    );
    fake.add_configuration(
        "shop",
        "appconfig",
        json!({"accessControl": {"trustDomain": "shop.example", "defaultAction": "deny"}}),
    );
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-5d8f"));
    let resp = ca_client(&server)
        .await
        .sign_certificate(request("orders", "shop", &token))
        .await
        .unwrap()
        .into_inner();

    let leaf = leaf(&resp);
    // The request's trust domain ("ignored.example") is ignored; the Configuration's is used.
    assert_eq!(leaf.uris, vec!["spiffe://shop.example/ns/shop/orders"]);
    assert!(leaf.dns.is_empty());
    assert_eq!(resp.valid_until.as_ref().unwrap().seconds, leaf.not_after);
    // workloadCertTTL 1h from the daprsystem Configuration read through the API server,
    // backdated by the default 15 min skew.
    assert_eq!(leaf.not_after - leaf.not_before, 3600 + 15 * 60);
    assert_eq!(resp.trust_chain_certificates.len(), 1);
    assert_eq!(
        resp.trust_chain_certificates[0],
        server.state.current().trust_bundle().to_pem().into_bytes()
    );
    // Leaf first, then the issuer (the root is left out).
    let pems = x509_parser::pem::Pem::iter_from_buffer(&resp.workload_certificate).count();
    assert_eq!(pems, 2);
    let images: serde_json::Value =
        serde_json::from_str(&leaf.images_json.expect("no container images extension")).unwrap();
    assert_eq!(images[0]["role"], "app");
    assert_eq!(images[0]["containerName"], "app");
    assert_eq!(images[0]["image"], "registry.example/shop/app:1.0");
    assert_eq!(images[0]["digest"], "sha256:0123abcd");
    assert_eq!(images[1]["role"], "daprd");
    assert_eq!(images[1]["containerName"], "daprd");
    assert!(images[1].get("digest").is_none(), "not started: no digest");
    assert!(resp.jwt.is_none());
    assert_eq!(fake.count("POST tokenreviews"), 1);
    assert_eq!(fake.count("GET pods"), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn pod_name_is_the_id_and_public_the_trust_domain_without_annotations() {
    let (fake, server) = env().await;
    fake.add_pod("shop", "worker", "default", json!({}));
    let token = fake.token(&TokenSpec::for_pod("shop", "default", "worker"));
    let mut req = request("worker", "shop", &token);
    req.token_validator = 0; // UNKNOWN: the default validator, kubernetes in this mode
    let resp = ca_client(&server)
        .await
        .sign_certificate(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leaf(&resp).uris, vec!["spiffe://public/ns/shop/worker"]);
    // Other validators are not enabled in kubernetes mode.
    let mut insecure = request("worker", "shop", &token);
    insecure.token_validator = 1;
    assert_eq!(
        denied_with(&server, insecure).await.code(),
        Code::InvalidArgument
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn token_of_a_missing_pod_is_denied() {
    let (fake, server) = env().await;
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "ghost"));
    let err = denied_with(&server, request("ghost", "shop", &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("does not exist"), "{err:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn pod_running_as_another_service_account_is_denied() {
    let (fake, server) = env().await;
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    // A token of service account "billing" naming the orders pod.
    let token = fake.token(&TokenSpec::for_pod("shop", "billing", "orders-1"));
    let err = denied_with(&server, request("orders", "shop", &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("service account"), "{err:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_for_another_namespace_is_denied() {
    let (fake, server) = env().await;
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    app_pod(&fake, "billing", "orders-1", "orders", "orders");
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    let err = denied_with(&server, request("orders", "billing", &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("namespace mismatch"), "{err:?}");
    assert_eq!(fake.count("GET pods"), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn app_id_mismatch_is_denied() {
    let (fake, server) = env().await;
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    let err = denied_with(&server, request("payments", "shop", &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("app id mismatch"), "{err:?}");
    // The pod name is not a fallback when the app-id annotation is set.
    let err = denied_with(&server, request("orders-1", "shop", &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn control_plane_identity_rules() {
    let (fake, server) = env().await;
    // A real control-plane pod: dapr-injector, control-plane trust domain, Dapr's DNS name.
    fake.add_pod(
        CP_NS,
        "dapr-sidecar-injector-0",
        "dapr-injector",
        json!({"dapr.io/control-plane": "injector"}),
    );
    let token = fake.token(&TokenSpec::for_pod(
        CP_NS,
        "dapr-injector",
        "dapr-sidecar-injector-0",
    ));
    let resp = ca_client(&server)
        .await
        .sign_certificate(request("dapr-injector", CP_NS, &token))
        .await
        .unwrap()
        .into_inner();
    let l = leaf(&resp);
    assert_eq!(
        l.uris,
        vec![format!("spiffe://cluster.local/ns/{CP_NS}/dapr-injector")]
    );
    assert_eq!(l.dns, vec![format!("dapr-sidecar-injector.{CP_NS}.svc")]);

    // The annotation outside the control-plane namespace.
    fake.add_pod(
        "shop",
        "fake-operator",
        "default",
        json!({"dapr.io/control-plane": "operator"}),
    );
    let token = fake.token(&TokenSpec::for_pod("shop", "default", "fake-operator"));
    let err = denied_with(&server, request("dapr-operator", "shop", &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("outside the control-plane namespace"),
        "{err:?}"
    );

    // Together with dapr.io/app-id.
    fake.add_pod(
        CP_NS,
        "dapr-operator-0",
        "dapr-operator",
        json!({"dapr.io/control-plane": "operator", "dapr.io/app-id": "dapr-operator"}),
    );
    let token = fake.token(&TokenSpec::for_pod(
        CP_NS,
        "dapr-operator",
        "dapr-operator-0",
    ));
    let err = denied_with(&server, request("dapr-operator", CP_NS, &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("must not also carry"), "{err:?}");

    // A service Dapr does not have.
    fake.add_pod(
        CP_NS,
        "dash-0",
        "dash",
        json!({"dapr.io/control-plane": "dashboard"}),
    );
    let token = fake.token(&TokenSpec::for_pod(CP_NS, "dash", "dash-0"));
    let err = denied_with(&server, request("dapr-dashboard", CP_NS, &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("not a Dapr control-plane service"),
        "{err:?}"
    );

    // A control-plane app id by annotation or pod name, without the control-plane
    // annotation: an ordinary pod in the control-plane namespace cannot take it (nor its
    // DNS names).
    fake.add_pod(
        CP_NS,
        "impostor-0",
        "impostor",
        json!({"dapr.io/app-id": "dapr-operator"}),
    );
    let token = fake.token(&TokenSpec::for_pod(CP_NS, "impostor", "impostor-0"));
    let err = denied_with(&server, request("dapr-operator", CP_NS, &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("control-plane identity"), "{err:?}");
    fake.add_pod(CP_NS, "dapr-placement", "impostor", json!({}));
    let token = fake.token(&TokenSpec::for_pod(CP_NS, "impostor", "dapr-placement"));
    let err = denied_with(&server, request("dapr-placement", CP_NS, &token)).await;
    assert!(err.message().contains("control-plane identity"), "{err:?}");

    // dapr-sentry is the CA's own identity: never issued, even to a pod annotated as Sentry.
    fake.add_pod(
        CP_NS,
        "dapr-sentry-0",
        "dapr-sentry",
        json!({"dapr.io/control-plane": "sentry"}),
    );
    let token = fake.token(&TokenSpec::for_pod(CP_NS, "dapr-sentry", "dapr-sentry-0"));
    let err = denied_with(&server, request("dapr-sentry", CP_NS, &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("never issued"), "{err:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn token_of_an_earlier_pod_with_the_same_name_is_denied() {
    let (fake, server) = env().await;
    app_pod(&fake, "shop", "orders-0", "orders", "orders");
    let mut spec = TokenSpec::for_pod("shop", "orders", "orders-0");
    spec.pod_uid = Some("uid-of-a-deleted-pod".into());
    let token = fake.token(&spec);
    let err = denied_with(&server, request("orders", "shop", &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("UID"), "{err:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn expired_token_is_denied() {
    let (fake, server) = env().await;
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    let mut spec = TokenSpec::for_pod("shop", "orders", "orders-1");
    spec.expires_in = -60;
    let err = denied_with(&server, request("orders", "shop", &fake.token(&spec))).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("expired"), "{err:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn token_for_another_audience_is_denied() {
    let (fake, server) = env().await;
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    let mut spec = TokenSpec::for_pod("shop", "orders", "orders-1");
    spec.audiences = vec!["https://kubernetes.default.svc.cluster.local".into()];
    let err = denied_with(&server, request("orders", "shop", &fake.token(&spec))).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("audiences"), "{err:?}");

    // Dapr's legacy audience is still accepted.
    spec.audiences = vec!["dapr.io/sentry".into()];
    ca_client(&server)
        .await
        .sign_certificate(request("orders", "shop", &fake.token(&spec)))
        .await
        .unwrap();
    server.shutdown().await.unwrap();
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
async fn api_server_down_is_unavailable() {
    let (fake, server) = env().await;
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    fake.stop();
    let err = denied_with(&server, request("orders", "shop", &token)).await;
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
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

#[tokio::test]
async fn successful_validation_is_cached() {
    let (fake, server) = env().await;
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    let mut client = ca_client(&server).await;
    let first = client
        .sign_certificate(request("orders", "shop", &token))
        .await
        .unwrap()
        .into_inner();
    let second = client
        .sign_certificate(request("orders", "shop", &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leaf(&first).uris, leaf(&second).uris);
    assert_ne!(first.workload_certificate, second.workload_certificate);
    assert_eq!(fake.count("POST tokenreviews"), 1);
    assert_eq!(fake.count("GET pods"), 1);
    assert_eq!(server.metrics.cache_hits.get(), 1);
    assert_eq!(server.metrics.cache_misses.get(), 1);

    // The same token asking for another id is a different key, checked (and refused) anew.
    let err = client
        .sign_certificate(request("payments", "shop", &token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(fake.count("POST tokenreviews"), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn zero_cache_ttl_asks_the_api_server_every_time() {
    let fake = Fake::start().await;
    let server = start_sigil(&fake, &["--token-cache-ttl", "0"])
        .await
        .unwrap();
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    let mut client = ca_client(&server).await;
    for _ in 0..2 {
        client
            .sign_certificate(request("orders", "shop", &token))
            .await
            .unwrap();
    }
    assert_eq!(fake.count("POST tokenreviews"), 2);
    assert_eq!(server.metrics.cache_hits.get(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn common_checks_come_first_and_cost_no_api_call() {
    let (fake, server) = env().await;
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    let err = denied_with(&server, request("", "shop", &token)).await;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "invalid request: parameter app-id cannot be empty"
    );
    let err = denied_with(&server, request("orders", "shop", "")).await;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("token is required"), "{err:?}");
    // Garbage is refused by the local look at the token, before any TokenReview.
    let err = denied_with(&server, request("orders", "shop", "not-a-jwt")).await;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("not a JWT"), "{err:?}");
    // So are a well-formed token that expired (past the leeway) and one with no audience.
    let expired = fake.token(&TokenSpec {
        expires_in: -600,
        ..TokenSpec::for_pod("shop", "orders", "orders-1")
    });
    let err = denied_with(&server, request("orders", "shop", &expired)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let no_audience = fake.token(&TokenSpec {
        audiences: vec![],
        ..TokenSpec::for_pod("shop", "orders", "orders-1")
    });
    let err = denied_with(&server, request("orders", "shop", &no_audience)).await;
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        fake.count("POST tokenreviews"),
        0,
        "no request reached the API server"
    );
    // A well-formed, current token does reach it: the count above could have moved.
    let _ = ca_client(&server)
        .await
        .sign_certificate(request("orders", "shop", &token))
        .await;
    assert_eq!(
        fake.count("POST tokenreviews"),
        1,
        "a valid token is reviewed"
    );
    server.shutdown().await.unwrap();
}

// ---- the dapr-trust-bundle Secret and ConfigMap ----------------------------------------

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
async fn first_start_creates_the_secret_and_configmap() {
    // Nothing exists: no Secret, no ConfigMap, no daprsystem Configuration (defaults).
    let fake = Fake::start().await;
    let server = start_sigil(&fake, &[]).await.unwrap();
    let secret = fake
        .get(&secrets(CP_NS), "dapr-trust-bundle")
        .expect("Secret created");
    let cm = fake
        .get(&configmaps(CP_NS), "dapr-trust-bundle")
        .expect("ConfigMap created");
    let ca = secret_bytes(&secret, "ca.crt");
    assert!(!secret_bytes(&secret, "issuer.crt").is_empty());
    assert!(secret_bytes(&secret, "issuer.key").starts_with(b"-----BEGIN"));
    assert_eq!(cm["data"]["ca.crt"].as_str().unwrap().as_bytes(), &ca[..]);
    assert!(cm["data"].get("issuer.key").is_none());
    assert_eq!(
        roots(&ca),
        server.state.current().trust_bundle().roots().to_vec()
    );
    // Defaults when the Configuration is missing: control-plane trust domain cluster.local.
    assert_eq!(
        server.serving.current().key.cert.len(),
        2,
        "serving chain is leaf + issuer"
    );
    let subj = &server.state.current().trust_bundle().subjects()[0];
    assert!(subj.contains("cluster.local"), "{subj}");
    assert_eq!(fake.count("POST secrets 201"), 1);
    assert_eq!(fake.count("POST configmaps 201"), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn configmap_is_resynced_from_the_secret_never_the_reverse() {
    let fake = Fake::start().await;
    let now = time::OffsetDateTime::now_utc();
    let params = sigil_pki::CaParams::new("cluster.local".parse().unwrap(), CP_NS.parse().unwrap());
    let users_ca = sigil_pki::Authority::generate(&params, now).unwrap();
    let other_ca = sigil_pki::Authority::generate(&params, now).unwrap();
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    fake.put(
        &secrets(CP_NS),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "dapr-trust-bundle", "namespace": CP_NS},
            "data": {
                "ca.crt": b64(&users_ca.ca_crt),
                "issuer.crt": b64(&users_ca.issuer_crt),
                "issuer.key": b64(&users_ca.issuer_key),
                "jwks.json": b64(b"{}")
            }
        }),
    );
    fake.put(
        &configmaps(CP_NS),
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "dapr-trust-bundle", "namespace": CP_NS},
            "data": {"ca.crt": String::from_utf8(other_ca.ca_crt.clone()).unwrap(), "jwks.json": "{}"}
        }),
    );
    let secret_before = fake.get(&secrets(CP_NS), "dapr-trust-bundle").unwrap();

    let server = start_sigil(&fake, &[]).await.unwrap();
    assert_eq!(
        roots(&users_ca.ca_crt),
        server.state.current().trust_bundle().roots().to_vec()
    );
    let secret_after = fake.get(&secrets(CP_NS), "dapr-trust-bundle").unwrap();
    assert_eq!(secret_before, secret_after, "the Secret was modified");
    let cm = fake.get(&configmaps(CP_NS), "dapr-trust-bundle").unwrap();
    assert_eq!(
        cm["data"]["ca.crt"].as_str().unwrap().as_bytes(),
        &users_ca.ca_crt[..]
    );
    assert_eq!(
        cm["data"]["jwks.json"], "{}",
        "other keys of the ConfigMap are kept"
    );
    assert_eq!(fake.count("PUT configmaps 200"), 1);
    assert_eq!(fake.count("PUT secrets"), 0);
    assert_eq!(fake.count("POST secrets"), 0);
    server.shutdown().await.unwrap();
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
async fn partially_filled_secret_stops_the_start() {
    let fake = Fake::start().await;
    fake.put(
        &secrets(CP_NS),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "dapr-trust-bundle", "namespace": CP_NS},
               "data": {"ca.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="}}),
    );
    let err = start_sigil(&fake, &[])
        .await
        .err()
        .expect("start should fail")
        .to_string();
    assert!(err.contains("only part of the CA material"), "{err}");
    assert!(err.contains("issuer.key"), "{err}");
    assert_eq!(fake.count("PUT secrets"), 0);
    assert_eq!(fake.count("POST secrets"), 0);
}

#[tokio::test]
async fn rotated_secret_is_served_and_copied_to_the_configmap() {
    let fake = Fake::start().await;
    let server = start_sigil(&fake, &["--reload-interval", "50ms"])
        .await
        .unwrap();
    let mut generation = server.state.subscribe();
    let params = sigil_pki::CaParams::new("cluster.local".parse().unwrap(), CP_NS.parse().unwrap());
    let mut rotated =
        sigil_pki::Authority::generate(&params, time::OffsetDateTime::now_utc()).unwrap();
    // A root rotation: the new root next to the one in force (an unrelated root alone is
    // refused by the watcher; see the test below).
    rotated.ca_crt = [
        &rotated.ca_crt[..],
        server.state.current().anchors_pem().as_bytes(),
    ]
    .concat();
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    fake.put(
        &secrets(CP_NS),
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "dapr-trust-bundle", "namespace": CP_NS},
            "data": {
                "ca.crt": b64(&rotated.ca_crt),
                "issuer.crt": b64(&rotated.issuer_crt),
                "issuer.key": b64(&rotated.issuer_key)
            }
        }),
    );
    // Bounded wait for the watcher (a safety valve, not a timing assertion).
    tokio::time::timeout(std::time::Duration::from_secs(60), generation.changed())
        .await
        .expect("the rotated CA was not loaded")
        .unwrap();
    assert_eq!(
        roots(&rotated.ca_crt),
        server.state.current().trust_bundle().roots().to_vec()
    );
    let cm = fake.get(&configmaps(CP_NS), "dapr-trust-bundle").unwrap();
    assert_eq!(
        cm["data"]["ca.crt"].as_str().unwrap().as_bytes(),
        &rotated.ca_crt[..]
    );
    server.shutdown().await.unwrap();
}

// ---- the CA is never lost or silently replaced ------------------------------------------

fn empty_secret(annotations: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {"name": "dapr-trust-bundle", "namespace": CP_NS, "annotations": annotations}})
}

/// Polls `done` every 50 ms for at most 60 s (a safety valve, not a timing assertion).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_emptied_secret_is_put_back_while_serving_and_refused_at_start() {
    let fake = Fake::start().await;
    let server = start_sigil(&fake, &["--reload-interval", "50ms"])
        .await
        .unwrap();
    let anchors = server.state.current().anchors_pem().to_string();
    let secret = fake.get(&secrets(CP_NS), "dapr-trust-bundle").unwrap();
    let marker = secret["metadata"]["annotations"]["sigil.dev/ca-stored"]
        .as_str()
        .expect("Sigil marks the Secret it stores a CA in");
    assert!(marker.starts_with("sha256:"), "{marker}");

    // `helm upgrade --force`: the Secret is replaced by the chart's empty one. The running
    // replica writes the CA in force back; nothing is generated.
    fake.put(&secrets(CP_NS), empty_secret(json!({})));
    eventually("the CA written back", || {
        fake.get(&secrets(CP_NS), "dapr-trust-bundle")
            .map(|s| s["data"]["ca.crt"].is_string())
            .unwrap_or(false)
    })
    .await;
    let secret = fake.get(&secrets(CP_NS), "dapr-trust-bundle").unwrap();
    assert_eq!(secret_bytes(&secret, "ca.crt"), anchors.as_bytes());
    assert_eq!(server.metrics.ca_material_lost.get(), 1);
    assert_eq!(server.state.current().anchors_pem(), anchors);
    server.shutdown().await.unwrap();

    // Emptied again with no replica running: the ConfigMap still holds the anchors, so a
    // start refuses instead of making a new root, and writes nothing. (A write the stopped
    // replica's last poll had already sent may still land: empty again until it stays so.)
    for _ in 0..20 {
        fake.put(&secrets(CP_NS), empty_secret(json!({})));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let secret = fake.get(&secrets(CP_NS), "dapr-trust-bundle").unwrap();
        if secret.get("data").is_none_or(|d| d.get("ca.crt").is_none()) {
            break;
        }
    }
    let err = start_sigil(&fake, &[])
        .await
        .err()
        .expect("start must fail")
        .to_string();
    assert!(err.contains("held CA material before"), "{err}");
    assert!(
        err.contains("ConfigMap") && err.contains("To restore"),
        "{err}"
    );
    let secret = fake.get(&secrets(CP_NS), "dapr-trust-bundle").unwrap();
    assert!(secret.get("data").is_none_or(|d| d.get("ca.crt").is_none()));

    // The ConfigMap emptied too, but the Secret kept Sigil's annotation (an edit that dropped
    // the data): still refused.
    fake.put(
        &configmaps(CP_NS),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "dapr-trust-bundle", "namespace": CP_NS}, "data": {}}),
    );
    fake.put(
        &secrets(CP_NS),
        empty_secret(json!({"sigil.dev/ca-stored": marker})),
    );
    let err = start_sigil(&fake, &[])
        .await
        .err()
        .expect("start must fail")
        .to_string();
    assert!(err.contains("annotation sigil.dev/ca-stored"), "{err}");

    // Starting over on purpose, as the error explains: no annotation, no anchors left.
    fake.put(&secrets(CP_NS), empty_secret(json!({})));
    let fresh = start_sigil(&fake, &[]).await.unwrap();
    assert_ne!(fresh.state.current().anchors_pem(), anchors);
    fresh.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unrelated_root_is_not_swapped_in_while_serving() {
    let fake = Fake::start().await;
    let server = start_sigil(&fake, &["--reload-interval", "50ms"])
        .await
        .unwrap();
    let anchors = server.state.current().anchors_pem().to_string();
    let params = sigil_pki::CaParams::new("cluster.local".parse().unwrap(), CP_NS.parse().unwrap());
    let stranger =
        sigil_pki::Authority::generate(&params, time::OffsetDateTime::now_utc()).unwrap();
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    fake.put(
        &secrets(CP_NS),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": "dapr-trust-bundle", "namespace": CP_NS},
               "data": {"ca.crt": b64(&stranger.ca_crt), "issuer.crt": b64(&stranger.issuer_crt),
                        "issuer.key": b64(&stranger.issuer_key)}}),
    );
    let metrics = server.metrics.clone();
    eventually("the refusal counted", || {
        metrics.ca_root_replacement_refused.get() == 1
    })
    .await;
    assert_eq!(server.state.current().anchors_pem(), anchors);
    // Still signing with the CA in force.
    let mut client = ca_client(&server).await;
    app_pod(&fake, "shop", "orders-1", "orders", "orders");
    let token = fake.token(&TokenSpec::for_pod("shop", "orders", "orders-1"));
    let resp = client
        .sign_certificate(request("orders", "shop", &token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.trust_chain_certificates[0], anchors.as_bytes());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_configmap_sigil_may_not_write_is_a_warning_not_a_failed_start() {
    let fake = Fake::start().await;
    fake.forbid("POST configmaps");
    fake.forbid("PUT configmaps");
    let server = start_sigil(&fake, &[]).await.unwrap();
    assert!(server.metrics.trust_bundle_mirror_failures.get() >= 1);
    assert!(fake.get(&configmaps(CP_NS), "dapr-trust-bundle").is_none());
    // The CA is in the Secret and serving.
    let secret = fake.get(&secrets(CP_NS), "dapr-trust-bundle").unwrap();
    assert_eq!(
        secret_bytes(&secret, "ca.crt"),
        server.state.current().anchors_pem().as_bytes()
    );
    server.shutdown().await.unwrap();
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
