//! CA material in the cluster: Secret `dapr-trust-bundle` (`ca.crt`, `issuer.crt`,
//! `issuer.key`) and ConfigMap `dapr-trust-bundle` (`ca.crt`, for everyone who needs the
//! trust anchors but must not read the key), in Sigil's namespace.
//!
//! The Secret is the source of truth. The ConfigMap is made to match it (created when
//! missing, rewritten when its `ca.crt` differs); a disagreement never causes a new CA to be
//! generated (Dapr does, and overwrites users' certificates: #9563). Every write carries the
//! API server's conflict detection: a create fails with 409 when the object appeared in
//! between, an update fails with 409 when the `resourceVersion` it was based on is stale.
//! The loser re-reads and adopts what the winner wrote, so several replicas starting at
//! once on an empty Secret end up with one CA (Dapr #2187). A Secret holding only some of
//! the three keys is an error for a person to resolve. Key material is never logged.
//!
//! An empty Secret means "first start" only when nothing shows that a CA existed before:
//! when the ConfigMap still holds trust anchors, or the Secret carries the annotation Sigil
//! writes with the material, the Secret was emptied (a `helm upgrade --force`, a GitOps
//! replace, a hand edit) and a new root would cut every running workload off. Start is then
//! refused with [`Error::CaMaterialLost`]; a running replica keeps serving and puts its
//! material back (see `rotation`). The ConfigMap is a courtesy copy: failing to write it is a
//! warning and a metric, never a failed load.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, Client};
use sigil_pki::CaFiles;
use zeroize::{Zeroize, Zeroizing};

use super::names::{
    ANNOTATION_CA_STORED, KEY_CA, KEY_ISSUER_CERT, KEY_ISSUER_KEY, TRUST_BUNDLE_NAME,
};
use super::CredentialStore;
use crate::cluster::{self, ApiFailure};
use crate::Error;

/// How many times a write is retried after losing a conflict.
const MAX_ATTEMPTS: usize = 5;

/// The Secret and ConfigMap `dapr-trust-bundle` in one namespace.
pub struct KubernetesStore {
    client: Client,
    namespace: String,
    timeout: Duration,
    // resourceVersion of the Secret the ConfigMap was last made to match.
    synced: Mutex<Option<String>>,
    // Counts failed ConfigMap writes; the last failure, so that a repeated one is logged once.
    mirror_failures: Option<prometheus_client::metrics::counter::Counter>,
    last_mirror_failure: Mutex<Option<String>>,
}

impl std::fmt::Debug for KubernetesStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What the Secret holds.
enum SecretState {
    Missing,
    /// Present but without any of the three keys (Helm creates it so).
    Empty(Box<Secret>),
    /// All three keys; the Secret's resourceVersion.
    Full(CaFiles, String),
}

/// What writing one ConfigMap key did.
enum Mirrored {
    Unchanged,
    Created,
    /// The key was missing or empty.
    Filled,
    /// The key held something else.
    Replaced,
}

fn wipe(secret: &mut Secret) {
    if let Some(data) = secret.data.as_mut() {
        for v in data.values_mut() {
            v.0.zeroize();
        }
    }
}

fn non_empty(data: Option<&BTreeMap<String, ByteString>>, key: &str) -> Option<Vec<u8>> {
    data.and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .filter(|b| !b.is_empty())
}

