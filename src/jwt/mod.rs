//! JWT-SVIDs next to every certificate: the signing key in force, the published JWKS, and
//! how both change without a restart.
//!
//! Rotation rule: when the stored signing key changes, the new public key is written to
//! the JWKS (and the store has returned, so it is published) *before* the first token is
//! signed with it; the previous key stays in the JWKS until every token it signed has
//! expired (`--jwt-ttl` plus the allowed clock skew), then it is removed. With several
//! replicas and caching verifiers, "published" means more than "written": a running replica
//! keeps signing with the key it has until the new one has been in the stored JWKS for the
//! publish delay (the OIDC `max-age` plus two reload intervals, so every replica's OIDC
//! endpoint serves it and every cache has refreshed); the time of first publication is part
//! of the stored bookkeeping, so replicas agree on it. Keys that a person
//! added to the JWKS are left alone. The bookkeeping lives in the stored JWKS itself (see
//! [`sigil_pki::JwksDocument`]), so restarts and replicas agree.

use sigil_pki::clock::to_time;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sigil_pki::jose::Algorithm as JwsAlgorithm;
use sigil_pki::jwt;
use sigil_pki::{Clock, JwksDocument, JwtRequest, JwtSigningKey, SpiffeId, TrustDomain};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::config::jwt::JwtSettings;
use crate::observe::Metrics;
use crate::store::{self, JwtFiles, JwtKeyStore, ProblemLog};
use crate::Error;

/// The signing key and the key set in force.
#[derive(Debug)]
pub struct ActiveJwt {
    /// Signs new tokens.
    pub key: Arc<JwtSigningKey>,
    /// The stored key set.
    pub document: JwksDocument,
    public_json: Vec<u8>,
}

impl ActiveJwt {
    fn new(key: Arc<JwtSigningKey>, document: JwksDocument) -> Self {
        let public_json = document.to_public_json();
        Self {
            key,
            document,
            public_json,
        }
    }

    /// The JWKS as served to verifiers: `{"keys": [...]}`.
    pub fn public_jwks(&self) -> &[u8] {
        &self.public_json
    }

    /// Algorithms of the published keys (for the OIDC discovery document); the signing
    /// key's algorithm first.
    pub fn algorithms(&self) -> Vec<String> {
        let mut algs = vec![self.key.algorithm().name().to_string()];
        for a in self.document.algorithms() {
            if !algs.contains(&a) {
                algs.push(a);
            }
        }
        algs
    }
}

/// Tokens for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedJwts {
    /// One token for all audiences (`jwt`).
    pub jwt: String,
    /// One token per audience (`per_audience_jwts`).
    pub per_audience: HashMap<String, String>,
}

/// JWT issuance state shared by the gRPC handler, the OIDC server and the key watcher.
#[derive(Debug)]
pub struct JwtState {
    current: RwLock<Arc<ActiveJwt>>,
    fingerprint: RwLock<[u8; 32]>,
    settings: JwtSettings,
    clock_skew: time::Duration,
    publish_delay: time::Duration,
}

/// How long verifiers may cache the JWKS (the OIDC endpoint's `Cache-Control: max-age`).
pub const JWKS_MAX_AGE: time::Duration = time::Duration::seconds(300);

/// How long a new signing key is published before it signs: the verifiers' cache lifetime
/// plus two store polls (one for every replica to see the key, one to spare).
pub fn publish_delay(reload_interval: Duration) -> time::Duration {
    JWKS_MAX_AGE.saturating_add(to_time(reload_interval).saturating_mul(2))
}

/// The stored key and JWKS's [`store::fingerprint`], to notice changes.
pub fn fingerprint(files: &JwtFiles) -> [u8; 32] {
    store::fingerprint([
        files.key_pem.as_deref().map(Vec::as_slice),
        files.jwks_json.as_deref(),
    ])
}

impl JwtState {
    /// The key and key set in force.
    pub fn current(&self) -> Arc<ActiveJwt> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn current_fingerprint(&self) -> [u8; 32] {
        *self.fingerprint.read().unwrap_or_else(|e| e.into_inner())
    }

