//! Deciding a PodCertificateRequest: the request against the live Pod and Node, then the
//! identity by the gRPC path's rules ([`expected_app_id`], [`pod_trust_domain`]).
//!
//! The API server's node restriction already let only the pod's node create the request;
//! Sigil still checks every spec field it relies on against the objects as they are now (a
//! pod deleted and recreated under the same name must not get the old pod's certificate).
//! That includes `spec.serviceAccountUID` against the ServiceAccount (one `get`, the grant the
//! signer's ClusterRole adds).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::PodCertificateRequest;
use k8s_openapi::api::certificates::v1beta1;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::{Api, Client};
use sigil_pki::{AppId, Namespace, TrustDomain, ValidatedCsr};

use crate::cluster::{self, ApiFailure};
use crate::validator::kubernetes::{container_images_json, expected_app_id, pod_trust_domain};
use crate::validator::Identity;
use crate::Error;

/// Denied reason for a key Sigil cannot sign (KEP-4317).
pub const UNSUPPORTED_KEY_TYPE: &str = "UnsupportedKeyType";
/// Denied reason for `unverifiedUserAnnotations` keys Sigil does not know (KEP-4317).
pub const INVALID_ANNOTATIONS: &str = "InvalidUnverifiedUserAnnotations";
/// Denied reason: the request does not match the live Pod or Node.
pub const POD_MISMATCH: &str = "PodMismatch";
/// Denied reason: the pod may not have the identity it would get (the gRPC path's rules).
pub const IDENTITY_REFUSED: &str = "IdentityRefused";
/// Failed reason: the request cannot be signed, ever.
pub const INVALID_REQUEST: &str = "InvalidRequest";

/// The key types Sigil signs, for the UnsupportedKeyType message.
const SUPPORTED_KEYS: &str = "use ECDSAP256 (also supported: ECDSAP384, ED25519, RSA3072, RSA4096)";

/// What to do with a request.
#[derive(Debug)]
pub enum Verdict {
    /// Sign this key for this identity.
    Sign {
        /// Who the certificate is for.
        identity: Identity,
        /// The requester's key.
        csr: ValidatedCsr,
    },
    /// Settle with one condition (`Denied` or `Failed`), reason and message.
    Refuse {
        /// [`super::status::DENIED`] or [`super::status::FAILED`].
        condition: &'static str,
        /// Reason.
        reason: &'static str,
        /// Message.
        message: String,
    },
}

fn deny(reason: &'static str, message: impl Into<String>) -> Verdict {
    Verdict::Refuse {
        condition: super::status::DENIED,
        reason,
        message: message.into(),
    }
}

/// The settings a review needs.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Trust domain of the control plane.
    pub control_plane_trust_domain: TrustDomain,
    /// Namespace of the control plane.
    pub control_plane_namespace: Namespace,
    /// Deadline of one API call.
    pub api_timeout: Duration,
}