impl KubernetesStore {
    /// The store in `namespace`; `timeout` bounds each API call.
    pub fn new(client: Client, namespace: impl Into<String>, timeout: Duration) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            timeout,
            synced: Mutex::new(None),
            mirror_failures: None,
            last_mirror_failure: Mutex::new(None),
        }
    }

    /// Counts failed writes of the ConfigMap copy in `counter`.
    pub fn with_mirror_failures(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        self.mirror_failures = Some(counter);
        self
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn api_error(&self, what: &str, e: ApiFailure) -> Error {
        Error::Store(format!(
            "{what} {}/{TRUST_BUNDLE_NAME}: {}",
            self.namespace,
            match e {
                ApiFailure::NotFound => "not found".to_string(),
                ApiFailure::Conflict => "conflict".to_string(),
                ApiFailure::Forbidden(m) | ApiFailure::Other(m) => m,
            }
        ))
    }

    async fn read_secret(&self) -> Result<SecretState, Error> {
        let mut secret =
            match cluster::call(self.timeout, self.secrets().get(TRUST_BUNDLE_NAME)).await {
                Ok(s) => s,
                Err(ApiFailure::NotFound) => return Ok(SecretState::Missing),
                Err(e) => return Err(self.api_error("reading Secret", e)),
            };
        let data = secret.data.as_ref();
        let ca = non_empty(data, KEY_CA);
        let cert = non_empty(data, KEY_ISSUER_CERT);
        let key = non_empty(data, KEY_ISSUER_KEY).map(Zeroizing::new);
        let state = match (ca, cert, key) {
            (None, None, None) => return Ok(SecretState::Empty(Box::new(secret))),
            (Some(ca_crt), Some(issuer_crt), Some(issuer_key)) => SecretState::Full(
                CaFiles {
                    ca_crt,
                    issuer_crt,
                    issuer_key,
                },
                secret.metadata.resource_version.clone().unwrap_or_default(),
            ),
            (ca, cert, key) => {
                let missing: Vec<&str> = [
                    (KEY_CA, ca.is_none()),
                    (KEY_ISSUER_CERT, cert.is_none()),
                    (KEY_ISSUER_KEY, key.is_none()),
                ]
                .iter()
                .filter(|(_, m)| *m)
                .map(|(k, _)| *k)
                .collect();
                wipe(&mut secret);
                return Err(Error::CaMaterialLost(format!(
                    "Secret {ns}/{TRUST_BUNDLE_NAME} holds only part of the CA material (missing: {}); refusing to generate over it. {}",
                    missing.join(", "),
                    self.how_to_restore(),
                    ns = self.namespace,
                )));
            }
        };
        wipe(&mut secret);
        Ok(state)
    }

    fn how_to_restore(&self) -> String {
        format!(
            "To restore, put ca.crt, issuer.crt and issuer.key back from your backup (kubectl -n {ns} create secret generic {TRUST_BUNDLE_NAME} --from-file=ca.crt --from-file=issuer.crt --from-file=issuer.key --dry-run=client -o yaml | kubectl apply -f -). To start over with a new CA on purpose (every workload must then get new certificates), stop every Sigil replica, remove ca.crt from ConfigMap {ns}/{TRUST_BUNDLE_NAME} and the annotation {ANNOTATION_CA_STORED} from the Secret, then start Sigil",
            ns = self.namespace
        )
    }

    /// What shows that CA material existed before the Secret became empty, if anything:
    /// Sigil's annotation on the Secret, or trust anchors left in the ConfigMap.
    async fn earlier_material(&self, secret: Option<&Secret>) -> Result<Option<String>, Error> {
        let annotated = secret
            .and_then(|s| s.metadata.annotations.as_ref())
            .is_some_and(|a| a.contains_key(ANNOTATION_CA_STORED));
        if annotated {
            return Ok(Some(format!(
                "the Secret still carries the annotation {ANNOTATION_CA_STORED} that Sigil writes with the CA material"
            )));
        }
        match cluster::call(self.timeout, self.config_maps().get(TRUST_BUNDLE_NAME)).await {
            Ok(cm) => {
                let anchors = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(KEY_CA))
                    .is_some_and(|v| !v.trim().is_empty());
                Ok(anchors.then(|| {
                    format!(
                        "ConfigMap {}/{TRUST_BUNDLE_NAME} still holds the trust anchors (ca.crt) copied from it",
                        self.namespace
                    )
                }))
            }
            Err(ApiFailure::NotFound) => Ok(None),
            Err(ApiFailure::Forbidden(m)) => {
                tracing::warn!(namespace = %self.namespace, error = %m, "cannot read ConfigMap {TRUST_BUNDLE_NAME} to check whether a CA existed before; relying on the Secret's annotation");
                Ok(None)
            }
            Err(e) => Err(self.api_error("reading ConfigMap", e)),
        }
    }

    /// `Ok(None)` for an empty store that never held a CA; the loss otherwise.
    async fn empty_store(&self, secret: Option<&Secret>) -> Result<Option<CaFiles>, Error> {
        match self.earlier_material(secret).await? {
            None => Ok(None),
            Some(evidence) => Err(Error::CaMaterialLost(format!(
                "Secret {ns}/{TRUST_BUNDLE_NAME} {state}, but it held CA material before: {evidence}. Sigil does not generate a new root over it, because workloads holding certificates from the old root would stop trusting new ones. {}",
                self.how_to_restore(),
                ns = self.namespace,
                state = if secret.is_some() { "holds no CA material" } else { "is missing" },
            ))),
        }
    }

    /// [`Self::sync_config_map`], with a failure turned into a warning and a count: the
    /// Secret was read, so the load stands.
    async fn mirror(&self, ca_crt: &[u8], secret_version: &str) {
        match self.sync_config_map(ca_crt, secret_version).await {
            Ok(()) => {
                *self
                    .last_mirror_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
            }
            Err(e) => {
                if let Some(c) = &self.mirror_failures {
                    c.inc();
                }
                let text = e.to_string();
                let mut last = self
                    .last_mirror_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if last.as_deref() != Some(text.as_str()) {
                    tracing::warn!(namespace = %self.namespace, error = %text, "could not copy the trust anchors into ConfigMap {TRUST_BUNDLE_NAME}; the CA is loaded and serving, workloads that read the ConfigMap see the old anchors until this succeeds (the chart grants get and update on it)");
                    *last = Some(text);
                }
            }
        }
    }

    /// Makes the ConfigMap's `ca.crt` equal to the Secret's, unless that was already done
    /// for this version of the Secret.
    async fn sync_config_map(&self, ca_crt: &[u8], secret_version: &str) -> Result<(), Error> {
        let done = self
            .synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(secret_version);
        if done && !secret_version.is_empty() {
            return Ok(());
        }
        let want = std::str::from_utf8(ca_crt)
            .map_err(|_| Error::Store("the Secret's ca.crt is not PEM text".into()))?;
        match self.put_config_map_entry(KEY_CA, want).await? {
            Mirrored::Unchanged => {}
            Mirrored::Created => {
                tracing::info!(namespace = %self.namespace, "created ConfigMap {TRUST_BUNDLE_NAME} with the trust anchors from the Secret")
            }
            Mirrored::Filled => {
                tracing::info!(namespace = %self.namespace, "filled ConfigMap {TRUST_BUNDLE_NAME} with the trust anchors from the Secret")
            }
            Mirrored::Replaced => {
                tracing::warn!(namespace = %self.namespace, "ConfigMap {TRUST_BUNDLE_NAME} held different trust anchors than the Secret; re-synced it from the Secret (the Secret is the source of truth)")
            }
        }
        self.mark_synced(secret_version);
        Ok(())
    }

    /// Sets one key of the ConfigMap to `want` (creating the ConfigMap when missing), with
    /// conflict detection; other keys are kept.
    async fn put_config_map_entry(&self, key: &str, want: &str) -> Result<Mirrored, Error> {
        for _ in 0..MAX_ATTEMPTS {
            let api = self.config_maps();
            match cluster::call(self.timeout, api.get(TRUST_BUNDLE_NAME)).await {
                Err(ApiFailure::NotFound) => {
                    let cm = ConfigMap {
                        metadata: self.meta(None),
                        data: Some(BTreeMap::from([(key.to_string(), want.to_string())])),
                        ..Default::default()
                    };
                    match cluster::call(self.timeout, api.create(&PostParams::default(), &cm)).await
                    {
                        Ok(_) => return Ok(Mirrored::Created),
                        Err(ApiFailure::Conflict) => continue,
                        Err(e) => return Err(self.api_error("creating ConfigMap", e)),
                    }
                }
                Err(e) => return Err(self.api_error("reading ConfigMap", e)),
                Ok(mut cm) => {
                    let current = cm.data.as_ref().and_then(|d| d.get(key));
                    if current.map(String::as_str) == Some(want) {
                        return Ok(Mirrored::Unchanged);
                    }
                    let had_value = current.is_some_and(|c| !c.trim().is_empty());
                    cm.data
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key.to_string(), want.to_string());
                    match cluster::call(
                        self.timeout,
                        api.replace(TRUST_BUNDLE_NAME, &PostParams::default(), &cm),
                    )
                    .await
                    {
                        Ok(_) if had_value => return Ok(Mirrored::Replaced),
                        Ok(_) => return Ok(Mirrored::Filled),
                        Err(ApiFailure::Conflict) => continue,
                        Err(e) => return Err(self.api_error("updating ConfigMap", e)),
                    }
                }
            }
        }
        Err(Error::Store(format!(
            "ConfigMap {}/{TRUST_BUNDLE_NAME}: gave up after {MAX_ATTEMPTS} conflicting writes",
            self.namespace
        )))
    }

    fn mark_synced(&self, secret_version: &str) {
        *self.synced.lock().unwrap_or_else(|e| e.into_inner()) = Some(secret_version.to_owned());
    }

    fn meta(&self, from: Option<ObjectMeta>) -> ObjectMeta {
        from.unwrap_or_else(|| ObjectMeta {
            name: Some(TRUST_BUNDLE_NAME.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app".to_string(),
                "dapr-sentry".to_string(),
            )])),
            ..Default::default()
        })
    }

    fn fill(secret: &mut Secret, files: &CaFiles) {
        let digest = ring::digest::digest(&ring::digest::SHA256, &files.ca_crt);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(ANNOTATION_CA_STORED.into(), format!("sha256:{hex}"));
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        data.insert(KEY_CA.into(), ByteString(files.ca_crt.clone()));
        data.insert(KEY_ISSUER_CERT.into(), ByteString(files.issuer_crt.clone()));
        data.insert(KEY_ISSUER_KEY.into(), ByteString(files.issuer_key.to_vec()));
    }
}

