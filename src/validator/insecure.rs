//! The insecure validator: believes what the caller says. Standalone development only; the
//! server refuses to expose it beyond loopback unless told so explicitly.

use super::{
    common_checks, requested_trust_domain, Claims, Identity, TokenValidator, ValidatorKind,
};
use crate::Error;

/// Accepts any caller after Dapr's common request checks.
#[derive(Debug, Default, Clone, Copy)]
pub struct InsecureValidator;

#[async_trait::async_trait]
impl TokenValidator for InsecureValidator {
    fn kind(&self) -> ValidatorKind {
        ValidatorKind::Insecure
    }

    async fn validate(&self, claims: &Claims) -> Result<Identity, Error> {
        let (app_id, namespace) = common_checks(claims)?;
        // This validator believes every claim, a control-plane one too (`admit` still
        // refuses dapr-sentry).
        let control_plane = app_id
            .as_str()
            .starts_with(super::admit::CONTROL_PLANE_PREFIX);
        Ok(Identity {
            trust_domain: requested_trust_domain(claims)?,
            namespace,
            app_id,
            authenticated_as: "unauthenticated (insecure validator)".into(),
            container_images_json: None,
            control_plane,
        })
    }
}
