//! The CA in force, and how it changes without a restart.
//!
//! [`CaState`] holds the current [`Authority`] behind an `Arc` that is swapped whole: a
//! request that started on the old issuer finishes on it, the next one uses the new one.
//! [`watch_store`] polls the credential store; a change must stay the same for one more
//! poll (a debounce, so half-written files are not loaded), then it is checked with every
//! PKI check. Good material is swapped in; bad material is logged and counted, the last
//! good CA keeps serving, and the next change is tried again.
//!
//! Two changes are never taken on their own, because each would break mTLS cluster-wide:
//! material whose trust anchors share no root with the ones in force (unless the operator
//! allows it; a root rotation keeps the old root next to the new one), and a store that was
//! emptied. For an empty store the watcher writes its material back, with the store's
//! create-if-absent rule, so that a replica starting next finds the CA instead of making a
//! new root.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use sigil_pki::{Authority, CaFiles, Clock};
use tokio::sync::watch;

use crate::observe::Metrics;
use crate::store::{self, CredentialStore, ProblemLog};
use crate::Error;

/// The three files' [`store::fingerprint`], to notice changes.
pub fn fingerprint(files: &CaFiles) -> [u8; 32] {
    store::fingerprint([
        Some(&files.ca_crt[..]),
        Some(&files.issuer_crt[..]),
        Some(&files.issuer_key[..]),
    ])
}

/// The CA in force.
#[derive(Debug)]
pub struct CaState {
    current: RwLock<Arc<Authority>>,
    // The files behind `current`, to put back into an emptied store.
    files: RwLock<CaFiles>,
    fingerprint: RwLock<[u8; 32]>,
    generation: watch::Sender<u64>,
}

impl CaState {
    /// Starts with `authority`, loaded from `files`.
    pub fn new(authority: Authority, files: &CaFiles) -> Self {
        Self {
            current: RwLock::new(Arc::new(authority)),
            files: RwLock::new(files.clone()),
            fingerprint: RwLock::new(fingerprint(files)),
            generation: watch::Sender::new(0),
        }
    }

    /// The CA to sign with now.
    pub fn current(&self) -> Arc<Authority> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The files behind the current CA.
    pub fn current_files(&self) -> CaFiles {
        self.files.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Fingerprint of the files behind the current CA.
    pub fn current_fingerprint(&self) -> [u8; 32] {
        *self.fingerprint.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the CA; subscribers are told.
    pub fn replace(&self, authority: Authority, files: &CaFiles) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(authority);
        *self.files.write().unwrap_or_else(|e| e.into_inner()) = files.clone();
        *self.fingerprint.write().unwrap_or_else(|e| e.into_inner()) = fingerprint(files);
        self.generation.send_modify(|g| *g += 1);
    }

    /// A receiver that changes whenever the CA is replaced.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// What one poll concluded; returned for tests and logs.
#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    /// Nothing changed.
    Unchanged,
    /// A change was seen; waiting one more poll for it to settle.
    Settling,
    /// New material was loaded.
    Reloaded,
    /// New material failed its checks, or its roots are unrelated to the ones in force;
    /// the old CA keeps serving.
    Rejected(String),
    /// The store was found empty; the material in force was written back.
    Restored,
    /// The store could not be read or is empty; the old CA keeps serving.
    StoreProblem(String),
}

/// Polls the store and swaps in new material. One instance per server.
#[derive(Debug)]
pub struct Watcher {
    pending: Option<[u8; 32]>,
    rejected: Option<[u8; 32]>,
    allow_root_replacement: bool,
    // Whether the last poll found the store emptied (counted once per episode).
    lost: bool,
}

impl Default for Watcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Watcher {
    /// A watcher with no change pending, that refuses unrelated roots.
    pub fn new() -> Self {
        Self {
            pending: None,
            rejected: None,
            allow_root_replacement: false,
            lost: false,
        }
    }

    /// Lets material with unrelated roots replace the CA in force
    /// (`--allow-ca-root-replacement`).
    pub fn allowing_root_replacement(mut self, allow: bool) -> Self {
        self.allow_root_replacement = allow;
        self
    }

    /// The store is empty, or emptied after holding a CA: put the material in force back
    /// (create-if-absent, so a concurrent writer wins) and keep serving.
    async fn restore(
        &mut self,
        store: &dyn CredentialStore,
        state: &CaState,
        metrics: &Metrics,
        why: String,
    ) -> PollOutcome {
        if !self.lost {
            metrics.ca_material_lost.inc();
            self.lost = true;
        }
        match store.store_if_absent(&state.current_files()).await {
            Ok(_) => {
                tracing::error!(store = %store.describe(), problem = %why, "the CA store was emptied; wrote the CA in force back into it (nothing was regenerated)");
                self.lost = false;
                PollOutcome::Restored
            }
            Err(e) => PollOutcome::StoreProblem(format!(
                "{why}; writing the CA in force back failed: {e}"
            )),
        }
    }

