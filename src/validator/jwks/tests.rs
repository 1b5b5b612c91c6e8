use super::*;
use serde_json::json;
use sigil_pki::jose::testing::{token, TestKey};
use sigil_pki::ManualClock;
use time::OffsetDateTime;

const AUD: &str = "spiffe://localhost/ns/default/dapr-sentry";
const NOW: i64 = 1_800_000_000;

fn doc(keys: serde_json::Value) -> Vec<u8> {
    json!({ "keys": keys }).to_string().into_bytes()
}

fn spec(options: &[(&str, &str)]) -> TokenValidatorSpec {
    TokenValidatorSpec {
        name: "jwks".into(),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), serde_yaml::Value::String(v.to_string())))
            .collect(),
    }
}

#[test]
fn options_are_validated() {
    let err = |o: &[(&str, &str)]| JwksOptions::from_spec(&spec(o)).unwrap_err().to_string();
    assert!(err(&[]).contains("\"source\" is required"));
    assert!(err(&[("source", " ")]).contains("\"source\" is required"));
    assert!(err(&[("source", "http://example.invalid/jwks")]).contains("https"));
    assert!(err(&[("source", "HTTP://example.invalid/jwks")]).contains("https"));
    assert!(err(&[("source", "https://u:p@example.invalid/jwks")]).contains("credentials"));
    assert!(err(&[("source", "/x"), ("sauce", "y")]).contains("unknown option \"sauce\""));
    assert!(err(&[("source", "/x"), ("requestTimeout", "10")]).contains("requestTimeout"));
    assert!(err(&[("source", "/x"), ("requestTimeout", "0")]).contains("positive"));
    assert!(err(&[("source", "{\"keys\": 1}")]).contains("inline source"));
    assert!(err(&[
        ("source", "/x"),
        ("caCertificate", "-----BEGIN CERTIFICATE-----\nnope")
    ])
    .contains("caCertificate"));
    assert!(
        err(&[("source", "/x"), ("caCertificate", "/nonexistent/ca.pem")])
            .contains("caCertificate")
    );
    let mut s = spec(&[("source", "/x")]);
    s.options.insert(
        "minRefreshInterval".into(),
        serde_yaml::Value::Number(5.into()),
    );
    assert!(JwksOptions::from_spec(&s)
        .unwrap_err()
        .to_string()
        .contains("must be a string"));

    let o = JwksOptions::from_spec(&spec(&[("source", "/etc/jwks.json")])).unwrap();
    assert!(matches!(&o.source, SourceSpec::File(p) if p == Path::new("/etc/jwks.json")));
    assert_eq!(o.min_refresh_interval, DEFAULT_MIN_REFRESH_INTERVAL);
    assert_eq!(o.request_timeout, DEFAULT_REQUEST_TIMEOUT);

    let inline = String::from_utf8(doc(json!([TestKey::ed25519().jwk(Some("a"))]))).unwrap();
    let o = JwksOptions::from_spec(&spec(&[
        ("source", &inline),
        ("minRefreshInterval", "1m"),
        ("requestTimeout", "5s"),
    ]))
    .unwrap();
    assert!(matches!(&o.source, SourceSpec::Inline(s) if s.keys.len() == 1));
    assert_eq!(o.min_refresh_interval, Duration::from_secs(60));
    let floored =
        JwksOptions::from_spec(&spec(&[("source", "/x"), ("minRefreshInterval", "0s")])).unwrap();
    assert_eq!(floored.min_refresh_interval, MIN_REFRESH_FLOOR);
    assert_eq!(o.request_timeout, Duration::from_secs(5));
    let b64 = STANDARD.encode(&inline);
    let o = JwksOptions::from_spec(&spec(&[("source", &b64)])).unwrap();
    assert!(matches!(&o.source, SourceSpec::Inline(s) if s.keys.len() == 1));

    let o =
        JwksOptions::from_spec(&spec(&[("source", "https://127.0.0.1:8443/keys?x=1")])).unwrap();
    assert!(matches!(&o.source, SourceSpec::Https(u) if u.port_u16() == Some(8443)));
}

fn claims(token: &str) -> Claims {
    Claims {
        id: "app".into(),
        token: token.into(),
        trust_domain: String::new(),
        namespace: "default".into(),
        csr_present: true,
    }
}

fn payload(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "aud": AUD, "iat": NOW, "exp": NOW + 600})
}

fn file_validator(path: &Path, clock: Arc<ManualClock>) -> JwksValidator {
    let o = JwksOptions::from_spec(&spec(&[("source", path.to_str().unwrap())])).unwrap();
    JwksValidator::new(&o, AUD.into(), clock).unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        OffsetDateTime::from_unix_timestamp(NOW).unwrap(),
    ))
}

