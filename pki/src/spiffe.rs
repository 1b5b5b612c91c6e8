//! SPIFFE identities as types that can only hold valid values.
//!
//! Rules come from the SPIFFE ID specification (trust domain: lower-case letters, digits,
//! `.`, `-`, `_`; path segments: `[A-Za-z0-9._-]`, never empty, `.` or `..`; whole ID at
//! most 2048 bytes) and from Dapr's own rules for app ids (non-empty, no dots, at most 64
//! characters). Sigil's workload IDs have exactly the shape
//! `spiffe://<trust-domain>/ns/<namespace>/<app-id>`.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Longest SPIFFE ID the specification allows, in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain name the specification allows.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Longest app id Dapr allows.
pub const MAX_APP_ID_LEN: usize = 64;
/// Longest namespace. A Kubernetes namespace is a DNS label (63), but Dapr accepts up to a
/// DNS subdomain's 253 (its suite checks it), and a longer segment harms nothing in a SPIFFE ID.
pub const MAX_NAMESPACE_LEN: usize = 253;

const SCHEME: &str = "spiffe://";

fn shown(value: &str) -> String {
    // Keep error messages bounded when someone sends 10 000 characters.
    value.chars().take(80).collect()
}

fn is_segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

fn check_segment(segment: &str) -> Result<(), &'static str> {
    if segment.is_empty() {
        return Err("path segments must not be empty");
    }
    if segment == "." || segment == ".." {
        return Err("path segments must not be '.' or '..'");
    }
    if !segment.bytes().all(is_segment_char) {
        return Err("path segments may only contain letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

/// A SPIFFE trust domain, e.g. `cluster.local` or `public`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain name (not a `spiffe://` URI).
    pub fn new(value: &str) -> Result<Self, Error> {
        let err = |reason| Error::InvalidTrustDomain {
            value: shown(value),
            reason,
        };
        if value.is_empty() {
            return Err(err("trust domain must not be empty"));
        }
        if value.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(err("trust domain must be at most 255 characters"));
        }
        if !value.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        }) {
            return Err(err(
                "trust domain may only contain lower-case letters, digits, '.', '-' and '_'",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself (`spiffe://<td>`), as used in JWT audiences.
    pub fn id_string(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// A namespace, usable as a SPIFFE path segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

impl Namespace {
    /// Parses a namespace. Dapr's message for an empty one is kept.
    pub fn new(value: &str) -> Result<Self, Error> {
        let err = |reason| Error::InvalidNamespace {
            value: shown(value),
            reason,
        };
        if value.is_empty() {
            return Err(err("namespace is required"));
        }
        if value.len() > MAX_NAMESPACE_LEN {
            return Err(err("namespace must be at most 253 characters"));
        }
        check_segment(value).map_err(err)?;
        Ok(Self(value.to_owned()))
    }

    /// The namespace as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Namespace {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// A Dapr app id: non-empty, no dots, at most 64 characters, and a valid SPIFFE segment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(String);

impl AppId {
    /// Parses an app id, answering Dapr's own messages for Dapr's own rules.
    pub fn new(value: &str) -> Result<Self, Error> {
        let err = |reason| Error::InvalidAppId { reason };
        if value.is_empty() {
            return Err(err("parameter app-id cannot be empty"));
        }
        if value.contains('.') {
            return Err(err("parameter app-id cannot contain dots"));
        }
        if value.chars().count() > MAX_APP_ID_LEN {
            return Err(err("app ID must be 64 characters or less"));
        }
        check_segment(value)
            .map_err(|_| err("app ID may only contain letters, digits, '-' and '_'"))?;
        Ok(Self(value.to_owned()))
    }

    /// The app id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for AppId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// A SPIFFE ID. Sigil issues only workload IDs of the form
/// `spiffe://<td>/ns/<namespace>/<app-id>`, but can parse and hold any valid SPIFFE ID
/// (peers may present others).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// The path including its leading `/`, or empty for the trust domain's own ID.
    path: String,
}

impl SpiffeId {
    /// The workload ID `spiffe://<td>/ns/<ns>/<app>`.
    pub fn workload(td: &TrustDomain, ns: &Namespace, app: &AppId) -> Self {
        Self {
            trust_domain: td.clone(),
            path: format!("/ns/{ns}/{app}"),
        }
    }

    /// Parses any SPIFFE ID from its URI form.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let err = |reason| Error::InvalidSpiffeId {
            value: shown(value),
            reason,
        };
        if value.len() > MAX_SPIFFE_ID_LEN {
            return Err(err("SPIFFE ID must be at most 2048 bytes"));
        }
        let rest = value
            .strip_prefix(SCHEME)
            .ok_or_else(|| err("scheme must be 'spiffe://' (lower case)"))?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if td.is_empty() {
            return Err(err("trust domain is missing"));
        }
        if td.contains([':', '@']) {
            return Err(err("trust domain must not carry a port or user info"));
        }
        let trust_domain = TrustDomain::new(td).map_err(|_| {
            err("trust domain may only contain lower-case letters, digits, '.', '-' and '_'")
        })?;
        if value.contains(['?', '#']) {
            return Err(err("query and fragment are not allowed"));
        }
        if !path.is_empty() {
            // path starts with '/'; every segment after it must be valid (so no trailing '/').
            for segment in path[1..].split('/') {
                check_segment(segment).map_err(err)?;
            }
        }
        Ok(Self {
            trust_domain,
            path: path.to_owned(),
        })
    }

    /// The trust domain part.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path (with its leading `/`), empty for a trust domain ID.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// For a workload ID `spiffe://td/ns/<ns>/<app>`, its namespace and app id.
    pub fn workload_parts(&self) -> Option<(Namespace, AppId)> {
        let mut parts = self.path.strip_prefix("/ns/")?.split('/');
        let ns = Namespace::new(parts.next()?).ok()?;
        let app = AppId::new(parts.next()?).ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some((ns, app))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{}", self.trust_domain, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn app_id_rules_use_daprs_messages() {
        let msg = |s: &str| AppId::new(s).unwrap_err().to_string();
        assert_eq!(msg(""), "parameter app-id cannot be empty");
        assert_eq!(msg("a.b"), "parameter app-id cannot contain dots");
        assert_eq!(msg(&"a".repeat(65)), "app ID must be 64 characters or less");
        assert!(AppId::new(&"a".repeat(64)).is_ok());
        for bad in ["a/b", "a b", "é", "a\0b", ".."] {
            assert!(AppId::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn namespace_rules() {
        assert_eq!(
            Namespace::new("").unwrap_err().to_string(),
            "invalid namespace \"\": namespace is required"
        );
        for bad in ["a/b", ".", "..", "x y", &"n".repeat(254)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Namespace::new("dapr-system").is_ok());
        // Dapr's limit (its suite checks a 253-character namespace).
        assert!(Namespace::new(&"n".repeat(253)).is_ok());
    }

    #[test]
    fn trust_domain_rules() {
        for bad in ["", "Upper", "a/b", "a:80", "ü", &"a".repeat(256)] {
            assert!(TrustDomain::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(TrustDomain::new("cluster.local").is_ok());
        assert_eq!(
            TrustDomain::new("public").unwrap().id_string(),
            "spiffe://public"
        );
    }

    #[test]
    fn workload_id_formats_as_dapr_does() {
        let id = SpiffeId::workload(
            &"public".parse().unwrap(),
            &"default".parse().unwrap(),
            &"orders".parse().unwrap(),
        );
        assert_eq!(id.to_string(), "spiffe://public/ns/default/orders");
        let (ns, app) = id.workload_parts().unwrap();
        assert_eq!((ns.as_str(), app.as_str()), ("default", "orders"));
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "spiffe://",
            "SPIFFE://td/x",
            "https://td/x",
            "spiffe:///x",
            "spiffe://TD/x",
            "spiffe://td/",
            "spiffe://td//x",
            "spiffe://td/./x",
            "spiffe://td/../x",
            "spiffe://td/x?y",
            "spiffe://td/x#y",
            "spiffe://td:443/x",
            "spiffe://u@td/x",
            "spiffe://td/x%20y",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("spiffe://td/{}", "a".repeat(2048));
        assert!(SpiffeId::parse(&long).is_err());
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}"
            .prop_filter("not dot segments", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn valid_ids_round_trip(td in "[a-z0-9][a-z0-9.-]{0,30}", segs in proptest::collection::vec(segment(), 0..5)) {
            let text = if segs.is_empty() { format!("spiffe://{td}") } else { format!("spiffe://{td}/{}", segs.join("/")) };
            let id = SpiffeId::parse(&text).unwrap();
            prop_assert_eq!(id.to_string(), text.clone());
            prop_assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn workload_ids_round_trip(td in "[a-z0-9][a-z0-9.-]{0,30}", ns in "[a-z0-9][a-z0-9-]{0,40}", app in "[A-Za-z0-9_-]{1,64}") {
            let id = SpiffeId::workload(&TrustDomain::new(&td).unwrap(), &Namespace::new(&ns).unwrap(), &AppId::new(&app).unwrap());
            let parsed = SpiffeId::parse(&id.to_string()).unwrap();
            let (pns, papp) = parsed.workload_parts().unwrap();
            prop_assert_eq!(pns.as_str(), ns.as_str());
            prop_assert_eq!(papp.as_str(), app.as_str());
        }

        #[test]
        fn parse_never_panics_and_accepts_only_valid(s in "\\PC{0,60}") {
            if let Ok(id) = SpiffeId::parse(&s) {
                prop_assert_eq!(id.to_string(), s);
            }
        }

        #[test]
        fn ids_with_bad_characters_are_refused(prefix in "[a-z]{1,5}", bad in "[^A-Za-z0-9._/-]", suffix in "[a-z]{0,5}") {
            let text = format!("spiffe://td/{prefix}{bad}{suffix}");
            prop_assert!(SpiffeId::parse(&text).is_err());
        }
    }
}
