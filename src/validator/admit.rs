//! Rules a proven identity must still pass, whichever validator proved it.
//!
//! A validator proves who the caller is; some identities need more than that:
//! - `dapr-sentry` is the CA's own identity: daprd trusts a peer holding it as Sentry. It is
//!   never issued through the API, to anyone.
//! - Dapr's control-plane identities (`dapr-` app ids in the control-plane namespace:
//!   `dapr-operator`, `dapr-injector`, `dapr-placement`, `dapr-scheduler`, ...) go only to a
//!   caller the validator showed to be that service ([`Identity::control_plane`]: for the
//!   Kubernetes validator, a pod annotated `dapr.io/control-plane` in the control-plane
//!   namespace). The DNS names such certificates carry follow that fact too.
//! - In kubernetes mode, a caller proven by a JWKS gets no identity in the control-plane
//!   namespace at all, unless the operator allows it (`--jwks-allow-control-plane-namespace`);
//!   even then, never a control-plane one, which a JWT cannot prove. (Standalone, the control
//!   plane shares the `default` namespace with the apps, so only the last part applies.)

use sigil_pki::Namespace;

use super::{Identity, ValidatorKind};
use crate::Error;

/// The CA's own app id.
pub const SENTRY_APP_ID: &str = "dapr-sentry";
/// The prefix of Dapr's control-plane app ids.
pub const CONTROL_PLANE_PREFIX: &str = "dapr-";

/// The admission rules of one server.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The control-plane namespace (Sigil's own).
    pub control_plane_namespace: Namespace,
    /// JWKS-proven callers may get identities in the control-plane namespace.
    pub jwks_in_control_plane_namespace: bool,
}

/// Whether `app_id` in `namespace` is a control-plane identity.
pub fn is_control_plane_id(app_id: &str, namespace: &Namespace, control_plane: &Namespace) -> bool {
    namespace == control_plane && app_id.starts_with(CONTROL_PLANE_PREFIX)
}

/// DNS SANs Dapr gives its own control-plane services: only to a caller proven to be that
/// service ([`Identity::control_plane`]), in the control-plane namespace.
pub fn control_plane_dns_names(
    identity: &Identity,
    control_plane_ns: &Namespace,
    cluster_domain: &str,
) -> Vec<String> {
    if !identity.control_plane || &identity.namespace != control_plane_ns {
        return Vec::new();
    }
    let ns = control_plane_ns.as_str();
    match identity.app_id.as_str() {
        "dapr-injector" => vec![format!("dapr-sidecar-injector.{ns}.svc")],
        "dapr-operator" => vec![format!("dapr-webhook.{ns}.svc")],
        "dapr-scheduler" => (0..3)
            .map(|i| {
                format!("dapr-scheduler-server-{i}.dapr-scheduler-server.{ns}.svc.{cluster_domain}")
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl Admission {
    /// Lets `identity`, proven by `kind`, through, or says why not.
    pub fn admit(&self, kind: ValidatorKind, identity: &Identity) -> Result<(), Error> {
        let app_id = identity.app_id.as_str();
        let ns = &identity.namespace;
        if app_id == SENTRY_APP_ID {
            return Err(Error::Denied(format!(
                "{SENTRY_APP_ID} is the certificate authority's own identity and is never issued to a caller"
            )));
        }
        let in_control_plane_ns = *ns == self.control_plane_namespace;
        if kind == ValidatorKind::Jwks
            && in_control_plane_ns
            && !self.jwks_in_control_plane_namespace
        {
            return Err(Error::Denied(format!(
                "a caller proven by a JWKS gets no identity in the control-plane namespace {ns}"
            )));
        }
        if is_control_plane_id(app_id, ns, &self.control_plane_namespace) && !identity.control_plane
        {
            return Err(Error::Denied(format!(
                "{app_id} in namespace {ns} is a Dapr control-plane identity; it is issued only to a pod of that service (annotation dapr.io/control-plane in the control-plane namespace)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(ns: &str, app: &str, control_plane: bool) -> Identity {
        Identity {
            trust_domain: "public".parse().unwrap(),
            namespace: ns.parse().unwrap(),
            app_id: app.parse().unwrap(),
            authenticated_as: String::new(),
            container_images_json: None,
            control_plane,
        }
    }

    fn rules(jwks_in_cp: bool) -> Admission {
        Admission {
            control_plane_namespace: "dapr-system".parse().unwrap(),
            jwks_in_control_plane_namespace: jwks_in_cp,
        }
    }

    #[test]
    fn sentry_is_never_issued() {
        for kind in [
            ValidatorKind::Insecure,
            ValidatorKind::Kubernetes,
            ValidatorKind::Jwks,
        ] {
            for ns in ["dapr-system", "default"] {
                let e = rules(true)
                    .admit(kind, &ident(ns, "dapr-sentry", true))
                    .unwrap_err();
                assert!(matches!(e, Error::Denied(_)), "{kind:?} {ns}");
            }
        }
    }

    #[test]
    fn control_plane_ids_need_the_proven_fact() {
        let r = rules(false);
        let k = ValidatorKind::Kubernetes;
        assert!(r
            .admit(k, &ident("dapr-system", "dapr-operator", true))
            .is_ok());
        let e = r
            .admit(k, &ident("dapr-system", "dapr-operator", false))
            .unwrap_err()
            .to_string();
        assert!(e.contains("control-plane identity"), "{e}");
        assert!(r
            .admit(k, &ident("dapr-system", "dapr-anything", false))
            .is_err());
        // Outside the control-plane namespace a dapr- name is an ordinary app id.
        assert!(r.admit(k, &ident("shop", "dapr-operator", false)).is_ok());
        assert!(r.admit(k, &ident("dapr-system", "orders", false)).is_ok());
    }

    #[test]
    fn jwks_callers_stay_out_of_the_control_plane_namespace() {
        let j = ValidatorKind::Jwks;
        assert!(rules(false)
            .admit(j, &ident("dapr-system", "orders", false))
            .is_err());
        assert!(rules(false)
            .admit(j, &ident("shop", "orders", false))
            .is_ok());
        assert!(rules(true)
            .admit(j, &ident("dapr-system", "orders", false))
            .is_ok());
        assert!(rules(true)
            .admit(j, &ident("dapr-system", "dapr-operator", false))
            .is_err());
    }

    #[test]
    fn control_plane_names_only_in_control_plane_namespace() {
        let cp: Namespace = "dapr-system".parse().unwrap();
        assert_eq!(
            control_plane_dns_names(
                &ident("dapr-system", "dapr-injector", true),
                &cp,
                "cluster.local"
            ),
            vec!["dapr-sidecar-injector.dapr-system.svc"]
        );
        assert_eq!(
            control_plane_dns_names(
                &ident("dapr-system", "dapr-operator", true),
                &cp,
                "cluster.local"
            ),
            vec!["dapr-webhook.dapr-system.svc"]
        );
        let sched =
            control_plane_dns_names(&ident("dapr-system", "dapr-scheduler", true), &cp, "c.l");
        assert_eq!(sched.len(), 3);
        assert_eq!(
            sched[2],
            "dapr-scheduler-server-2.dapr-scheduler-server.dapr-system.svc.c.l"
        );
        assert!(control_plane_dns_names(
            &ident("default", "dapr-injector", true),
            &cp,
            "cluster.local"
        )
        .is_empty());
        assert!(control_plane_dns_names(
            &ident("dapr-system", "orders", true),
            &cp,
            "cluster.local"
        )
        .is_empty());
    }
}
