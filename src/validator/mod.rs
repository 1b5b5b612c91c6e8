//! Token validators: who is calling, proven.
//!
//! A [`TokenValidator`] turns a request's claims (app id, namespace, trust domain, token)
//! into a proven [`Identity`] or an [`Error`]. Which validator runs is chosen per request
//! (Dapr's `token_validator` field) among those the configuration enables; see
//! [`Validators::select`].

use std::collections::BTreeMap;
use std::sync::Arc;

use sigil_pki::{AppId, Namespace, TrustDomain};

use crate::Error;

pub mod admit;
pub mod cache;
pub mod insecure;
pub mod jwks;
pub mod kubernetes;
pub mod pod_lookup;
pub mod pods;

/// The validators Dapr defines, with Dapr's enum numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ValidatorKind {
    /// No authentication (development only).
    Insecure,
    /// Kubernetes service-account token: TokenReview plus pod lookup.
    Kubernetes,
    /// JWT checked against a JWKS.
    Jwks,
}

impl ValidatorKind {
    /// Name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            ValidatorKind::Insecure => "insecure",
            ValidatorKind::Kubernetes => "kubernetes",
            ValidatorKind::Jwks => "jwks",
        }
    }

    /// From the wire enum value; 0 (UNKNOWN) and unknown numbers give `None`.
    pub fn from_wire(value: i32) -> Option<Self> {
        match value {
            1 => Some(ValidatorKind::Insecure),
            2 => Some(ValidatorKind::Kubernetes),
            3 => Some(ValidatorKind::Jwks),
            _ => None,
        }
    }
}

/// What a caller claims, taken from the request. Its `Debug` leaves the token out.
#[derive(Clone, Default)]
pub struct Claims {
    /// Requested app id (request field `id`).
    pub id: String,
    /// Credential (request field `token`). Never logged.
    pub token: String,
    /// Requested trust domain (may be empty).
    pub trust_domain: String,
    /// Requested namespace.
    pub namespace: String,
    /// Whether the request carried a CSR (Dapr checks this among the common checks).
    pub csr_present: bool,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("id", &self.id)
            .field(
                "token",
                &format_args!("<{} bytes, redacted>", self.token.len()),
            )
            .field("trust_domain", &self.trust_domain)
            .field("namespace", &self.namespace)
            .field("csr_present", &self.csr_present)
            .finish()
    }
}

/// A caller's identity, proven by a validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Trust domain the certificate is issued in.
    pub trust_domain: TrustDomain,
    /// Namespace.
    pub namespace: Namespace,
    /// App id.
    pub app_id: AppId,
    /// Who authenticated, for the audit log (e.g. `system:serviceaccount:ns:sa`).
    pub authenticated_as: String,
    /// JSON of the pod's container images, for Dapr's certificate extension.
    pub container_images_json: Option<String>,
    /// The validator showed the caller to be the Dapr control-plane service its app id
    /// names (see [`admit`]).
    pub control_plane: bool,
}

/// Checks that the caller proves its identity.
#[async_trait::async_trait]
pub trait TokenValidator: Send + Sync {
    /// Which validator this is.
    fn kind(&self) -> ValidatorKind;

    /// Proves the identity in `claims`, or refuses. Errors are [`Error::Denied`] for a
    /// refusal and [`Error::Unavailable`] when a backend could not be asked.
    async fn validate(&self, claims: &Claims) -> Result<Identity, Error>;
}

/// The trust domain used when a request names none (Dapr's default).
pub const DEFAULT_TRUST_DOMAIN: &str = "public";

/// Dapr's common request checks, run by every validator. Failures are joined and prefixed
/// `invalid request: ` and, as in Dapr, answered with PERMISSION_DENIED.
pub fn common_checks(claims: &Claims) -> Result<(AppId, Namespace), Error> {
    let mut problems: Vec<String> = Vec::new();
    let app = AppId::new(&claims.id)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    if !claims.csr_present {
        problems.push("CSR is required".into());
    }
    let ns = if claims.namespace.is_empty() {
        problems.push("namespace is required".into());
        None
    } else {
        Namespace::new(&claims.namespace)
            .map_err(|e| problems.push(e.to_string()))
            .ok()
    };
    match (app, ns) {
        (Some(app), Some(ns)) if problems.is_empty() => Ok((app, ns)),
        _ => Err(Error::Denied(format!(
            "invalid request: {}",
            problems.join("; ")
        ))),
    }
}