    /// One poll.
    pub async fn poll(
        &mut self,
        store: &dyn CredentialStore,
        state: &CaState,
        clock: &dyn Clock,
        metrics: &Metrics,
    ) -> PollOutcome {
        let files = match store.load().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return self
                    .restore(
                        store,
                        state,
                        metrics,
                        "CA material disappeared from the store".into(),
                    )
                    .await
            }
            Err(e @ Error::CaMaterialLost(_)) => {
                return self.restore(store, state, metrics, e.to_string()).await
            }
            Err(e) => return PollOutcome::StoreProblem(e.to_string()),
        };
        self.lost = false;
        let fp = fingerprint(&files);
        if fp == state.current_fingerprint() || Some(fp) == self.rejected {
            self.pending = None;
            return PollOutcome::Unchanged;
        }
        if self.pending != Some(fp) {
            self.pending = Some(fp);
            return PollOutcome::Settling;
        }
        self.pending = None;
        let now = clock.now();
        match Authority::load(&files, now) {
            Ok(authority)
                if !self.allow_root_replacement
                    && !state
                        .current()
                        .trust_bundle()
                        .shares_a_root_with(authority.trust_bundle()) =>
            {
                metrics.ca_root_replacement_refused.inc();
                metrics.reload_failures.inc();
                tracing::error!(
                    issuer = authority.issuer_subject(),
                    "changed CA material has trust anchors that share no root with the ones in force; swapping it in would break mTLS between every workload and its peers, so the previous CA keeps serving. To rotate the root, put the new root next to the old one in ca.crt first; to replace it anyway, restart Sigil (the store is read as it is at start) or pass --allow-ca-root-replacement"
                );
                self.rejected = Some(fp);
                PollOutcome::Rejected("trust anchors share no root with the ones in force".into())
            }
            Ok(authority) => {
                for w in authority.expiry_warnings(now) {
                    tracing::warn!(%w, "CA certificate expires soon");
                }
                metrics.record_authority(&authority, now);
                tracing::info!(
                    issuer = authority.issuer_subject(),
                    valid_until = %authority.valid_until(),
                    roots = authority.trust_bundle().roots().len(),
                    "loaded new CA material"
                );
                state.replace(authority, &files);
                metrics.issuer_changed.inc();
                self.rejected = None;
                PollOutcome::Reloaded
            }
            Err(e) => {
                metrics.reload_failures.inc();
                tracing::error!(error = %e, "changed CA material is invalid; still serving with the previous CA");
                self.rejected = Some(fp);
                PollOutcome::Rejected(e.to_string())
            }
        }
    }
}