    fn replace(&self, active: ActiveJwt, fp: [u8; 32]) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(active);
        *self.fingerprint.write().unwrap_or_else(|e| e.into_inner()) = fp;
    }

    /// Makes a changed key wait `delay` after its first publication before it signs (zero:
    /// at once, once written).
    pub fn with_publish_delay(mut self, delay: time::Duration) -> Self {
        self.publish_delay = delay;
        self
    }

    /// The settings in force.
    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// How long a retired key stays published: token lifetime plus the allowed skew.
    fn retain(&self) -> time::Duration {
        to_time(self.settings.ttl).saturating_add(self.clock_skew)
    }

    /// The audiences of a request's tokens (trust domain first, de-duplicated), refused
    /// with `InvalidArgument` when out of bounds. Checked before the certificate is signed.
    pub fn audiences(
        &self,
        trust_domain: &TrustDomain,
        requested: &[String],
    ) -> Result<Vec<String>, Error> {
        jwt::audiences(trust_domain, requested).map_err(|e| Error::JwtAudiences(e.to_string()))
    }

    /// Signs the tokens of one response: one for all `audiences`, one per audience.
    pub fn issue(
        &self,
        subject: &SpiffeId,
        audiences: &[String],
        now: time::OffsetDateTime,
    ) -> Result<IssuedJwts, Error> {
        let active = self.current();
        let request = |aud: &[String]| -> Result<String, Error> {
            active
                .key
                .sign(
                    &JwtRequest {
                        subject,
                        audiences: aud,
                        issuer: self.settings.issuer.as_deref(),
                        ttl: to_time(self.settings.ttl),
                        clock_skew: self.clock_skew,
                    },
                    now,
                )
                .map_err(Error::JwtSigning)
        };
        let jwt = request(audiences)?;
        let mut per_audience = HashMap::with_capacity(audiences.len());
        for a in audiences {
            per_audience.insert(a.clone(), request(std::slice::from_ref(a))?);
        }
        Ok(IssuedJwts { jwt, per_audience })
    }
}

fn parse_key(pem: &[u8], settings: &JwtSettings) -> Result<JwtSigningKey, sigil_pki::Error> {
    let key = JwtSigningKey::from_pem(pem, settings.algorithm)?;
    Ok(match &settings.key_id {
        Some(kid) => key.with_key_id(kid.clone()),
        None => key,
    })
}

/// Loads the signing key and JWKS from `store`, generating the key when there is none
/// (RS256/RSA-2048 unless `--jwt-signing-algorithm` says otherwise), and makes sure the key
/// is published in the JWKS before anything is signed with it.
pub async fn load_or_generate(
    store: &dyn JwtKeyStore,
    settings: &JwtSettings,
    clock_skew: time::Duration,
    clock: &dyn Clock,
) -> Result<JwtState, Error> {
    let retain = to_time(settings.ttl) + clock_skew;
    let unusable = |what: &str, e: sigil_pki::Error| {
        Error::Config(format!("{what} in {} is not usable: {e}", store.describe()))
    };
    let files = store.load().await?;
    let mut document = match &files.jwks_json {
        Some(b) => JwksDocument::parse(b).map_err(|e| unusable("the JWKS", e))?,
        None => JwksDocument::new(),
    };
    let key_pem: Zeroizing<Vec<u8>> = match files.key_pem {
        Some(p) => p,
        None => {
            let alg = settings.algorithm.unwrap_or(JwsAlgorithm::Rs256);
            let settings_for_gen = settings.clone();
            // RSA key generation takes a while; keep it off the async workers.
            let key = tokio::task::spawn_blocking(move || {
                JwtSigningKey::generate(alg).map(|k| match &settings_for_gen.key_id {
                    Some(kid) => k.with_key_id(kid.clone()),
                    None => k,
                })
            })
            .await
            .map_err(|source| Error::Task {
                what: "JWT key generation",
                source,
            })?
            .map_err(Error::JwtSigning)?;
            // Publish first, then store the key: a crash in between leaves an extra public
            // key, never a key that signs without being published.
            document.publish(&key, clock.now(), retain);
            store.store_jwks(&document.to_stored_json()).await?;
            let stored = store.store_key_if_absent(key.to_pem().as_bytes()).await?;
            tracing::info!(store = %store.describe(), alg = %alg, kid = key.kid(), "generated a JWT signing key");
            stored
        }
    };
    let key = parse_key(&key_pem, settings).map_err(|e| unusable("the JWT signing key", e))?;
    if !key.algorithm().accepted_by_daprd() {
        tracing::warn!(
            alg = %key.algorithm(),
            "JWT-SVIDs are signed with EdDSA: Dapr sidecars (daprd) only accept RS*, ES* and PS* tokens and will reject these"
        );
    }
    let now = clock.now();
    let had_key = document.contains(&key);
    // A signing key with a JWKS that a person wrote and that does not publish it is a
    // mistake: every token would fail verification, and rewriting their JWKS would silently
    // replace what they brought. Refuse, as Dapr Sentry does. A JWKS Sigil keeps (with its
    // bookkeeping) is Sigil's to extend: that is how a key written into the store rotates in.
    if !had_key && files.jwks_json.is_some() && !document.kept_by_sigil() {
        return Err(Error::Config(format!(
            "the JWKS in {} does not publish the JWT signing key (kid {:?}); verifiers would reject every token. Add the key's public JWK to the JWKS, or remove the JWKS so that Sigil writes it",
            store.describe(),
            key.kid()
        )));
    }
    let changed = document.publish(&key, now, retain);
    let pruned = document.prune(now);
    let jwks_bytes = if changed || !pruned.is_empty() || files.jwks_json.is_none() {
        if !had_key {
            tracing::info!(
                kid = key.kid(),
                "publishing the JWT signing key in the JWKS"
            );
        }
        let bytes = document.to_stored_json();
        store.store_jwks(&bytes).await?;
        bytes
    } else {
        files.jwks_json.clone().unwrap_or_default()
    };
    let fp = fingerprint(&JwtFiles {
        key_pem: Some(key_pem),
        jwks_json: Some(jwks_bytes),
    });
    tracing::info!(
        alg = %key.algorithm(),
        kid = key.kid(),
        published = document.kids().len(),
        "JWT issuance enabled"
    );
    Ok(JwtState {
        current: RwLock::new(Arc::new(ActiveJwt::new(Arc::new(key), document))),
        fingerprint: RwLock::new(fp),
        settings: settings.clone(),
        clock_skew,
        publish_delay: time::Duration::ZERO,
    })
}