#[tokio::test]
async fn validator_checks_in_daprs_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let key = TestKey::rsa();
    let v = file_validator(&path, clock());
    assert_eq!(v.kind(), ValidatorKind::Jwks);

    let good = token(
        &key,
        &json!({"alg": "RS256", "kid": "k1"}),
        &payload("spiffe://public/ns/default/app"),
    );
    // Token missing comes first, before the keys are even looked at.
    let e = v.validate(&claims("")).await.unwrap_err();
    assert!(
        matches!(&e, Error::Denied(m) if m == "the request does not contain a token"),
        "{e}"
    );
    // No keys yet: UNAVAILABLE.
    let e = v.validate(&claims(&good)).await.unwrap_err();
    assert!(
        matches!(&e, Error::Unavailable(m) if !m.contains("jwks.json")),
        "no file path in what callers see: {e}"
    );

    std::fs::write(&path, doc(json!([key.jwk(Some("k1"))]))).unwrap();
    let id = v.validate(&claims(&good)).await.unwrap();
    assert_eq!(id.trust_domain.as_str(), "public");
    assert_eq!(id.namespace.as_str(), "default");
    assert_eq!(id.app_id.as_str(), "app");
    assert!(
        id.authenticated_as.contains("kid k1"),
        "{}",
        id.authenticated_as
    );

    // Common checks before the signature.
    let mut c = claims("not-a-jwt");
    c.id = "a.b".into();
    let e = v.validate(&c).await.unwrap_err().to_string();
    assert_eq!(e, "invalid request: parameter app-id cannot contain dots");
    let e = v.validate(&claims("not-a-jwt")).await.unwrap_err();
    assert!(
        matches!(&e, Error::Denied(m) if m.starts_with("token validation failed: ")),
        "{e}"
    );

    // The subject follows the requested trust domain.
    let mut c = claims(&good);
    c.trust_domain = "example.org".into();
    let e = v.validate(&c).await.unwrap_err().to_string();
    assert!(
        e.contains("does not match") && e.contains("spiffe://example.org/ns/default/app"),
        "{e}"
    );
    let t = token(
        &key,
        &json!({"alg": "RS256", "kid": "k1"}),
        &payload("spiffe://example.org/ns/default/app"),
    );
    c.token = t;
    assert_eq!(
        v.validate(&c).await.unwrap().trust_domain.as_str(),
        "example.org"
    );
    // Another app's token does not get this app's identity.
    let mut c = claims(&good);
    c.id = "other".into();
    assert!(v
        .validate(&c)
        .await
        .unwrap_err()
        .to_string()
        .contains("does not match"));
}

#[tokio::test]
async fn file_rotation_is_picked_up_and_bad_files_keep_last_good_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let old = TestKey::p256();
    let new = TestKey::ed25519();
    let sub = "spiffe://public/ns/default/app";
    let old_token = token(&old, &json!({"alg": "ES256", "kid": "old"}), &payload(sub));
    let new_token = token(&new, &json!({"alg": "EdDSA", "kid": "new"}), &payload(sub));
    std::fs::write(&path, doc(json!([old.jwk(Some("old"))]))).unwrap();
    let clock = clock();
    let v = file_validator(&path, clock.clone());
    v.validate(&claims(&old_token)).await.unwrap();
    let e = v
        .validate(&claims(&new_token))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no key with kid \"new\""), "{e}");

    // Rotation by atomic replace (new inode), as config management tools do.
    let tmp = dir.path().join("jwks.json.tmp");
    std::fs::write(&tmp, doc(json!([new.jwk(Some("new"))]))).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    v.validate(&claims(&new_token)).await.unwrap();
    assert!(
        v.validate(&claims(&old_token)).await.is_err(),
        "old key must be gone"
    );

    // A broken file or a deleted one keeps the last good keys.
    std::fs::write(&path, b"{ not json").unwrap();
    v.validate(&claims(&new_token)).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    v.validate(&claims(&new_token)).await.unwrap();

    // Time moves: the same token expires (beyond the 5 minute skew).
    clock.advance(time::Duration::seconds(600 + 301));
    let e = v
        .validate(&claims(&new_token))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("expired"), "{e}");
}

#[tokio::test]
async fn inline_source_and_configuration_entry_point() {
    let key = TestKey::ed25519();
    let inline = String::from_utf8(doc(json!([key.jwk(None)]))).unwrap();
    let yaml = format!(
        "spec:\n  mtls:\n    tokenValidators:\n      - name: jwks\n        options:\n          source: '{inline}'\n"
    );
    let dapr_config = crate::config::DaprConfiguration::from_yaml(&yaml).unwrap();
    let cfg = config_with(dapr_config);
    let v = from_configuration(&cfg, clock()).unwrap().unwrap();
    let t = token(
        &key,
        &json!({"alg": "EdDSA"}),
        &payload("spiffe://public/ns/default/app"),
    );
    v.validate(&claims(&t)).await.unwrap();
    // Tokens must name this Sentry's ID as audience.
    let mut p = payload("spiffe://public/ns/default/app");
    p["aud"] = "spiffe://localhost/ns/other/dapr-sentry".into();
    let t = token(&key, &json!({"alg": "EdDSA"}), &p);
    assert!(v
        .validate(&claims(&t))
        .await
        .unwrap_err()
        .to_string()
        .contains("audience"));

    assert!(from_configuration(&config_with(Default::default()), clock()).is_none());
    let bad = crate::config::DaprConfiguration::from_yaml(
        "spec:\n  mtls:\n    tokenValidators:\n      - name: jwks\n        options: {}\n",
    )
    .unwrap();
    assert!(matches!(
        from_configuration(&config_with(bad), clock()),
        Some(Err(Error::Config(_)))
    ));
}

fn config_with(dapr_config: crate::config::DaprConfiguration) -> Config {
    use clap::Parser;
    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: crate::config::ServeArgs,
    }
    T::try_parse_from(["t", "--config", "/nonexistent"])
        .unwrap()
        .args
        .into_config(Some(dapr_config))
        .unwrap()
}
