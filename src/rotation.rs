//! The CA in force, and how it changes without a restart.
//!
//! [`CaState`] holds the current [`Authority`] behind an `Arc` that is swapped whole: a
//! request that started on the old issuer finishes on it, the next one uses the new one.
//! [`watch_store`] polls the credential store; a change must stay the same for one more
//! poll (a debounce, so half-written files are not loaded), then it is checked with every
//! PKI check. Good material is swapped in; bad material is logged and counted, the last
//! good CA keeps serving, and the next change is tried again.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use sigil_pki::{Authority, CaFiles, Clock};
use tokio::sync::watch;

use crate::observe::Metrics;
use crate::store::CredentialStore;

/// SHA-256 over the three files, to notice changes.
pub fn fingerprint(files: &CaFiles) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        &files.ca_crt[..],
        &files.issuer_crt[..],
        &files.issuer_key[..],
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The CA in force.
#[derive(Debug)]
pub struct CaState {
    current: RwLock<Arc<Authority>>,
    fingerprint: RwLock<[u8; 32]>,
    generation: watch::Sender<u64>,
}

impl CaState {
    /// Starts with `authority`, loaded from `files`.
    pub fn new(authority: Authority, files: &CaFiles) -> Self {
        Self {
            current: RwLock::new(Arc::new(authority)),
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

    /// Fingerprint of the files behind the current CA.
    pub fn current_fingerprint(&self) -> [u8; 32] {
        *self.fingerprint.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the CA; subscribers are told.
    pub fn replace(&self, authority: Authority, files: &CaFiles) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(authority);
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
    /// New material failed its checks; the old CA keeps serving.
    Rejected(String),
    /// The store could not be read or is empty; the old CA keeps serving.
    StoreProblem(String),
}

/// Polls the store and swaps in new material. One instance per server.
#[derive(Debug)]
pub struct Watcher {
    pending: Option<[u8; 32]>,
    rejected: Option<[u8; 32]>,
}

impl Default for Watcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Watcher {
    /// A watcher with no change pending.
    pub fn new() -> Self {
        Self {
            pending: None,
            rejected: None,
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
                return PollOutcome::StoreProblem("CA material disappeared from the store".into())
            }
            Err(e) => return PollOutcome::StoreProblem(e.to_string()),
        };
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

/// Runs [`Watcher::poll`] every `interval` until `shutdown` turns true.
pub async fn watch_store(
    store: Arc<dyn CredentialStore>,
    state: Arc<CaState>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watcher = Watcher::new();
    let mut last_problem: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        match watcher.poll(&*store, &state, &*clock, &metrics).await {
            PollOutcome::StoreProblem(p) => {
                if last_problem.as_ref() != Some(&p) {
                    tracing::warn!(problem = %p, store = %store.describe(), "cannot read CA material; still serving with the current CA");
                    last_problem = Some(p);
                }
            }
            _ => last_problem = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::file::{FileNames, FileStore};
    use sigil_pki::{CaParams, SystemClock};

    fn gen() -> CaFiles {
        let p = CaParams::new("public".parse().unwrap(), "default".parse().unwrap());
        Authority::generate(&p, time::OffsetDateTime::now_utc()).unwrap()
    }

    #[tokio::test]
    async fn reloads_after_settling_and_rejects_bad_material() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path(), FileNames::default());
        let first = gen();
        store.write_sync(&first).unwrap();
        let state = CaState::new(
            Authority::load(&first, time::OffsetDateTime::now_utc()).unwrap(),
            &first,
        );
        let metrics = Metrics::new();
        let mut w = Watcher::new();
        let clock = SystemClock;
        assert_eq!(
            w.poll(&store, &state, &clock, &metrics).await,
            PollOutcome::Unchanged
        );

        let second = gen();
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