/// The request's trust domain, or Dapr's default `public`.
pub fn requested_trust_domain(claims: &Claims) -> Result<TrustDomain, Error> {
    let td = if claims.trust_domain.is_empty() {
        DEFAULT_TRUST_DOMAIN
    } else {
        &claims.trust_domain
    };
    TrustDomain::new(td).map_err(|e| Error::Denied(format!("invalid request: {e}")))
}

/// The enabled validators and the default one.
#[derive(Clone, Default)]
pub struct Validators {
    enabled: BTreeMap<ValidatorKind, Arc<dyn TokenValidator>>,
    default: Option<ValidatorKind>,
}

impl std::fmt::Debug for Validators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validators")
            .field("enabled", &self.enabled.keys().collect::<Vec<_>>())
            .field("default", &self.default)
            .finish()
    }
}

impl Validators {
    /// No validators; add some with [`Validators::with`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Enables `validator`; `default` makes it the one used for UNKNOWN requests.
    pub fn with(mut self, validator: Arc<dyn TokenValidator>, default: bool) -> Self {
        let kind = validator.kind();
        self.enabled.insert(kind, validator);
        if default {
            self.default = Some(kind);
        }
        self
    }

    /// The enabled kinds.
    pub fn kinds(&self) -> Vec<ValidatorKind> {
        self.enabled.keys().copied().collect()
    }

    /// The default kind.
    pub fn default_kind(&self) -> Option<ValidatorKind> {
        self.default
    }

    /// Picks the validator for a request's `token_validator` value, as Dapr does.
    pub fn select(&self, wire_value: i32) -> Result<&Arc<dyn TokenValidator>, Error> {
        let kind = if wire_value == 0 {
            self.default.ok_or(Error::ValidatorNotSpecified)?
        } else {
            ValidatorKind::from_wire(wire_value).ok_or(Error::ValidatorNotEnabled)?
        };
        self.enabled.get(&kind).ok_or(Error::ValidatorNotEnabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let c = Claims {
            id: "orders".into(),
            token: "eyJhbGciOiJSUzI1NiJ9.secret-payload.sig".into(),
            ..Default::default()
        };
        let d = format!("{c:?}");
        assert!(d.contains("orders") && d.contains("redacted"), "{d}");
        assert!(!d.contains("secret-payload"), "{d}");
    }

    fn claims(id: &str, ns: &str, csr: bool) -> Claims {
        Claims {
            id: id.into(),
            namespace: ns.into(),
            csr_present: csr,
            ..Default::default()
        }
    }

    #[test]
    fn common_checks_join_daprs_messages() {
        let e = common_checks(&claims("", "", false))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid request: parameter app-id cannot be empty; CSR is required; namespace is required"
        );
        let e = common_checks(&claims("a.b", "ns", true))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid request: parameter app-id cannot contain dots");
        assert!(common_checks(&claims("app", "ns", true)).is_ok());
    }

    #[test]
    fn selection_follows_dapr() {
        let v = Validators::new().with(Arc::new(insecure::InsecureValidator), true);
        assert_eq!(v.select(0).unwrap().kind(), ValidatorKind::Insecure);
        assert_eq!(v.select(1).unwrap().kind(), ValidatorKind::Insecure);
        assert!(matches!(v.select(2), Err(Error::ValidatorNotEnabled)));
        assert!(matches!(v.select(99), Err(Error::ValidatorNotEnabled)));
        let none = Validators::new().with(Arc::new(insecure::InsecureValidator), false);
        assert!(matches!(none.select(0), Err(Error::ValidatorNotSpecified)));
    }
}