/// What one poll concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum JwtPollOutcome {
    /// Nothing changed (expired keys may have been pruned).
    Unchanged,
    /// A change was seen; waiting one more poll for it to settle.
    Settling,
    /// The new key or key set is in force.
    Reloaded,
    /// A new signing key is published; the previous key signs until the publish delay has
    /// passed.
    Publishing,
    /// The change is unusable; the previous key keeps signing.
    Rejected(String),
    /// The store could not be read or written; nothing changed.
    StoreProblem(String),
}

/// Polls the store for a changed key or JWKS. One instance per server.
#[derive(Debug, Default)]
pub struct JwtWatcher {
    pending: Option<[u8; 32]>,
    rejected: Option<[u8; 32]>,
    // A new key that is published and waits for the publish delay, and when it may sign.
    publishing: Option<(Arc<JwtSigningKey>, time::OffsetDateTime)>,
}

impl JwtWatcher {
    /// A watcher with no change pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// One poll.
    pub async fn poll(
        &mut self,
        store: &dyn JwtKeyStore,
        state: &JwtState,
        clock: &dyn Clock,
    ) -> JwtPollOutcome {
        let files = match store.load().await {
            Ok(f) => f,
            Err(e) => return JwtPollOutcome::StoreProblem(e.to_string()),
        };
        let Some(key_pem) = files.key_pem.clone() else {
            return JwtPollOutcome::StoreProblem(
                "the JWT signing key disappeared from the store".into(),
            );
        };
        let fp = fingerprint(&files);
        let now = clock.now();
        if fp == state.current_fingerprint() || Some(fp) == self.rejected {
            self.pending = None;
            if let Some((key, ready)) = self.publishing.clone() {
                if now >= ready {
                    return self.start_signing(store, state, key, &key_pem, now).await;
                }
                return JwtPollOutcome::Publishing;
            }
            return self.prune_expired(store, state, &key_pem, now).await;
        }
        if self.pending != Some(fp) {
            self.pending = Some(fp);
            return JwtPollOutcome::Settling;
        }
        self.pending = None;
        let key = match parse_key(&key_pem, &state.settings) {
            Ok(k) => k,
            Err(e) => {
                self.rejected = Some(fp);
                tracing::error!(error = %e, "changed JWT signing key is unusable; still signing with the previous key");
                return JwtPollOutcome::Rejected(e.to_string());
            }
        };
        let current = state.current();
        let mut document = match &files.jwks_json {
            Some(b) => match JwksDocument::parse(b) {
                Ok(d) => d,
                Err(e) => {
                    self.rejected = Some(fp);
                    tracing::error!(error = %e, "changed JWKS is unusable; still serving the previous one");
                    return JwtPollOutcome::Rejected(e.to_string());
                }
            },
            None => current.document.clone(),
        };
        let new_key =
            key.kid() != current.key.kid() || key.thumbprint() != current.key.thumbprint();
        if new_key && !state.publish_delay.is_zero() {
            // Publish now, sign later: the previous key keeps signing meanwhile.
            let changed = document.announce(&key, now);
            let jwks_bytes = if changed || files.jwks_json.is_none() {
                let bytes = document.to_stored_json();
                if let Err(e) = store.store_jwks(&bytes).await {
                    return JwtPollOutcome::StoreProblem(e.to_string());
                }
                bytes
            } else {
                files.jwks_json.clone().unwrap_or_default()
            };
            let since = document
                .published_at(key.kid())
                .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
                .unwrap_or(now);
            let ready = since.saturating_add(state.publish_delay);
            tracing::info!(
                old_kid = current.key.kid(),
                new_kid = key.kid(),
                signs_from = %ready,
                "new JWT signing key published; the current key signs until every replica and verifier cache has seen it"
            );
            state.replace(
                ActiveJwt::new(current.key.clone(), document),
                fingerprint(&JwtFiles {
                    key_pem: Some(key_pem.clone()),
                    jwks_json: Some(jwks_bytes),
                }),
            );
            let key = Arc::new(key);
            self.publishing = Some((key.clone(), ready));
            self.rejected = None;
            return if now >= ready {
                self.start_signing(store, state, key, &key_pem, now).await
            } else {
                JwtPollOutcome::Publishing
            };
        }
        self.publishing = None;
        let changed = document.publish(&key, now, state.retain());
        let pruned = document.prune(now);
        let jwks_bytes = if changed || !pruned.is_empty() || files.jwks_json.is_none() {
            let bytes = document.to_stored_json();
            if let Err(e) = store.store_jwks(&bytes).await {
                // Not published, so not used: the previous key keeps signing.
                return JwtPollOutcome::StoreProblem(e.to_string());
            }
            bytes
        } else {
            files.jwks_json.clone().unwrap_or_default()
        };
        let new_fp = fingerprint(&JwtFiles {
            key_pem: Some(key_pem),
            jwks_json: Some(jwks_bytes),
        });
        if key.kid() != current.key.kid() || key.thumbprint() != current.key.thumbprint() {
            tracing::info!(
                old_kid = current.key.kid(),
                new_kid = key.kid(),
                alg = %key.algorithm(),
                "JWT signing key changed; the new key is published and now signs, the old one stays published until its tokens expire"
            );
        } else {
            tracing::info!(
                published = document.kids().len(),
                "JWKS changed; serving the new key set"
            );
        }
        for kid in pruned {
            tracing::info!(%kid, "removed a retired JWT key from the JWKS: its tokens have expired");
        }
        state.replace(ActiveJwt::new(Arc::new(key), document), new_fp);
        self.rejected = None;
        JwtPollOutcome::Reloaded
    }

