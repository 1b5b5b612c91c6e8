use super::*;

/// Removes the JWT key and JWKS from the trust-bundle Secret (a run before may have left
/// them), keeping the CA material.
async fn drop_jwt_material(admin: &Client) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), CP_NS);
    let mut secret = secrets.get("dapr-trust-bundle").await.unwrap();
    if let Some(data) = secret.data.as_mut() {
        data.remove("jwt.key");
        data.remove("jwks.json");
    }
    secrets
        .replace("dapr-trust-bundle", &PostParams::default(), &secret)
        .await
        .expect("drop the JWT material");
}

/// The key ids of a stored JWKS document.
fn stored_kids(jwks: &[u8]) -> Vec<String> {
    sigil_pki::JwksDocument::parse(jwks)
        .expect("a stored JWKS")
        .kids()
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn jwt_keys_three_replicas_agree_and_a_new_key_is_published_before_it_signs() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use k8s_openapi::ByteString;
    let _exclusive = TRUST_BUNDLE.write().await;
    let statedir = statedir();
    let env = Env::exclusive("jwt", &["orders"]).await;
    let ns = env.ns.clone();
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    // No JWT key yet (a run before this one may have left one).
    drop_jwt_material(&env.admin).await;
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), CP_NS);

    // Three replicas start together with JWT-SVIDs on: one key wins, every replica uses it.
    let flags = [
        "--jwt-enabled",
        "--jwt-signing-algorithm=ES256",
        "--reload-interval=500ms",
        // Long enough to see the new key published while the old one still signs.
        "--jwt-key-publish-delay=8s",
    ];
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = tokio::join!(
        start_chart_sigil_with(&env.admin, &statedir, dir.path(), &flags),
        start_chart_sigil_with(&env.admin, &statedir, dir.path(), &flags),
        start_chart_sigil_with(&env.admin, &statedir, dir.path(), &flags),
    );
    let replicas = [&a, &b, &c];
    let kid = |r: &RunningServer| r.jwt.as_ref().unwrap().current().key.kid().to_string();
    let first = kid(&a);
    for r in replicas {
        assert_eq!(kid(r), first, "the replicas sign with different keys");
    }
    let stored = secrets
        .get("dapr-trust-bundle")
        .await
        .unwrap()
        .data
        .unwrap();
    assert!(stored.contains_key("jwt.key"), "the key is in the Secret");
    // A replica publishes its new key before it tries to store it, so a replica that lost
    // the race may leave its public key in the JWKS: never a key that signs unpublished.
    let kids_at_start = stored_kids(&stored["jwks.json"].0);
    assert!(kids_at_start.contains(&first), "{kids_at_start:?}");
    assert!(kids_at_start.len() <= 3, "{kids_at_start:?}");

    // A token signed by one replica names the key every replica publishes.
    let token = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let sign = |r| jwt_kid_of_a_signing(r, &ns, &token);
    assert_eq!(sign(&b).await, first);

    // A person writes a new key into the Secret: every replica publishes it first, keeps
    // signing with the old one for the publish delay, then signs with the new one; the old
    // key stays published for the tokens it signed.
    let second = sigil_pki::JwtSigningKey::generate(sigil_pki::jose::Algorithm::Es256).unwrap();
    let mut secret = secrets.get("dapr-trust-bundle").await.unwrap();
    secret.data.as_mut().unwrap().insert(
        "jwt.key".into(),
        ByteString(second.to_pem().as_bytes().to_vec()),
    );
    secrets
        .replace("dapr-trust-bundle", &PostParams::default(), &secret)
        .await
        .expect("write the new key");
    let t0 = std::time::Instant::now();
    let published = |r: &RunningServer| {
        r.jwt
            .as_ref()
            .unwrap()
            .current()
            .document
            .kids()
            .contains(&second.kid())
    };
    while !replicas.iter().all(|r| published(r)) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the new key is not published by every replica after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let to_published = t0.elapsed();
    for r in replicas {
        assert_eq!(sign(r).await, first, "published, not yet signing");
    }
    while !replicas.iter().all(|r| kid(r) == second.kid()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the new key does not sign on every replica after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let to_signing = t0.elapsed();
    assert_eq!(sign(&c).await, second.kid());
    let stored = secrets
        .get("dapr-trust-bundle")
        .await
        .unwrap()
        .data
        .unwrap();
    let kids_now = stored_kids(&stored["jwks.json"].0);
    assert!(
        kids_now.contains(&first) && kids_now.contains(&second.kid().to_string()),
        "the old key stays published next to the new one: {kids_now:?}"
    );
    // The public mirror follows.
    let cms: Api<ConfigMap> = Api::namespaced(env.admin.clone(), CP_NS);
    let cm = cms.get("dapr-trust-bundle").await.unwrap();
    let public = cm
        .data
        .and_then(|d| d.get("jwks.json").cloned())
        .expect("jwks.json in the ConfigMap");
    let public: Value = serde_json::from_str(&public).unwrap();
    let public_kids: BTreeSet<&str> = public["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(
        public_kids,
        kids_now.iter().map(String::as_str).collect(),
        "the ConfigMap's jwks.json is the Secret's"
    );
    println!(
        "FIGURES a new JWT key in the Secret: published by all 3 replicas in {to_published:?}, \
         signing on all 3 in {to_signing:?} (publish delay 8 s, reload interval 500 ms); \
         keys published after three replicas started together: {}",
        kids_at_start.len()
    );
    for r in [a, b, c] {
        r.shutdown().await.unwrap();
    }
    env.finish().await;
}

