//! Where CA material lives: files (standalone) or the Kubernetes Secret and ConfigMap
//! `dapr-trust-bundle` (kubernetes mode).
//!
//! Both stores follow the same rules: existing material is never overwritten at start;
//! material is generated only when none exists; when several replicas race to create it,
//! exactly one wins and every other one reads and uses the winner's.

use sigil_pki::CaFiles;

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
