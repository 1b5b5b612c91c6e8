//! Where key material lives: the CA ([`CredentialStore`]) and the JWT signing key with its
//! published JWKS ([`JwtKeyStore`]), each in files (standalone, [`file`]) or in the
//! Kubernetes Secret and ConfigMap `dapr-trust-bundle` (kubernetes mode, [`kubernetes`]).
//!
//! Every store follows the same rules: existing material is never overwritten at start;
//! material is generated only when none exists; when several replicas race to create it,
//! exactly one wins and every other one reads and uses the winner's. Changes made behind
//! Sigil's back are noticed by polling ([`Ticks`]) and comparing [`fingerprint`]s.

use std::time::Duration;

use sigil_pki::CaFiles;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::Error;

pub mod atomic;
pub mod file;
pub mod kubernetes;
pub mod names;

/// A place that holds one set of CA files.
#[async_trait::async_trait]
pub trait CredentialStore: Send + Sync {
    /// Short description for logs (a directory, `secret dapr-system/dapr-trust-bundle`).
    fn describe(&self) -> String;

    /// Reads the stored material; `Ok(None)` when nothing is stored yet. Partially present
    /// material is an error: it needs a person, not a silent regeneration.
    async fn load(&self) -> Result<Option<CaFiles>, Error>;

    /// Stores `files` unless material already exists, and returns what is stored afterwards:
    /// `files` if this call created it, otherwise the material that was already there.
    async fn store_if_absent(&self, files: &CaFiles) -> Result<CaFiles, Error>;
}

/// What a JWT key store holds now; either part may be missing.
#[derive(Clone, Default)]
pub struct JwtFiles {
    /// PEM of the signing key.
    pub key_pem: Option<Zeroizing<Vec<u8>>>,
    /// The stored JWKS document (with Sigil's rotation bookkeeping).
    pub jwks_json: Option<Vec<u8>>,
}

impl std::fmt::Debug for JwtFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtFiles")
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .field("jwks_json", &self.jwks_json.as_ref().map(Vec::len))
            .finish()
    }
}

/// A place that holds the JWT signing key and the JWKS.
///
/// What an implementation must guarantee:
/// - [`JwtKeyStore::store_jwks`] returns only once the JWKS is durable and visible to
///   readers (Kubernetes: the Secret is updated and the ConfigMap mirror written), because
///   Sigil signs with a new key only after this returns.
/// - [`JwtKeyStore::store_key_if_absent`] never replaces an existing key; when several
///   replicas race, one wins (Kubernetes: create/update with resourceVersion conflict
///   detection) and every caller gets the winner's key back.
#[async_trait::async_trait]
pub trait JwtKeyStore: Send + Sync {
    /// Short description for logs.
    fn describe(&self) -> String;

    /// Reads the key and the JWKS.
    async fn load(&self) -> Result<JwtFiles, Error>;

    /// Writes (publishes) the JWKS document, replacing the stored one.
    async fn store_jwks(&self, jwks_json: &[u8]) -> Result<(), Error>;

    /// Stores `key_pem` unless a key exists; returns the key stored afterwards.
    async fn store_key_if_absent(&self, key_pem: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error>;
}

/// SHA-256 over stored parts, each marked present or absent and length-prefixed, so that
/// no two different contents collide by moving bytes between parts.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = Option<&'a [u8]>>) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        match part {
            Some(p) => {
                ctx.update(&[1]);
                ctx.update(&(p.len() as u64).to_be_bytes());
                ctx.update(p);
            }
            None => ctx.update(&[0]),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The one watcher loop's clock: a tick every `interval` until `shutdown` turns true, and
/// a poll under way dropped at shutdown, so a stopping server writes nothing more.
///
/// ```ignore
/// let mut ticks = Ticks::new(interval, shutdown);
/// while ticks.next().await {
///     let Some(outcome) = ticks.or_shutdown(watcher.poll(..)).await else { break };
/// }
/// ```
#[derive(Debug)]
pub struct Ticks {
    interval: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Ticks {
    /// Ticks every `interval` until `shutdown`.
    pub fn new(interval: Duration, shutdown: watch::Receiver<bool>) -> Self {
        Self { interval, shutdown }
    }

    /// Waits one interval: `true` to poll again, `false` at shutdown.
    pub async fn next(&mut self) -> bool {
        if *self.shutdown.borrow() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(self.interval) => true,
            _ = self.shutdown.changed() => false,
        }
    }

    /// Runs `poll` unless shutdown comes first (then `None`; `poll` is dropped).
    pub async fn or_shutdown<T>(
        &mut self,
        poll: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            out = poll => Some(out),
            _ = self.shutdown.changed() => None,
        }
    }
}

/// Logs a store problem once, not on every poll while it lasts.
#[derive(Debug, Default)]
pub struct ProblemLog(Option<String>);

impl ProblemLog {
    /// Whether `problem` is new (then it is remembered).
    pub fn is_new(&mut self, problem: &str) -> bool {
        if self.0.as_deref() == Some(problem) {
            return false;
        }
        self.0 = Some(problem.to_owned());
        true
    }

    /// The problem is over.
    pub fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_parts_apart() {
        let fp = |p: &[Option<&[u8]>]| fingerprint(p.iter().copied());
        assert_eq!(fp(&[Some(b"ab"), None]), fp(&[Some(b"ab"), None]));
        assert_ne!(fp(&[Some(b"ab"), Some(b"")]), fp(&[Some(b"a"), Some(b"b")]));
        assert_ne!(fp(&[Some(b""), None]), fp(&[None, Some(b"")]));
        assert_ne!(fp(&[None]), fp(&[Some(b"")]));
    }

    #[tokio::test]
    async fn ticks_until_shutdown_and_a_hung_poll_ends_with_it() {
        let (tx, rx) = watch::channel(false);
        let mut ticks = Ticks::new(Duration::from_millis(20), rx);
        let start = std::time::Instant::now();
        assert!(ticks.next().await);
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert_eq!(ticks.or_shutdown(async { 7 }).await, Some(7));
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.send(true).unwrap();
            tx
        });
        // A poll that never ends (an API call that never answers) ends with the shutdown;
        // the timeout only keeps a broken loop from hanging the test run.
        let hung = ticks.or_shutdown(std::future::pending::<u8>());
        let out = tokio::time::timeout(Duration::from_secs(30), hung).await;
        assert_eq!(out, Ok(None));
        let _tx = stop.await.unwrap();
        assert!(!ticks.next().await, "no tick after shutdown");
    }

    #[test]
    fn a_problem_is_logged_once_while_it_lasts() {
        let mut log = ProblemLog::default();
        assert!(log.is_new("down"));
        assert!(!log.is_new("down"));
        assert!(log.is_new("forbidden"));
        log.clear();
        assert!(log.is_new("forbidden"));
    }
}