#[async_trait::async_trait]
impl CredentialStore for KubernetesStore {
    fn describe(&self) -> String {
        format!("secret {}/{TRUST_BUNDLE_NAME}", self.namespace)
    }

    async fn load(&self) -> Result<Option<CaFiles>, Error> {
        match self.read_secret().await? {
            SecretState::Missing => self.empty_store(None).await,
            SecretState::Empty(secret) => self.empty_store(Some(&secret)).await,
            SecretState::Full(files, version) => {
                self.mirror(&files.ca_crt, &version).await;
                Ok(Some(files))
            }
        }
    }

    async fn store_if_absent(&self, files: &CaFiles) -> Result<CaFiles, Error> {
        for _ in 0..MAX_ATTEMPTS {
            let written = match self.read_secret().await? {
                SecretState::Full(existing, version) => {
                    self.mirror(&existing.ca_crt, &version).await;
                    return Ok(existing);
                }
                SecretState::Missing => {
                    let mut secret = Secret {
                        metadata: self.meta(None),
                        type_: Some("Opaque".into()),
                        ..Default::default()
                    };
                    Self::fill(&mut secret, files);
                    let r = cluster::call(
                        self.timeout,
                        self.secrets().create(&PostParams::default(), &secret),
                    )
                    .await;
                    wipe(&mut secret);
                    r
                }
                SecretState::Empty(mut secret) => {
                    // The update carries the resourceVersion just read: if another replica
                    // wrote in between, the API server answers 409.
                    Self::fill(&mut secret, files);
                    let r = cluster::call(
                        self.timeout,
                        self.secrets()
                            .replace(TRUST_BUNDLE_NAME, &PostParams::default(), &secret),
                    )
                    .await;
                    wipe(&mut secret);
                    r
                }
            };
            match written {
                Ok(mut stored) => {
                    let version = stored.metadata.resource_version.clone().unwrap_or_default();
                    wipe(&mut stored);
                    tracing::info!(store = %self.describe(), "stored CA material");
                    self.mirror(&files.ca_crt, &version).await;
                    return Ok(files.clone());
                }
                Err(ApiFailure::Conflict) => {
                    tracing::info!(store = %self.describe(), "another instance wrote the Secret first; reading its material");
                    continue;
                }
                Err(e) => return Err(self.api_error("writing Secret", e)),
            }
        }
        Err(Error::Store(format!(
            "{}: gave up after {MAX_ATTEMPTS} conflicting writes",
            self.describe()
        )))
    }
}