/// Runs `watcher`'s [`Watcher::poll`] every `interval` until `shutdown` turns true.
pub async fn watch_store(
    mut watcher: Watcher,
    store: Arc<dyn CredentialStore>,
    state: Arc<CaState>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let mut problems = ProblemLog::default();
    let mut ticks = store::Ticks::new(interval, shutdown);
    while ticks.next().await {
        let poll = watcher.poll(&*store, &state, &*clock, &metrics);
        let Some(outcome) = ticks.or_shutdown(poll).await else {
            break;
        };
        match outcome {
            PollOutcome::StoreProblem(p) => {
                if problems.is_new(&p) {
                    tracing::warn!(problem = %p, store = %store.describe(), "cannot read CA material; still serving with the current CA");
                }
            }
            _ => problems.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::{FileNames, FileStore};
    use sigil_pki::{CaParams, SystemClock};

    fn params() -> CaParams {
        CaParams::new("public".parse().unwrap(), "default".parse().unwrap())
    }

    fn gen() -> CaFiles {
        Authority::generate(&params(), time::OffsetDateTime::now_utc()).unwrap()
    }

    /// A CA, and a second one with a new issuer under the same root.
    fn gen_with_next_issuer() -> (CaFiles, CaFiles) {
        let now = time::OffsetDateTime::now_utc();
        let (first, root_key) = Authority::generate_keeping_root(&params(), now).unwrap();
        let root_key = sigil_pki::PrivateKey::from_pem(root_key.as_bytes()).unwrap();
        let (issuer_crt, issuer_key) =
            Authority::new_issuer(&first.ca_crt, &root_key, &params(), now).unwrap();
        let next = CaFiles {
            ca_crt: first.ca_crt.clone(),
            issuer_crt,
            issuer_key,
        };
        (first, next)
    }

    fn started(files: &CaFiles) -> CaState {
        CaState::new(
            Authority::load(files, time::OffsetDateTime::now_utc()).unwrap(),
            files,
        )
    }

    /// Two polls: the change settles, then is judged.
    async fn poll_twice(
        w: &mut Watcher,
        store: &FileStore,
        state: &CaState,
        m: &Metrics,
    ) -> PollOutcome {
        assert_eq!(
            w.poll(store, state, &SystemClock, m).await,
            PollOutcome::Settling
        );
        w.poll(store, state, &SystemClock, m).await
    }

    #[tokio::test]
    async fn unrelated_roots_are_not_swapped_in_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path(), FileNames::default());
        let first = gen();
        store.write_sync(&first).unwrap();
        let state = started(&first);
        let metrics = Metrics::new();
        let mut w = Watcher::new();

        let stranger = gen();
        store.write_sync(&stranger).unwrap();
        assert!(matches!(
            poll_twice(&mut w, &store, &state, &metrics).await,
            PollOutcome::Rejected(r) if r.contains("share no root")
        ));
        assert_eq!(state.current().anchors_pem().as_bytes(), &first.ca_crt[..]);
        assert_eq!(metrics.ca_root_replacement_refused.get(), 1);
        // Not retried while it stays the same.
        assert_eq!(
            w.poll(&store, &state, &SystemClock, &metrics).await,
            PollOutcome::Unchanged
        );

        // A bundle with the old root next to the new one is a root rotation: accepted.
        let mut rotation = stranger.clone();
        rotation.ca_crt = [&stranger.ca_crt[..], &first.ca_crt[..]].concat();
        store.write_sync(&rotation).unwrap();
        assert_eq!(
            poll_twice(&mut w, &store, &state, &metrics).await,
            PollOutcome::Reloaded
        );

        // With the override, an unrelated root is taken.
        let mut w = Watcher::new().allowing_root_replacement(true);
        let third = gen();
        store.write_sync(&third).unwrap();
        assert_eq!(
            poll_twice(&mut w, &store, &state, &metrics).await,
            PollOutcome::Reloaded
        );
        assert_eq!(state.current().anchors_pem().as_bytes(), &third.ca_crt[..]);
        assert_eq!(metrics.ca_root_replacement_refused.get(), 1);
    }

    #[tokio::test]
    async fn an_emptied_store_gets_the_ca_in_force_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path(), FileNames::default());
        let first = gen();
        store.write_sync(&first).unwrap();
        let state = started(&first);
        let metrics = Metrics::new();
        let mut w = Watcher::new();
        for p in [
            store.ca_path(),
            store.issuer_cert_path(),
            store.issuer_key_path(),
        ] {
            std::fs::remove_file(p).unwrap();
        }
        assert_eq!(
            w.poll(&store, &state, &SystemClock, &metrics).await,
            PollOutcome::Restored
        );
        assert_eq!(metrics.ca_material_lost.get(), 1);
        let back = store.load().await.unwrap().expect("restored");
        assert_eq!(fingerprint(&back), fingerprint(&first));
        assert_eq!(
            w.poll(&store, &state, &SystemClock, &metrics).await,
            PollOutcome::Unchanged
        );
    }

    #[tokio::test]
    async fn reloads_after_settling_and_rejects_bad_material() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path(), FileNames::default());
        let (first, second) = gen_with_next_issuer();
        store.write_sync(&first).unwrap();
        let state = started(&first);
        let metrics = Metrics::new();
        let mut w = Watcher::new();
        let clock = SystemClock;
        assert_eq!(
            w.poll(&store, &state, &clock, &metrics).await,
            PollOutcome::Unchanged
        );

        store.write_sync(&second).unwrap();
        let rx = state.subscribe();
        assert_eq!(
            w.poll(&store, &state, &clock, &metrics).await,
            PollOutcome::Settling
        );
        assert_eq!(
            w.poll(&store, &state, &clock, &metrics).await,
            PollOutcome::Reloaded
        );
        assert!(rx.has_changed().unwrap());
        assert_eq!(
            state.current().chain_pem().as_bytes(),
            &second.issuer_crt[..]
        );
        assert_eq!(metrics.issuer_changed.get(), 1);

        // A key that does not match: rejected, previous CA kept, not retried until it changes.
        let mut broken = second.clone();
        broken.issuer_key = first.issuer_key.clone();
        store.write_sync(&broken).unwrap();
        assert_eq!(
            w.poll(&store, &state, &clock, &metrics).await,
            PollOutcome::Settling
        );
        assert!(matches!(
            w.poll(&store, &state, &clock, &metrics).await,
            PollOutcome::Rejected(_)
        ));
        assert_eq!(
            w.poll(&store, &state, &clock, &metrics).await,
            PollOutcome::Unchanged
        );
        assert_eq!(
            state.current().chain_pem().as_bytes(),
            &second.issuer_crt[..]
        );
        assert_eq!(metrics.reload_failures.get(), 1);

        // Truncated files: also rejected.
        std::fs::write(
            store.issuer_key_path(),
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n",
        )
        .unwrap();
        w.poll(&store, &state, &clock, &metrics).await;
        assert!(matches!(
            w.poll(&store, &state, &clock, &metrics).await,
            PollOutcome::Rejected(_)
        ));
        assert_eq!(
            state.current().chain_pem().as_bytes(),
            &second.issuer_crt[..]
        );
    }
}
