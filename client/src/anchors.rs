//! Trust anchors: the roots peers and Sentry are verified against, reloaded without a
//! restart.
//!
//! The set in force is the union of the *configured* roots (a file that is polled, PEM in
//! memory, or `DAPR_TRUST_ANCHORS`) and, unless turned off, the roots Sentry sent with the
//! last accepted certificate. Each change produces a new immutable [`AnchorSet`] with a
//! higher version; verifiers read the current set on every handshake, so a root added to
//! the file is trusted by the next handshake and a root removed is no longer trusted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, TrustAnchor};
use tokio::sync::watch;

use crate::Error;

/// Environment variable daprd reads its trust anchors (PEM) from.
pub const TRUST_ANCHORS_ENV: &str = "DAPR_TRUST_ANCHORS";

/// Largest anchors file read.
const MAX_ANCHORS_BYTES: u64 = 1024 * 1024;

/// Where the configured trust anchors come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustAnchorSource {
    /// A PEM file, polled for changes (Kubernetes updates mounted ConfigMaps in place).
    File(PathBuf),
    /// PEM held in memory; never changes.
    Pem(Vec<u8>),
    /// PEM from the `DAPR_TRUST_ANCHORS` environment variable, read once at start.
    Env,
}

impl TrustAnchorSource {
    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            TrustAnchorSource::File(p) => p.display().to_string(),
            TrustAnchorSource::Pem(_) => "in-memory PEM".into(),
            TrustAnchorSource::Env => TRUST_ANCHORS_ENV.into(),
        }
    }

    /// Reads the raw PEM now.
    pub(crate) fn read(&self) -> Result<Vec<u8>, Error> {
        let err = |reason: String| Error::TrustAnchors {
            source_name: self.describe(),
            reason,
        };
        match self {
            TrustAnchorSource::File(p) => read_file(p).map_err(err),
            TrustAnchorSource::Pem(pem) => Ok(pem.clone()),
            TrustAnchorSource::Env => std::env::var(TRUST_ANCHORS_ENV)
                .map(String::into_bytes)
                .map_err(|e| err(e.to_string())),
        }
    }

    /// Reads and checks the roots now.
    pub fn load(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        let pem = self.read()?;
        parse_roots(&pem).map_err(|reason| Error::TrustAnchors {
            source_name: self.describe(),
            reason,
        })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_ANCHORS_BYTES {
        return Err(format!(
            "{} bytes is more than the 1 MiB accepted",
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Parses a PEM bundle of roots: every block a self-signed CA certificate that webpki can
/// use as an anchor.
pub(crate) fn parse_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let bundle = sigil_pki::TrustBundle::from_pem(pem).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for der in bundle.roots() {
        let der = CertificateDer::from(der.clone());
        webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| format!("root cannot be used as a trust anchor: {e}"))?;
        out.push(der);
    }
    Ok(out)
}

/// One immutable version of the trust anchors in force.
#[derive(Debug)]
pub struct AnchorSet {
    version: u64,
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl AnchorSet {
    fn new(version: u64, roots: Vec<CertificateDer<'static>>) -> Self {
        // Roots were checked when they entered; one that fails here is skipped.
        let anchors = roots
            .iter()
            .filter_map(|r| {
                webpki::anchor_from_trusted_cert(r)
                    .ok()
                    .map(|a| a.to_owned())
            })
            .collect();
        Self {
            version,
            roots,
            anchors,
        }
    }

    /// Increases with every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The roots, DER.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Whether this root (DER) is trusted.
    pub fn contains(&self, der: &[u8]) -> bool {
        self.roots.iter().any(|r| r.as_ref() == der)
    }

    /// The roots as one PEM blob (what goes into `ca.crt`).
    pub fn to_pem(&self) -> String {
        sigil_pki::pem_bundle::to_pem(&self.roots)
    }

    pub(crate) fn webpki_anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }
}

#[derive(Debug, Default)]
struct Parts {
    configured: Vec<CertificateDer<'static>>,
    from_ca: Vec<CertificateDer<'static>>,
    version: u64,
}

impl Parts {
    fn union(&self) -> Vec<CertificateDer<'static>> {
        let mut out: Vec<CertificateDer<'static>> = Vec::new();
        for r in self.configured.iter().chain(self.from_ca.iter()) {
            if !out.iter().any(|o| o == r) {
                out.push(r.clone());
            }
        }
        out
    }
}

/// The shared, reloadable trust anchors of one source.
#[derive(Debug)]
pub struct TrustAnchors {
    parts: std::sync::Mutex<Parts>,
    current: watch::Sender<Arc<AnchorSet>>,
}

impl TrustAnchors {
    /// Starts with `configured` roots.
    pub fn new(configured: Vec<CertificateDer<'static>>) -> Self {
        let parts = Parts {
            configured,
            from_ca: Vec::new(),
            version: 1,
        };
        let set = Arc::new(AnchorSet::new(1, parts.union()));
        Self {
            parts: std::sync::Mutex::new(parts),
            current: watch::Sender::new(set),
        }
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<AnchorSet> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every new set.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AnchorSet>> {
        self.current.subscribe()
    }

    /// Replaces the configured roots. Returns whether the set in force changed.
    pub fn set_configured(&self, roots: Vec<CertificateDer<'static>>) -> bool {
        self.update(|p| p.configured = roots)
    }

    /// Replaces the roots learnt from the CA's last response.
    pub fn set_from_ca(&self, roots: Vec<CertificateDer<'static>>) -> bool {
        self.update(|p| p.from_ca = roots)
    }

    fn update(&self, f: impl FnOnce(&mut Parts)) -> bool {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let before = parts.union();
        f(&mut parts);
        let after = parts.union();
        if before == after {
            return false;
        }
        parts.version += 1;
        let set = Arc::new(AnchorSet::new(parts.version, after));
        self.current.send_replace(set);
        true
    }
}

/// Remembers what a polled file held, so only real changes are parsed and applied.
#[derive(Debug, Default)]
pub(crate) struct FilePoll {
    last: Option<Vec<u8>>,
    last_error: Option<String>,
}

/// What one poll of the anchors file found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PollResult {
    Unchanged,
    Applied,
    /// The file is unreadable or invalid; the previous anchors stay in force.
    Failed(String),
}

impl FilePoll {
    pub(crate) fn new(initial: Vec<u8>) -> Self {
        Self {
            last: Some(initial),
            last_error: None,
        }
    }

    pub(crate) fn poll(
        &mut self,
        source: &TrustAnchorSource,
        anchors: &TrustAnchors,
    ) -> PollResult {
        let bytes = match source.read() {
            Ok(b) => b,
            Err(e) => return self.failed(e.to_string()),
        };
        if self.last.as_deref() == Some(&bytes[..]) {
            return match &self.last_error {
                Some(e) => PollResult::Failed(e.clone()),
                None => PollResult::Unchanged,
            };
        }
        self.last = Some(bytes.clone());
        match parse_roots(&bytes) {
            Ok(roots) => {
                self.last_error = None;
                anchors.set_configured(roots);
                PollResult::Applied
            }
            Err(reason) => self.failed(
                Error::TrustAnchors {
                    source_name: source.describe(),
                    reason,
                }
                .to_string(),
            ),
        }
    }

    fn failed(&mut self, e: String) -> PollResult {
        self.last_error = Some(e.clone());
        PollResult::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn root_pem() -> Vec<u8> {
        let p = sigil_pki::CaParams::new("public".parse().unwrap(), "default".parse().unwrap());
        sigil_pki::Authority::generate(&p, time::OffsetDateTime::now_utc())
            .unwrap()
            .ca_crt
    }

    #[test]
    fn file_changes_are_applied_and_bad_contents_keep_the_old_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        let a = root_pem();
        let b = root_pem();
        std::fs::write(&path, &a).unwrap();
        let source = TrustAnchorSource::File(path.clone());
        let anchors = TrustAnchors::new(source.load().unwrap());
        let mut poll = FilePoll::new(a.clone());
        assert_eq!(poll.poll(&source, &anchors), PollResult::Unchanged);
        let v1 = anchors.current().version();

        std::fs::write(&path, [a.clone(), b.clone()].concat()).unwrap();
        assert_eq!(poll.poll(&source, &anchors), PollResult::Applied);
        assert_eq!(anchors.current().roots().len(), 2);
        assert!(anchors.current().version() > v1);

        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            poll.poll(&source, &anchors),
            PollResult::Failed(_)
        ));
        assert_eq!(
            anchors.current().roots().len(),
            2,
            "bad file replaced good anchors"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            poll.poll(&source, &anchors),
            PollResult::Failed(_)
        ));

        std::fs::write(&path, &b).unwrap();
        assert_eq!(poll.poll(&source, &anchors), PollResult::Applied);
        let set = anchors.current();
        assert_eq!(set.roots().len(), 1);
        let b_der = parse_roots(&b).unwrap().remove(0);
        assert!(set.contains(&b_der));
        assert_eq!(parse_roots(set.to_pem().as_bytes()).unwrap(), vec![b_der]);
    }

    #[test]
    fn roots_from_the_ca_are_a_union_and_replaced_as_a_whole() {
        let a = parse_roots(&root_pem()).unwrap();
        let b = parse_roots(&root_pem()).unwrap();
        let anchors = TrustAnchors::new(a.clone());
        let mut rx = anchors.subscribe();
        assert!(anchors.set_from_ca([a.clone(), b.clone()].concat()));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert_eq!(anchors.current().roots().len(), 2, "duplicates not merged");
        assert!(!anchors.set_from_ca([b.clone(), a.clone()].concat()));
        assert!(!rx.has_changed().unwrap());
        assert!(anchors.set_from_ca(a.clone()));
        assert_eq!(anchors.current().roots().len(), 1);
    }

    #[test]
    fn non_roots_and_junk_are_refused() {
        let p = sigil_pki::CaParams::new("public".parse().unwrap(), "default".parse().unwrap());
        let files = sigil_pki::Authority::generate(&p, time::OffsetDateTime::now_utc()).unwrap();
        assert!(parse_roots(&files.issuer_crt).is_err());
        assert!(parse_roots(b"").is_err());
        let e = TrustAnchorSource::Pem(b"nope".to_vec()).load().unwrap_err();
        assert!(e.to_string().contains("in-memory PEM"), "{e}");
    }
}
