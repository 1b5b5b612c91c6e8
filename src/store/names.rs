//! The names CA material bears in the cluster: the `dapr-trust-bundle` objects, their data
//! keys and Sigil's annotation. They stand apart from the store so that the configuration can
//! check its file names against them without importing the cluster client.

/// Name of the Secret and of the ConfigMap.
pub const TRUST_BUNDLE_NAME: &str = "dapr-trust-bundle";
/// Trust anchors key (Secret and ConfigMap).
pub const KEY_CA: &str = "ca.crt";
/// Issuer chain key.
pub const KEY_ISSUER_CERT: &str = "issuer.crt";
/// Issuer private key key.
pub const KEY_ISSUER_KEY: &str = "issuer.key";
/// Annotation on the Secret, written with the CA material it describes: `sha256:` and the
/// hex SHA-256 of `ca.crt`. It outlives an edit that drops the data keys.
pub const ANNOTATION_CA_STORED: &str = "sigil.dev/ca-stored";

/// Whether a name can be a key of a Secret or ConfigMap (`[-._a-zA-Z0-9]+`, as the API
/// server requires).
pub fn is_valid_data_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}
