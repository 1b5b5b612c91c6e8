//! The signer name Sigil answers PodCertificateRequests for: domain-qualified
//! (`<domain>/<path>`), as Kubernetes requires of every signer.

use std::fmt;

/// Longest signer name accepted (its ClusterTrustBundle names must still fit in 253).
const MAX_LEN: usize = 200;

/// A validated signer name, e.g. `sigil.example.com/spiffe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerName(String);

fn dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

impl SignerName {
    /// Checks `value`: a DNS subdomain with at least two labels (not one of Kubernetes' own
    /// domains), a `/`, and a path of non-empty segments of letters, digits, `.`, `_`, `-`.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.len() > MAX_LEN {
            return Err(format!("{value:?} is longer than {MAX_LEN} characters"));
        }
        let Some((domain, path)) = value.split_once('/') else {
            return Err(format!(
                "{value:?} is not domain-qualified; expected <domain>/<path>, e.g. sigil.example.com/spiffe"
            ));
        };
        if !domain.contains('.') || !domain.split('.').all(dns_label) {
            return Err(format!(
                "{value:?}: {domain:?} is not a DNS domain of at least two labels"
            ));
        }
        if ["kubernetes.io", "k8s.io"]
            .iter()
            .any(|k| domain == *k || domain.ends_with(&format!(".{k}")))
        {
            return Err(format!(
                "{value:?}: the {domain} domain is reserved for Kubernetes' own signers"
            ));
        }
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        };
        if !path.split('/').all(segment_ok) {
            return Err(format!(
                "{value:?}: the path {path:?} must be non-empty segments of letters, digits, '.', '_' or '-'"
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SignerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_domain_qualified_names() {
        for ok in ["sigil.example.com/spiffe", "a.b/c/d", "x.io/My_Signer-1.v2"] {
            assert_eq!(SignerName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_the_rest() {
        for bad in [
            "",
            "spiffe",
            "localhost/spiffe",
            "example.com",
            "example.com/",
            "example.com//x",
            "Example.com/x",
            "-a.com/x",
            "a..com/x",
            "kubernetes.io/kube-apiserver-client",
            "foo.kubernetes.io/x",
            "k8s.io/x",
            "example.com/a b",
        ] {
            assert!(SignerName::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(SignerName::parse(&format!("example.com/{}", "a".repeat(300))).is_err());
    }
}
