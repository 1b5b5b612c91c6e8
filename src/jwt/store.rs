//! Where the JWT signing key and the published JWKS live.
//!
//! A small seam of its own next to [`crate::store::CredentialStore`], so the CA stores stay
//! as they are: the file store keeps `jwt.key` and `jwks.json` as files; the Kubernetes
//! store keeps them in the Secret `dapr-trust-bundle` (keys `jwt.key`, `jwks.json`) and
//! mirrors `jwks.json` into the ConfigMap `dapr-trust-bundle`.

use std::fs;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::store::atomic::write_file as write_atomic;
use crate::Error;

/// Largest key or JWKS file read.
const MAX_FILE: u64 = 1024 * 1024;

/// What the store holds now; either part may be missing.
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

/// `jwt.key` and `jwks.json` as files (standalone mode).
#[derive(Clone, Debug)]
pub struct FileJwtStore {
    key_path: PathBuf,
    jwks_path: PathBuf,
}

impl FileJwtStore {
    /// A store with the two paths.
    pub fn new(key_path: impl Into<PathBuf>, jwks_path: impl Into<PathBuf>) -> Self {
        Self {
            key_path: key_path.into(),
            jwks_path: jwks_path.into(),
        }
    }

    /// Path of the signing key.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Path of the JWKS.
    pub fn jwks_path(&self) -> &Path {
        &self.jwks_path
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
        Ok(m) if m.len() > MAX_FILE => {
            return Err(Error::Store(format!(
                "{} is {} bytes; files larger than 1 MiB are refused",
                path.display(),
                m.len()
            )))
        }
        Ok(_) => {}
    }
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn ensure_parent(path: &Path) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl JwtKeyStore for FileJwtStore {
    fn describe(&self) -> String {
        format!(
            "files {} and {}",
            self.key_path.display(),
            self.jwks_path.display()
        )
    }

    async fn load(&self) -> Result<JwtFiles, Error> {
        Ok(JwtFiles {
            key_pem: read_optional(&self.key_path)?.map(Zeroizing::new),
            jwks_json: read_optional(&self.jwks_path)?,
        })
    }

    async fn store_jwks(&self, jwks_json: &[u8]) -> Result<(), Error> {
        ensure_parent(&self.jwks_path)?;
        write_atomic(&self.jwks_path, jwks_json, 0o644)
    }

    async fn store_key_if_absent(&self, key_pem: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if let Some(existing) = read_optional(&self.key_path)? {
            return Ok(Zeroizing::new(existing));
        }
        ensure_parent(&self.key_path)?;
        write_atomic(&self.key_path, key_pem, 0o600)?;
        Ok(Zeroizing::new(key_pem.to_vec()))
    }
}
