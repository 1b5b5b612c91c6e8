//! Replacing files so that no reader ever sees half of a change, and nothing an attacker
//! planted in the directory is followed.
//!
//! [`write_file`] writes a temporary file with a random name, created exclusively (so an
//! existing file or symlink of that name is never opened, let alone followed), fsyncs it,
//! renames it over the target and fsyncs the directory. [`write_set`] replaces several files
//! as one: they are written into a fresh version directory and a `..data` symlink is swapped
//! to it in one rename, with each public name a symlink through `..data`, the layout the
//! kubelet uses for projected volumes. A reader that resolves `..data` once sees one version
//! of every file; the certificate and its key never disagree.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

/// The symlink naming the version directory in force.
pub const DATA_LINK: &str = "..data";

fn random_suffix() -> Result<String, Error> {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::Store("no randomness for a temporary file name".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `data` to `path` atomically with exactly `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), Error> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", random_suffix()?));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        // The mode passed to open is filtered by the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(&tmp, e))?;
        f.write_all(data).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        sync_dir(dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Points the symlink `link` at `target`, replacing whatever `link` was, in one rename.
fn swap_symlink(target: &Path, link: &Path) -> Result<(), Error> {
    let dir = parent(link);
    let tmp = dir.join(format!(".link.tmp-{}", random_suffix()?));
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, link).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(link, e)
    })
}

/// One file of a [`write_set`]: name (a plain file name), contents, mode.
pub type SetFile<'a> = (&'a str, &'a [u8], u32);

/// Replaces `files` in `dir` as one change (see the module docs).
pub fn write_set(dir: &Path, files: &[SetFile<'_>]) -> Result<(), Error> {
    for (name, _, _) in files {
        if name.is_empty() || name.starts_with("..") || name.contains('/') {
            return Err(Error::Store(format!("{name:?} is not a plain file name")));
        }
    }
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let version_name = format!("..{}", random_suffix()?);
    let version = dir.join(&version_name);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&version)
        .map_err(|e| Error::io(&version, e))?;
    let written = files
        .iter()
        .try_for_each(|(name, data, mode)| write_file(&version.join(name), data, *mode));
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&version);
        return Err(e);
    }
    sync_dir(&version);
    let data_link = dir.join(DATA_LINK);
    let previous: Option<PathBuf> = fs::read_link(&data_link).ok();
    if let Err(e) = swap_symlink(Path::new(&version_name), &data_link) {
        let _ = fs::remove_dir_all(&version);
        return Err(e);
    }
    for (name, _, _) in files {
        let public = dir.join(name);
        let target = Path::new(DATA_LINK).join(name);
        if fs::read_link(&public).ok().as_deref() != Some(target.as_path()) {
            swap_symlink(&target, &public)?;
        }
    }
    sync_dir(dir);
    // The previous version, only when it is one of ours (a `..` directory inside `dir`).
    if let Some(old) = previous.filter(|p| {
        p.components().count() == 1
            && p.to_string_lossy().starts_with("..")
            && *p != Path::new(&version_name)
    }) {
        let _ = fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn write_file_replaces_and_sets_the_mode_exactly() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("issuer.key");
        write_file(&p, b"one", 0o600).unwrap();
        write_file(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        // Nothing left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let p = d.path().join("issuer.key");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_file(&p, b"secret", 0o600).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(!fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&p).unwrap(), b"secret");
    }

    #[test]
    fn a_set_changes_as_one() {
        let d = tempfile::tempdir().unwrap();
        // A regular file from an older layout is taken over.
        fs::write(d.path().join("cert.pem"), b"old").unwrap();
        write_set(
            d.path(),
            &[("cert.pem", b"c1", 0o644), ("key.pem", b"k1", 0o600)],
        )
        .unwrap();
        let first = fs::read_link(d.path().join(DATA_LINK)).unwrap();
        assert_eq!(fs::read(d.path().join("cert.pem")).unwrap(), b"c1");
        assert_eq!(fs::read(d.path().join("key.pem")).unwrap(), b"k1");
        assert_eq!(
            fs::metadata(d.path().join("key.pem")).unwrap().mode() & 0o777,
            0o600
        );

        // A reader holding the old version directory keeps a consistent pair while the new
        // one goes in; afterwards the old version is gone.
        write_set(
            d.path(),
            &[("cert.pem", b"c2", 0o644), ("key.pem", b"k2", 0o600)],
        )
        .unwrap();
        let second = fs::read_link(d.path().join(DATA_LINK)).unwrap();
        assert_ne!(first, second);
        assert!(!d.path().join(&first).exists());
        assert_eq!(fs::read(d.path().join("cert.pem")).unwrap(), b"c2");
        assert_eq!(fs::read(d.path().join("key.pem")).unwrap(), b"k2");
        let entries: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries.len(), 4, "{entries:?}"); // ..data, the version, two links

        assert!(write_set(d.path(), &[("../x", b"", 0o644)]).is_err());
        assert!(write_set(d.path(), &[("..data", b"", 0o644)]).is_err());
    }
}
