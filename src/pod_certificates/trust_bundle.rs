//! Sigil's trust anchors as a ClusterTrustBundle for the signer, so that pods can pair their
//! `podCertificate` volume with a `clusterTrustBundle` projection (by signer name).
//!
//! One object, named `<signer with / as :>:trust-anchors`, holding every root of the trust
//! bundle in force (old and new together during a root rotation, each once, CA certificates
//! only, no PEM headers). Written at start and after every change of the CA material, and
//! checked again every [`RESYNC`]; several replicas write the same content, so a conflict only
//! means another replica was first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{ClusterTrustBundle, ClusterTrustBundleSpec};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use sigil_pki::TrustBundle;
use tokio::sync::watch;

use super::signer_name::SignerName;
use crate::cluster::{self, ApiFailure};
use crate::rotation::CaState;

/// Suffix of the bundle's name.
pub const SUFFIX: &str = "trust-anchors";
/// Label on the bundle, for `clusterTrustBundle.labelSelector`.
pub const LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "sigil");
/// How often the published bundle is compared with the CA in force.
const RESYNC: Duration = Duration::from_secs(60);
/// Wait after a failed write.
const RETRY: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// The ClusterTrustBundle name for `signer`.
pub fn bundle_name(signer: &SignerName) -> String {
    format!("{}:{SUFFIX}", signer.as_str().replace('/', ":"))
}

/// The bundle's `trustBundle`: each root once, in the trust bundle's order.
pub fn bundle_pem(anchors: &TrustBundle) -> String {
    let mut seen = std::collections::HashSet::new();
    anchors
        .roots()
        .iter()
        .filter(|der| seen.insert(der.as_slice()))
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
        .collect()
}

/// Creates or updates the bundle; `Ok(true)` when something was written.
async fn publish(
    client: &Client,
    signer: &SignerName,
    trust_bundle: String,
    timeout: Duration,
) -> Result<bool, ApiFailure> {
    let api: Api<ClusterTrustBundle> = Api::all(client.clone());
    let name = bundle_name(signer);
    let spec = ClusterTrustBundleSpec {
        signer_name: Some(signer.to_string()),
        trust_bundle,
    };
    match cluster::call(timeout, api.get(&name)).await {
        Ok(existing) if existing.spec == spec => Ok(false),
        Ok(mut existing) => {
            existing.spec = spec;
            cluster::call(
                timeout,
                api.replace(&name, &PostParams::default(), &existing),
            )
            .await?;
            Ok(true)
        }
        Err(ApiFailure::NotFound) => {
            let bundle = ClusterTrustBundle {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some(BTreeMap::from([(LABEL.0.into(), LABEL.1.into())])),
                    ..Default::default()
                },
                spec,
            };
            cluster::call(timeout, api.create(&PostParams::default(), &bundle)).await?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Keeps the bundle equal to the CA's trust anchors until `shutdown` turns true.
pub async fn keep_published(
    client: Client,
    signer: SignerName,
    state: Arc<CaState>,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changes = state.subscribe();
    let mut backoff = RETRY.0;
    loop {
        let pem = bundle_pem(state.current().trust_bundle());
        let wait = match publish(&client, &signer, pem, timeout).await {
            Ok(written) => {
                if written {
                    tracing::info!(bundle = %bundle_name(&signer), "ClusterTrustBundle published");
                }
                backoff = RETRY.0;
                RESYNC
            }
            Err(e) => {
                tracing::warn!(bundle = %bundle_name(&signer), error = %e.message(), retry_in = ?backoff, "publishing the ClusterTrustBundle failed");
                let wait = backoff;
                backoff = (backoff * 2).min(RETRY.1);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_the_signer_with_colons_and_the_suffix() {
        let s = SignerName::parse("sigil.example.com/spiffe/x").unwrap();
        assert_eq!(bundle_name(&s), "sigil.example.com:spiffe:x:trust-anchors");
    }
}