    /// The publish delay of `key` has passed: it becomes the signing key (recorded in the
    /// stored JWKS), the previous one is retired.
    async fn start_signing(
        &mut self,
        store: &dyn JwtKeyStore,
        state: &JwtState,
        key: Arc<JwtSigningKey>,
        key_pem: &Zeroizing<Vec<u8>>,
        now: time::OffsetDateTime,
    ) -> JwtPollOutcome {
        let current = state.current();
        let mut document = current.document.clone();
        document.publish(&key, now, state.retain());
        let bytes = document.to_stored_json();
        if let Err(e) = store.store_jwks(&bytes).await {
            return JwtPollOutcome::StoreProblem(e.to_string());
        }
        tracing::info!(
            old_kid = current.key.kid(),
            new_kid = key.kid(),
            "JWT signing key changed; the new key has been published for the publish delay and now signs, the old one stays published until its tokens expire"
        );
        let fp = fingerprint(&JwtFiles {
            key_pem: Some(key_pem.clone()),
            jwks_json: Some(bytes),
        });
        state.replace(ActiveJwt::new(key, document), fp);
        self.publishing = None;
        JwtPollOutcome::Reloaded
    }

    async fn prune_expired(
        &mut self,
        store: &dyn JwtKeyStore,
        state: &JwtState,
        key_pem: &Zeroizing<Vec<u8>>,
        now: time::OffsetDateTime,
    ) -> JwtPollOutcome {
        let current = state.current();
        let mut document = current.document.clone();
        let pruned = document.prune(now);
        if pruned.is_empty() {
            return JwtPollOutcome::Unchanged;
        }
        let bytes = document.to_stored_json();
        if let Err(e) = store.store_jwks(&bytes).await {
            return JwtPollOutcome::StoreProblem(e.to_string());
        }
        for kid in &pruned {
            tracing::info!(%kid, "removed a retired JWT key from the JWKS: its tokens have expired");
        }
        let fp = fingerprint(&JwtFiles {
            key_pem: Some(key_pem.clone()),
            jwks_json: Some(bytes),
        });
        state.replace(ActiveJwt::new(current.key.clone(), document), fp);
        JwtPollOutcome::Unchanged
    }
}

