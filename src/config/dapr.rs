//! The Dapr `Configuration` document, as far as Sentry reads it: a YAML file in standalone
//! mode, an object of the API server in kubernetes mode.

use std::path::Path;

use serde::Deserialize;

use crate::Error;

/// Control-plane trust domain in kubernetes mode when the Configuration names none (Dapr's).
pub const DEFAULT_CONTROL_PLANE_TRUST_DOMAIN: &str = "cluster.local";

/// The `mtls` part of a Dapr `Configuration`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MtlsSpec {
    /// Workload certificate lifetime, Go duration syntax.
    #[serde(rename = "workloadCertTTL")]
    pub workload_cert_ttl: Option<String>,
    /// Allowed clock skew, Go duration syntax.
    pub allowed_clock_skew: Option<String>,
    /// Trust domain of the control plane.
    pub control_plane_trust_domain: Option<String>,
    /// Extra validators (`jwks`) and their options.
    #[serde(default)]
    pub token_validators: Vec<TokenValidatorSpec>,
}

/// One entry of `spec.mtls.tokenValidators`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct TokenValidatorSpec {
    /// Validator name (`jwks`).
    pub name: String,
    /// Its options (string map).
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, serde_yaml::Value>,
}

/// A Dapr `Configuration` document (only what Sentry reads).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct DaprConfiguration {
    /// `spec`.
    #[serde(default)]
    pub spec: ConfigurationSpec,
}

/// `spec` of a Dapr Configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ConfigurationSpec {
    /// `spec.mtls`.
    #[serde(default)]
    pub mtls: MtlsSpec,
}

impl DaprConfiguration {
    /// Parses YAML (or JSON).
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        serde_yaml::from_str(text).map_err(|e| Error::Config(format!("Dapr Configuration: {e}")))
    }

    /// The `jwks` validator's options, if configured (the name in any case, as Dapr).
    pub fn jwks_options(&self) -> Option<&TokenValidatorSpec> {
        self.spec
            .mtls
            .token_validators
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case("jwks"))
    }

    /// Refuses `tokenValidators` entries Sentry would refuse at start: an unknown name, or a
    /// built-in validator (which cannot be configured). Names match in any case. A name that
    /// is silently ignored would leave a user believing a validator is on.
    pub fn check_token_validators(&self) -> Result<(), Error> {
        for v in &self.spec.mtls.token_validators {
            match v.name.to_ascii_lowercase().as_str() {
                "jwks" => {}
                "kubernetes" | "insecure" => {
                    return Err(Error::Config(format!(
                        "invalid token validator {:?}: the built-in 'kubernetes' and 'insecure' validators cannot be configured manually",
                        v.name
                    )))
                }
                _ => {
                    return Err(Error::Config(format!(
                        "invalid token validator name {:?}; supported values: 'jwks'",
                        v.name
                    )))
                }
            }
        }
        Ok(())
    }
}

/// The Configuration file `name` (standalone); defaults when there is none.
pub(super) fn load_file(name: &str) -> Result<DaprConfiguration, Error> {
    let path = Path::new(name);
    if !path.is_file() {
        tracing::warn!(
            config = name,
            "Dapr Configuration file not found; using defaults (workloadCertTTL 24h, allowedClockSkew 15m)"
        );
        return Ok(DaprConfiguration::default());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    DaprConfiguration::from_yaml(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_validator_names_follow_dapr() {
        let conf = |name: &str| {
            DaprConfiguration::from_yaml(&format!(
                "spec:\n  mtls:\n    tokenValidators:\n      - name: {name}\n"
            ))
            .unwrap()
        };
        for ok in ["jwks", "JWKS", "Jwks"] {
            let c = conf(ok);
            assert!(c.check_token_validators().is_ok(), "{ok}");
            assert!(c.jwks_options().is_some(), "{ok}");
        }
        for bad in ["kubernetes", "INSECURE", "jwk", "oidc"] {
            let e = conf(bad).check_token_validators().unwrap_err().to_string();
            assert!(e.contains("invalid token validator"), "{bad}: {e}");
        }
    }
}