async fn get<K>(api: Api<K>, name: &str, timeout: Duration) -> Result<Option<K>, ApiFailure>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match cluster::call(timeout, api.get(name)).await {
        Ok(v) => Ok(Some(v)),
        Err(ApiFailure::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Decides `pcr`. `Err` is transient (the API server could not be asked): retry.
pub async fn review(
    client: &Client,
    rules: &Rules,
    pcr: &PodCertificateRequest,
) -> Result<Verdict, Error> {
    let spec = &pcr.spec;
    let namespace = pcr.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(keys) = spec
        .unverified_user_annotations
        .as_ref()
        .filter(|a| !a.is_empty())
    {
        let names: Vec<&str> = keys.keys().map(String::as_str).take(10).collect();
        return Ok(deny(
            INVALID_ANNOTATIONS,
            format!("Sigil accepts no unverifiedUserAnnotations; unknown keys: {names:?}"),
        ));
    }
    // A kubelet that writes v1beta1 may send `pkixPublicKey` (with a proof of possession the
    // API server checked at creation) instead of `stubPKCS10Request`; v1 does not show that
    // field, so the request is read again as v1beta1.
    let (key, from) = if spec.stub_pkc_s10_request.0.is_empty() {
        let name = pcr.metadata.name.as_deref().unwrap_or_default();
        let beta: Api<v1beta1::PodCertificateRequest> = Api::namespaced(client.clone(), namespace);
        let Some(beta) = get(beta, name, rules.api_timeout)
            .await
            .map_err(|e| e.unavailable("reading the request as v1beta1"))?
        else {
            return Ok(Verdict::Refuse {
                condition: super::status::FAILED,
                reason: INVALID_REQUEST,
                message: "the request has no stubPKCS10Request and cannot be read as v1beta1"
                    .into(),
            });
        };
        let pkix = beta.spec.pkix_public_key.map(|k| k.0).unwrap_or_default();
        (ValidatedCsr::from_proven_public_key(&pkix), "pkixPublicKey")
    } else {
        (
            ValidatedCsr::from_der(&spec.stub_pkc_s10_request.0),
            "stubPKCS10Request",
        )
    };
    let csr = match key {
        Ok(csr) => csr,
        Err(e @ (sigil_pki::Error::UnsupportedKey(_) | sigil_pki::Error::RsaKeySize { .. })) => {
            return Ok(deny(UNSUPPORTED_KEY_TYPE, format!("{e}; {SUPPORTED_KEYS}")))
        }
        Err(e) => {
            return Ok(Verdict::Refuse {
                condition: super::status::FAILED,
                reason: INVALID_REQUEST,
                message: format!("{from}: {e}"),
            })
        }
    };

    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Some(pod) = get(pods, &spec.pod_name, rules.api_timeout)
        .await
        .map_err(|e| e.unavailable("reading the pod"))?
    else {
        return Ok(deny(
            POD_MISMATCH,
            format!("pod {namespace}/{} does not exist", spec.pod_name),
        ));
    };
    let pod_spec = pod.spec.clone().unwrap_or_default();
    let pod_sa = pod_spec
        .service_account_name
        .as_deref()
        .unwrap_or("default");
    let mismatch = if pod.metadata.uid.as_deref() != Some(spec.pod_uid.as_str()) {
        Some("its UID differs from spec.podUID")
    } else if pod_sa != spec.service_account_name {
        Some("it runs as another service account than spec.serviceAccountName")
    } else if pod_spec.node_name.as_deref() != Some(spec.node_name.as_str()) {
        Some("it is not bound to spec.nodeName")
    } else if pod.metadata.deletion_timestamp.is_some() {
        Some("it is being deleted")
    } else if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        Some("it has terminated")
    } else {
        None
    };
    if let Some(why) = mismatch {
        return Ok(deny(
            POD_MISMATCH,
            format!("pod {namespace}/{}: {why}", spec.pod_name),
        ));
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let node = get(nodes, &spec.node_name, rules.api_timeout)
        .await
        .map_err(|e| e.unavailable("reading the node"))?;
    if node.as_ref().and_then(|n| n.metadata.uid.as_deref()) != Some(spec.node_uid.as_str()) {
        return Ok(deny(
            POD_MISMATCH,
            format!(
                "node {} does not exist or its UID differs from spec.nodeUID",
                spec.node_name
            ),
        ));
    }

    // The API server compared serviceAccountUID when the request was created; a service
    // account deleted and recreated since then is another identity.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = get(accounts, &spec.service_account_name, rules.api_timeout)
        .await
        .map_err(|e| e.unavailable("reading the service account"))?;
    if account.as_ref().and_then(|a| a.metadata.uid.as_deref())
        != Some(spec.service_account_uid.as_str())
    {
        return Ok(deny(
            POD_MISMATCH,
            format!(
                "service account {namespace}/{} does not exist or its UID differs from spec.serviceAccountUID",
                spec.service_account_name
            ),
        ));
    }

    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let refused = |e: Error| match e {
        Error::Denied(m) => Ok(deny(IDENTITY_REFUSED, m)),
        other => Err(other),
    };
    let (app_id, control_plane) = match expected_app_id(
        &spec.pod_name,
        namespace,
        annotations,
        &rules.control_plane_namespace,
    ) {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    let trust_domain = match pod_trust_domain(
        client,
        rules.api_timeout,
        &rules.control_plane_trust_domain,
        namespace,
        &pod,
        control_plane,
    )
    .await
    {
        Ok(td) => td,
        Err(e) => return refused(e),
    };
    let (app_id, ns) = match (AppId::new(&app_id), Namespace::new(namespace)) {
        (Ok(a), Ok(n)) => (a, n),
        (Err(e), _) | (_, Err(e)) => return Ok(deny(IDENTITY_REFUSED, e.to_string())),
    };
    let identity = Identity {
        trust_domain,
        namespace: ns,
        app_id,
        authenticated_as: format!("system:node:{}", spec.node_name),
        container_images_json: container_images_json(&pod),
        control_plane,
    };
    // The rules every proven identity passes (dapr-sentry never; control-plane ids only for
    // that service's pods), as on the gRPC path: the node vouched for the pod as a
    // TokenReview does.
    let admission = crate::validator::admit::Admission {
        control_plane_namespace: rules.control_plane_namespace.clone(),
        jwks_in_control_plane_namespace: false,
    };
    if let Err(e) = admission.admit(crate::validator::ValidatorKind::Kubernetes, &identity) {
        return refused(e);
    }
    Ok(Verdict::Sign { identity, csr })
}
