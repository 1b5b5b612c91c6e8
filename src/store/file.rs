//! Key material in files: the CA in a directory with Dapr's file names (`ca.crt`,
//! `issuer.crt`, `issuer.key`, [`FileStore`]), the JWT signing key and JWKS in two named
//! files ([`FileJwtStore`]). Every write is atomic (see [`super::atomic`]): a temporary file
//! is written, fsynced and renamed over the target, then the directory is fsynced. Keys are
//! mode 0600.

use std::fs;
use std::path::{Path, PathBuf};

use sigil_pki::CaFiles;
use zeroize::Zeroizing;

use super::{CredentialStore, JwtFiles, JwtKeyStore};
use crate::Error;

/// File names inside the credentials directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileNames {
    /// Trust anchors (Dapr: `ca.crt`).
    pub ca: String,
    /// Issuer chain (Dapr: `issuer.crt`).
    pub issuer_cert: String,
    /// Issuer key (Dapr: `issuer.key`).
    pub issuer_key: String,
}

impl Default for FileNames {
    fn default() -> Self {
        Self {
            ca: "ca.crt".into(),
            issuer_cert: "issuer.crt".into(),
            issuer_key: "issuer.key".into(),
        }
    }
}

/// A credentials directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
    names: FileNames,
}

/// Largest file read from a store.
const MAX_FILE: u64 = 1024 * 1024;

impl FileStore {
    /// A store in `dir` with the given file names.
    pub fn new(dir: impl Into<PathBuf>, names: FileNames) -> Self {
        Self {
            dir: dir.into(),
            names,
        }
    }

    /// Path of the trust anchors file.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(&self.names.ca)
    }
    /// Path of the issuer chain file.
    pub fn issuer_cert_path(&self) -> PathBuf {
        self.dir.join(&self.names.issuer_cert)
    }
    /// Path of the issuer key file.
    pub fn issuer_key_path(&self) -> PathBuf {
        self.dir.join(&self.names.issuer_key)
    }

    /// Which of the three files exist.
    fn present(&self) -> [bool; 3] {
        [
            self.ca_path().exists(),
            self.issuer_cert_path().exists(),
            self.issuer_key_path().exists(),
        ]
    }

    /// Reads the three files synchronously.
    pub fn load_sync(&self) -> Result<Option<CaFiles>, Error> {
        match self.present() {
            [false, false, false] => return Ok(None),
            [true, true, true] => {}
            _ => {
                return Err(Error::Store(format!(
                    "{} holds only part of the CA material (need {}, {} and {}); refusing to generate over it",
                    self.dir.display(),
                    self.names.ca,
                    self.names.issuer_cert,
                    self.names.issuer_key
                )))
            }
        }
        Ok(Some(CaFiles {
            ca_crt: read_bounded(&self.ca_path())?,
            issuer_crt: read_bounded(&self.issuer_cert_path())?,
            issuer_key: Zeroizing::new(read_bounded(&self.issuer_key_path())?),
        }))
    }

    /// Writes the three files, replacing existing ones atomically (one by one).
    pub fn write_sync(&self, files: &CaFiles) -> Result<(), Error> {
        fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        write_atomic(&self.issuer_key_path(), &files.issuer_key, 0o600)?;
        write_atomic(&self.issuer_cert_path(), &files.issuer_crt, 0o644)?;
        write_atomic(&self.ca_path(), &files.ca_crt, 0o644)?;
        Ok(())
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, Error> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_FILE {
        return Err(Error::Store(format!(
            "{} is {} bytes; files larger than 1 MiB are refused",
            path.display(),
            meta.len()
        )));
    }
    fs::read(path).map_err(|e| Error::io(path, e))
}

/// [`read_bounded`], with a missing file as `None`.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    match read_bounded(path) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        r => r.map(Some),
    }
}

fn ensure_parent(path: &Path) -> Result<(), Error> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
        }
        _ => Ok(()),
    }
}

use super::atomic::write_file as write_atomic;

#[async_trait::async_trait]
impl CredentialStore for FileStore {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    async fn load(&self) -> Result<Option<CaFiles>, Error> {
        self.load_sync()
    }

    async fn store_if_absent(&self, files: &CaFiles) -> Result<CaFiles, Error> {
        if let Some(existing) = self.load_sync()? {
            return Ok(existing);
        }
        self.write_sync(files)?;
        Ok(files.clone())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use time::OffsetDateTime;

    fn files() -> CaFiles {
        let p = sigil_pki::CaParams::new("public".parse().unwrap(), "default".parse().unwrap());
        sigil_pki::Authority::generate(&p, OffsetDateTime::now_utc()).unwrap()
    }

    #[tokio::test]
    async fn stores_once_with_private_key_mode_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("creds"), FileNames::default());
        assert!(store.load().await.unwrap().is_none());
        let first = files();
        let kept = store.store_if_absent(&first).await.unwrap();
        assert_eq!(kept.ca_crt, first.ca_crt);
        let mode = fs::metadata(store.issuer_key_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = files();
        let kept = store.store_if_absent(&second).await.unwrap();
        assert_eq!(kept.ca_crt, first.ca_crt, "existing material was replaced");
        assert_eq!(fs::read(store.ca_path()).unwrap(), first.ca_crt);
        // No temporary files are left behind.
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("creds"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[tokio::test]
    async fn partial_material_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path(), FileNames::default());
        fs::write(store.ca_path(), b"x").unwrap();
        let e = store
            .store_if_absent(&files())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("only part of the CA material"), "{e}");
        assert_eq!(fs::read(store.ca_path()).unwrap(), b"x");
    }
}