/// Signs a certificate for `orders` and returns the `kid` of the JWT-SVID that comes with it.
async fn jwt_kid_of_a_signing(server: &RunningServer, ns: &str, token: &str) -> String {
    let resp = ca_client(server)
        .await
        .sign_certificate(request("orders", ns, token))
        .await
        .expect("a certificate and its JWT")
        .into_inner();
    let jwt = resp.jwt.expect("a JWT-SVID with the certificate");
    let header = jwt.split('.').next().unwrap();
    let header =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap();
    let header: Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_string()
}

/// Verifies `token` with `jsonwebtoken` (a JOSE library we did not write) against `jwks`:
/// signature, exp/nbf, aud, iss.
fn verify(token: &str, jwks: &Value, audience: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    use jsonwebtoken::{decode, decode_header, jwk::JwkSet, DecodingKey, Validation};
    let set: JwkSet = serde_json::from_value(jwks.clone()).expect("a JWKS");
    let header = decode_header(token)?;
    let kid = header.kid.expect("kid in the header");
    let jwk = set.find(&kid).expect("the kid is published");
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["https://sentry.example"]);
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    Ok(decode::<Value>(token, &key, &validation)?.claims)
}

#[tokio::test]
#[ignore = "needs a control plane: SIGIL_KUBE_STATEDIR (conformance/kube/controlplane.sh)"]
async fn a_generated_jwt_key_stays_in_the_secret_and_tokens_verify_against_the_configmap() {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let _exclusive = TRUST_BUNDLE.write().await;
    let statedir = statedir();
    let env = Env::exclusive("jwtgen", &["orders"]).await;
    let ns = env.ns.clone();
    drop_jwt_material(&env.admin).await;
    let secrets: Api<Secret> = Api::namespaced(env.admin.clone(), CP_NS);
    let flags = [
        "--jwt-enabled",
        "--jwt-signing-algorithm=ES256",
        "--jwt-issuer=https://sentry.example",
    ];
    let dir = tempfile::tempdir().unwrap();
    let sigil = start_chart_sigil_with(&env.admin, &statedir, dir.path(), &flags).await;
    let signing = sigil.jwt.as_ref().unwrap().current().key.kid().to_string();

    let stored = secrets
        .get("dapr-trust-bundle")
        .await
        .unwrap()
        .data
        .unwrap();
    let key = stored["jwt.key"].0.clone();
    assert!(
        key.starts_with(b"-----BEGIN"),
        "a PEM private key in the Secret"
    );
    for k in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert!(stored.get(k).is_some_and(|v| !v.0.is_empty()), "{k} kept");
    }
    let cms: Api<ConfigMap> = Api::namespaced(env.admin.clone(), CP_NS);
    let cm = cms.get("dapr-trust-bundle").await.unwrap().data.unwrap();
    assert!(
        !cm.contains_key("jwt.key"),
        "no private key in the ConfigMap"
    );
    let public: Value = serde_json::from_str(&cm["jwks.json"]).expect("jwks.json mirrored");
    assert!(
        public.get("sigil_rotation").is_none(),
        "the ConfigMap holds a plain JWKS: {public}"
    );
    assert_eq!(public["keys"].as_array().unwrap().len(), 1, "{public}");
    assert_eq!(public["keys"][0]["kid"], signing.as_str());
    assert!(public["keys"][0].get("d").is_none(), "no private part");

    // A JWT-SVID verifies against the ConfigMap's JWKS, for its audience only.
    let orders = env
        .pod("orders-1", "orders", json!({"dapr.io/app-id": "orders"}))
        .await;
    let t = env.token("orders", &sentry_audience(), Some(&orders)).await;
    let mut req = request("orders", &ns, &t);
    req.jwt_audiences = vec!["api://orders".into()];
    let jwt = ca_client(&sigil)
        .await
        .sign_certificate(req)
        .await
        .expect("issued")
        .into_inner()
        .jwt
        .expect("a JWT-SVID");
    let claims = verify(&jwt, &public, "api://orders").expect("verifies");
    assert_eq!(claims["sub"], format!("spiffe://public/ns/{ns}/orders"));
    assert!(
        verify(&jwt, &public, "api://billing").is_err(),
        "another audience"
    );

    // A restart keeps the key: nothing new is generated.
    sigil.shutdown().await.unwrap();
    let again = start_chart_sigil_with(&env.admin, &statedir, dir.path(), &flags).await;
    assert_eq!(again.jwt.as_ref().unwrap().current().key.kid(), signing);
    let stored = secrets
        .get("dapr-trust-bundle")
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(stored["jwt.key"].0, key);
    again.shutdown().await.unwrap();

    // In kubernetes mode the JWT file names are Secret keys: a path is refused at start,
    // before anything is written.
    let t = chart_sigil_token(&env.admin).await;
    let mut with_path = flags.to_vec();
    with_path.push("--jwt-key-filename=keys/jwt.key");
    let err = try_start_sigil_as(&statedir, dir.path(), &t, &with_path)
        .await
        .err()
        .expect("a key name with a slash is refused")
        .to_string();
    assert!(err.contains("--jwt-key-filename"), "{err}");
    assert!(err.contains("[-._a-zA-Z0-9]+"), "{err}");
    assert_eq!(calls_with_token(&t, "update", "secrets"), 0);
    env.finish().await;
}