/// The JWT signing key and the JWKS in the same Secret `dapr-trust-bundle` (keys named as
/// `--jwt-key-filename` and `--jwks-filename`: `jwt.key` and `jwks.json` by default), with
/// the JWKS's public form mirrored into the ConfigMap, where verifiers that must not read
/// the Secret find it.
///
/// Every Secret write is a read-modify-write carrying the `resourceVersion` it read, so it
/// never drops what a concurrent writer (the CA store, another replica) put in other keys.
pub struct KubernetesJwtStore {
    objects: KubernetesStore,
    key_name: String,
    jwks_name: String,
}

impl std::fmt::Debug for KubernetesJwtStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&super::JwtKeyStore::describe(self))
    }
}

impl KubernetesJwtStore {
    /// The store in `namespace`, with the two Secret keys; `timeout` bounds each API call.
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        timeout: Duration,
        key_name: impl Into<String>,
        jwks_name: impl Into<String>,
    ) -> Self {
        Self {
            objects: KubernetesStore::new(client, namespace, timeout),
            key_name: key_name.into(),
            jwks_name: jwks_name.into(),
        }
    }

    async fn read_secret(&self) -> Result<Option<Secret>, Error> {
        let o = &self.objects;
        match cluster::call(o.timeout, o.secrets().get(TRUST_BUNDLE_NAME)).await {
            Ok(s) => Ok(Some(s)),
            Err(ApiFailure::NotFound) => Ok(None),
            Err(e) => Err(o.api_error("reading Secret", e)),
        }
    }

    /// Sets the Secret's `key` to `value`, creating the Secret when missing. With
    /// `keep_existing`, a non-empty value already there wins and is returned instead.
    async fn put_secret_entry(
        &self,
        key: &str,
        value: &[u8],
        keep_existing: bool,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let o = &self.objects;
        for _ in 0..MAX_ATTEMPTS {
            let written = match self.read_secret().await? {
                Some(mut secret) => {
                    if keep_existing {
                        if let Some(existing) = non_empty(secret.data.as_ref(), key) {
                            wipe(&mut secret);
                            return Ok(Zeroizing::new(existing));
                        }
                    }
                    secret
                        .data
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key.to_string(), ByteString(value.to_vec()));
                    // Carries the resourceVersion just read: a write in between is a 409.
                    let r = cluster::call(
                        o.timeout,
                        o.secrets()
                            .replace(TRUST_BUNDLE_NAME, &PostParams::default(), &secret),
                    )
                    .await;
                    wipe(&mut secret);
                    r
                }
                None => {
                    let mut secret = Secret {
                        metadata: o.meta(None),
                        type_: Some("Opaque".into()),
                        data: Some(BTreeMap::from([(
                            key.to_string(),
                            ByteString(value.to_vec()),
                        )])),
                        ..Default::default()
                    };
                    let r = cluster::call(
                        o.timeout,
                        o.secrets().create(&PostParams::default(), &secret),
                    )
                    .await;
                    wipe(&mut secret);
                    r
                }
            };
            match written {
                Ok(mut stored) => {
                    wipe(&mut stored);
                    return Ok(Zeroizing::new(value.to_vec()));
                }
                Err(ApiFailure::Conflict) => continue,
                Err(e) => return Err(o.api_error("writing Secret", e)),
            }
        }
        Err(Error::Store(format!(
            "Secret {}/{TRUST_BUNDLE_NAME}: gave up after {MAX_ATTEMPTS} conflicting writes",
            o.namespace
        )))
    }

    /// Writes the public form of the stored JWKS into the ConfigMap.
    async fn mirror_jwks(&self, stored_jwks: &[u8]) -> Result<(), Error> {
        let public = sigil_pki::JwksDocument::parse(stored_jwks)
            .map_err(|e| {
                Error::Store(format!(
                    "the JWKS in Secret {}/{TRUST_BUNDLE_NAME} key {} is not usable: {e}",
                    self.objects.namespace, self.jwks_name
                ))
            })?
            .to_public_json();
        let public = String::from_utf8(public)
            .map_err(|_| Error::Store("the public JWKS is not UTF-8".into()))?;
        if !matches!(
            self.objects
                .put_config_map_entry(&self.jwks_name, &public)
                .await?,
            Mirrored::Unchanged
        ) {
            tracing::info!(namespace = %self.objects.namespace, key = %self.jwks_name, "published the JWKS in ConfigMap {TRUST_BUNDLE_NAME}");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl super::JwtKeyStore for KubernetesJwtStore {
    fn describe(&self) -> String {
        format!(
            "secret {}/{TRUST_BUNDLE_NAME} (keys {} and {})",
            self.objects.namespace, self.key_name, self.jwks_name
        )
    }

    async fn load(&self) -> Result<super::JwtFiles, Error> {
        let Some(mut secret) = self.read_secret().await? else {
            return Ok(super::JwtFiles::default());
        };
        let data = secret.data.as_ref();
        let files = super::JwtFiles {
            key_pem: non_empty(data, &self.key_name).map(Zeroizing::new),
            jwks_json: non_empty(data, &self.jwks_name),
        };
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        wipe(&mut secret);
        // The Secret is the source of truth for the ConfigMap's copy too; re-check it only
        // when the Secret changed.
        if let Some(jwks) = &files.jwks_json {
            let done = self
                .objects
                .synced
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_deref()
                == Some(version.as_str());
            if !done || version.is_empty() {
                self.mirror_jwks(jwks).await?;
                self.objects.mark_synced(&version);
            }
        }
        Ok(files)
    }

    async fn store_jwks(&self, jwks_json: &[u8]) -> Result<(), Error> {
        self.put_secret_entry(&self.jwks_name, jwks_json, false)
            .await?;
        // Sigil signs with a new key only after this returns, so the mirror is written
        // before too.
        self.mirror_jwks(jwks_json).await
    }

    async fn store_key_if_absent(&self, key_pem: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let stored = self.put_secret_entry(&self.key_name, key_pem, true).await?;
        if stored.as_slice() != key_pem {
            tracing::info!(store = %super::JwtKeyStore::describe(self), "another instance stored a JWT signing key first; using it");
        }
        Ok(stored)
    }
}