/// Runs [`JwtWatcher::poll`] every `interval` until `shutdown` turns true.
pub async fn watch_store(
    store: Arc<dyn JwtKeyStore>,
    state: Arc<JwtState>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let mut watcher = JwtWatcher::new();
    let mut problems = ProblemLog::default();
    metrics
        .jwks_keys
        .set(state.current().document.kids().len() as i64);
    let mut ticks = store::Ticks::new(interval, shutdown);
    while ticks.next().await {
        let kid_before = state.current().key.kid().to_string();
        let Some(outcome) = ticks
            .or_shutdown(watcher.poll(&*store, &state, &*clock))
            .await
        else {
            break;
        };
        match outcome {
            JwtPollOutcome::StoreProblem(p) => {
                metrics.jwt_key_problems.inc();
                if problems.is_new(&p) {
                    tracing::warn!(problem = %p, store = %store.describe(), "cannot read or publish JWT keys; still signing with the current key");
                }
            }
            JwtPollOutcome::Rejected(_) => {
                metrics.jwt_key_problems.inc();
                problems.clear();
            }
            _ => problems.clear(),
        }
        let current = state.current();
        if current.key.kid() != kid_before {
            metrics.jwt_key_changed.inc();
        }
        metrics.jwks_keys.set(current.document.kids().len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::FileJwtStore;
    use sigil_pki::ManualClock;
    use std::path::Path;

    fn settings(dir: &Path, alg: Option<JwsAlgorithm>) -> JwtSettings {
        JwtSettings {
            key_path: dir.join("jwt.key"),
            jwks_path: dir.join("jwks.json"),
            issuer: None,
            algorithm: alg,
            key_id: None,
            ttl: Duration::from_secs(3600),
            publish_delay: None,
        }
    }

    fn jwks_kids(path: &Path) -> Vec<String> {
        let d = JwksDocument::parse(&std::fs::read(path).unwrap()).unwrap();
        d.kids().into_iter().map(str::to_owned).collect()
    }

    #[tokio::test]
    async fn generates_rs256_by_default_with_a_private_key_file_and_published_jwks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), None);
        let store = FileJwtStore::new(&s.key_path, &s.jwks_path);
        let clock = ManualClock::new(time::OffsetDateTime::now_utc());
        let state = load_or_generate(&store, &s, time::Duration::minutes(15), &clock)
            .await
            .unwrap();
        let active = state.current();
        assert_eq!(active.key.algorithm(), JwsAlgorithm::Rs256);
        let mode = std::fs::metadata(&s.key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(jwks_kids(&s.jwks_path), vec![active.key.kid().to_string()]);
        let served: serde_json::Value = serde_json::from_slice(active.public_jwks()).unwrap();
        assert_eq!(served["keys"][0]["kty"], "RSA");
        assert_eq!(served["keys"][0]["alg"], "RS256");

        // A second start uses the same key and does not rewrite anything.
        let before = std::fs::read(&s.jwks_path).unwrap();
        let again = load_or_generate(&store, &s, time::Duration::minutes(15), &clock)
            .await
            .unwrap();
        assert_eq!(again.current().key.kid(), active.key.kid());
        assert_eq!(std::fs::read(&s.jwks_path).unwrap(), before);

        // A key that does not fit the configured algorithm stops the start.
        let e = load_or_generate(
            &store,
            &settings(dir.path(), Some(JwsAlgorithm::Es256)),
            time::Duration::minutes(15),
            &clock,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot sign ES256"), "{e}");
    }

    #[tokio::test]
    async fn key_rotation_publishes_first_and_keeps_the_old_key_until_its_tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), Some(JwsAlgorithm::Es256));
        let store = FileJwtStore::new(&s.key_path, &s.jwks_path);
        let clock = ManualClock::new(time::OffsetDateTime::now_utc());
        let skew = time::Duration::minutes(15);
        let state = load_or_generate(&store, &s, skew, &clock).await.unwrap();
        let old_kid = state.current().key.kid().to_string();
        let mut w = JwtWatcher::new();
        assert_eq!(
            w.poll(&store, &state, &clock).await,
            JwtPollOutcome::Unchanged
        );

        let new_key = JwtSigningKey::generate(JwsAlgorithm::Es256).unwrap();
        crate::store::atomic::write_file(&s.key_path, new_key.to_pem().as_bytes(), 0o600).unwrap();
        assert_eq!(
            w.poll(&store, &state, &clock).await,
            JwtPollOutcome::Settling
        );
        assert_eq!(state.current().key.kid(), old_kid, "not yet");
        assert_eq!(
            w.poll(&store, &state, &clock).await,
            JwtPollOutcome::Reloaded
        );
        let active = state.current();
        assert_eq!(active.key.kid(), new_key.kid());
        assert_eq!(
            jwks_kids(&s.jwks_path),
            vec![old_kid.clone(), new_key.kid().to_string()],
            "both published on disk"
        );
        assert_eq!(
            active.document.kids(),
            vec![old_kid.as_str(), new_key.kid()]
        );
        assert_eq!(
            w.poll(&store, &state, &clock).await,
            JwtPollOutcome::Unchanged
        );

        // Until the old key's last token (signed just before the swap) expires, it stays.
        clock.advance(time::Duration::hours(1) + skew - time::Duration::seconds(1));
        w.poll(&store, &state, &clock).await;
        assert_eq!(jwks_kids(&s.jwks_path).len(), 2);
        clock.advance(time::Duration::seconds(1));
        assert_eq!(
            w.poll(&store, &state, &clock).await,
            JwtPollOutcome::Unchanged
        );
        assert_eq!(jwks_kids(&s.jwks_path), vec![new_key.kid().to_string()]);
        assert_eq!(state.current().document.kids(), vec![new_key.kid()]);
        assert_eq!(
            w.poll(&store, &state, &clock).await,
            JwtPollOutcome::Unchanged
        );

        // A broken key file is refused; the current key keeps signing.
        std::fs::write(
            &s.key_path,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        w.poll(&store, &state, &clock).await;
        assert!(matches!(
            w.poll(&store, &state, &clock).await,
            JwtPollOutcome::Rejected(_)
        ));
        assert_eq!(state.current().key.kid(), new_key.kid());
    }

    #[tokio::test]
    async fn a_new_key_signs_only_after_the_publish_delay() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), Some(JwsAlgorithm::Es256));
        let store = FileJwtStore::new(&s.key_path, &s.jwks_path);
        let clock = ManualClock::new(time::OffsetDateTime::now_utc());
        let delay = publish_delay(Duration::from_secs(2));
        assert_eq!(delay, time::Duration::seconds(304));
        let skew = time::Duration::minutes(15);
        // Two replicas on one store.
        let a = load_or_generate(&store, &s, skew, &clock)
            .await
            .unwrap()
            .with_publish_delay(delay);
        let b = load_or_generate(&store, &s, skew, &clock)
            .await
            .unwrap()
            .with_publish_delay(delay);
        let old_kid = a.current().key.kid().to_string();
        assert_eq!(b.current().key.kid(), old_kid);
        let (mut wa, mut wb) = (JwtWatcher::new(), JwtWatcher::new());

        let new_key = JwtSigningKey::generate(JwsAlgorithm::Es256).unwrap();
        crate::store::atomic::write_file(&s.key_path, new_key.to_pem().as_bytes(), 0o600).unwrap();
        assert_eq!(wa.poll(&store, &a, &clock).await, JwtPollOutcome::Settling);
        assert_eq!(
            wa.poll(&store, &a, &clock).await,
            JwtPollOutcome::Publishing
        );
        // Published (on disk and served), not signing.
        assert_eq!(
            jwks_kids(&s.jwks_path),
            vec![old_kid.clone(), new_key.kid().to_string()]
        );
        assert_eq!(
            a.current().document.kids(),
            vec![old_kid.as_str(), new_key.kid()]
        );
        assert_eq!(a.current().key.kid(), old_kid);
        let first = JwksDocument::parse(&std::fs::read(&s.jwks_path).unwrap())
            .unwrap()
            .published_at(new_key.kid())
            .unwrap();
        // The other replica sees the same key and the same publication time.
        let mut outcome = JwtPollOutcome::Settling;
        for _ in 0..3 {
            outcome = wb.poll(&store, &b, &clock).await;
            if outcome == JwtPollOutcome::Publishing {
                break;
            }
        }
        assert_eq!(outcome, JwtPollOutcome::Publishing);
        assert_eq!(b.current().key.kid(), old_kid);

        clock.advance(delay - time::Duration::seconds(1));
        assert_eq!(
            wa.poll(&store, &a, &clock).await,
            JwtPollOutcome::Publishing
        );
        assert_eq!(
            wb.poll(&store, &b, &clock).await,
            JwtPollOutcome::Publishing
        );
        assert_eq!(a.current().key.kid(), old_kid);

        clock.advance(time::Duration::seconds(1));
        assert_eq!(wa.poll(&store, &a, &clock).await, JwtPollOutcome::Reloaded);
        assert_eq!(a.current().key.kid(), new_key.kid());
        let stored = JwksDocument::parse(&std::fs::read(&s.jwks_path).unwrap()).unwrap();
        assert_eq!(stored.signing_kid(), Some(new_key.kid()));
        assert_eq!(stored.published_at(new_key.kid()), Some(first));
        assert!(
            stored.retired_until(&old_kid).is_some(),
            "the old key is retired, still published"
        );
        // The other replica follows within a couple of polls, never before the delay.
        let mut outcome = JwtPollOutcome::Settling;
        for _ in 0..3 {
            outcome = wb.poll(&store, &b, &clock).await;
            if outcome == JwtPollOutcome::Reloaded {
                break;
            }
        }
        assert_eq!(outcome, JwtPollOutcome::Reloaded);
        assert_eq!(b.current().key.kid(), new_key.kid());
        assert_eq!(wa.poll(&store, &a, &clock).await, JwtPollOutcome::Unchanged);
    }

    #[tokio::test]
    async fn tokens_carry_every_audience_and_one_per_audience() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), Some(JwsAlgorithm::Es256));
        let store = FileJwtStore::new(&s.key_path, &s.jwks_path);
        let clock = ManualClock::new(time::OffsetDateTime::now_utc());
        let state = load_or_generate(&store, &s, time::Duration::minutes(15), &clock)
            .await
            .unwrap();
        let td: TrustDomain = "example.org".parse().unwrap();
        let aud = state
            .audiences(&td, &["api".into(), "example.org".into()])
            .unwrap();
        assert_eq!(aud, vec!["example.org", "api"]);
        let sub = SpiffeId::workload(&td, &"ns1".parse().unwrap(), &"app".parse().unwrap());
        let issued = state.issue(&sub, &aud, clock.now()).unwrap();
        assert_eq!(issued.per_audience.len(), 2);
        let claims = |t: &str| -> serde_json::Value {
            use base64::Engine as _;
            let p = t.split('.').nth(1).unwrap();
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            claims(&issued.jwt)["aud"],
            serde_json::json!(["example.org", "api"])
        );
        assert_eq!(
            claims(&issued.per_audience["api"])["aud"],
            serde_json::json!(["api"])
        );
        let many: Vec<String> = (0..17).map(|i| i.to_string()).collect();
        let e = state.audiences(&td, &many).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
