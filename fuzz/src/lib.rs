//! Shared pieces of Sigil's fuzz targets: the fixed test issuer key and the plain-text
//! framing that lets `fuzz/seeds.sh` build seeds with ordinary shell tools.
#![forbid(unsafe_code)]

use sigil_pki::PrivateKey;

/// Seed of the fixed Ed25519 test key used as `issuer.key` by the `ca_load` target. It is a
/// public test value, not a secret: `fuzz/seeds.sh` signs seed issuer certificates with the
/// same key so that fuzzed chains can get past the key-match check.
pub const FIXED_KEY_SEED: [u8; 32] = [0x5a; 32];

/// PKCS#8 v1 prefix for an Ed25519 private key (RFC 8410), followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The fixed issuer key as PKCS#8 DER.
pub fn fixed_key_pkcs8() -> Vec<u8> {
    let mut der = ED25519_PKCS8_PREFIX.to_vec();
    der.extend_from_slice(&FIXED_KEY_SEED);
    der
}

/// The fixed issuer key as PEM, as it would sit in `issuer.key`.
pub fn fixed_key_pem() -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", fixed_key_pkcs8()))
}

/// The fixed key, parsed by Sigil (it must parse: it is a valid key).
pub fn fixed_key() -> PrivateKey {
    match PrivateKey::from_pem(fixed_key_pem().as_bytes()) {
        Ok(k) => k,
        Err(e) => panic!("the fixed fuzz key does not load: {e}"),
    }
}

/// Separator between `ca.crt` and `issuer.crt` in `ca_load` inputs.
pub const CA_FILES_SEPARATOR: &[u8] = b"\n#issuer.crt\n";

/// Splits a `ca_load` input into (`ca.crt`, `issuer.crt`). Without a separator the whole
/// input is used for both, which is an interesting case of its own.
pub fn split_ca_files(data: &[u8]) -> (&[u8], &[u8]) {
    match find(data, CA_FILES_SEPARATOR) {
        Some(i) => (&data[..i], &data[i + CA_FILES_SEPARATOR.len()..]),
        None => (data, data),
    }
}

/// Splits `n` newline-terminated text fields off the front of `data`; the rest is returned
/// as the last element. Fields that are not UTF-8 are returned lossily converted, so the
/// parsers still see (and must refuse) the replacement characters.
pub fn split_fields(data: &[u8], n: usize) -> (Vec<String>, &[u8]) {
    let mut rest = data;
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        match rest.iter().position(|b| *b == b'\n') {
            Some(i) => {
                fields.push(String::from_utf8_lossy(&rest[..i]).into_owned());
                rest = &rest[i + 1..];
            }
            None => {
                fields.push(String::from_utf8_lossy(rest).into_owned());
                rest = &[];
            }
        }
    }
    (fields, rest)
}

/// What an independent reading of a CSR says: the request parses and its self-signature
/// verifies. Reads PEM with x509-parser's reader or a lax base64 reading of its own, never
/// with the `pem` crate Sigil uses, so a bug in Sigil's PEM handling cannot hide itself.
/// Returns the DER SubjectPublicKeyInfo.
pub fn independently_verified_csr_spki(input: &[u8]) -> Option<Vec<u8>> {
    if input.first() == Some(&0x30) {
        return verified_spki(input);
    }
    // x509-parser's PEM reader is strict about line structure; RFC 7468's lax reading, like
    // Sigil's, allows whitespace of any kind anywhere in the base64 text (vertical tab
    // included). Either reading must give a request that verifies.
    let strict = x509_parser::pem::parse_x509_pem(input)
        .ok()
        .and_then(|(_, pem)| verified_spki(&pem.contents));
    strict.or_else(|| verified_spki(&lax_pem_body(input)?))
}

fn verified_spki(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::*;
    let (_, csr) = X509CertificationRequest::from_der(der).ok()?;
    csr.verify_signature().ok()?;
    Some(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// The base64 body of the first PEM block, read as laxly as possible: everything between
/// the end of the `-----BEGIN ...-----` marker and `-----END`, keeping only base64 alphabet
/// characters. Whatever Sigil's PEM reader tolerated (whitespace of any kind, in any place),
/// the DER decoded here must then still verify and carry the key Sigil accepted.
fn lax_pem_body(input: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let text = String::from_utf8_lossy(input);
    let begin = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let body_start = begin + text[begin..].find("-----")? + "-----".len();
    let body_end = body_start + text[body_start..].find("-----END ")?;
    let body: String = text[body_start..body_end]
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The SPIFFE ID rules, written out a second time without Sigil's code, so the fuzzer can
/// tell when Sigil accepts something the specification does not.
pub mod spec_rules {
    /// Trust domain: 1..=255 of `[a-z0-9._-]`.
    pub fn trust_domain(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
    }

    /// One path segment: non-empty `[A-Za-z0-9._-]`, not `.` or `..`.
    pub fn segment(s: &str) -> bool {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    }

    /// Namespace: a segment of at most 253 bytes (Dapr's limit, which its suite checks with
    /// a 253-character namespace; Kubernetes' own is 63).
    pub fn namespace(s: &str) -> bool {
        segment(s) && s.len() <= 253
    }

    /// Dapr app id: a segment without dots, at most 64 characters.
    pub fn app_id(s: &str) -> bool {
        segment(s) && !s.contains('.') && s.chars().count() <= 64
    }

    /// A whole SPIFFE ID: scheme, trust domain, then zero or more segments; at most 2048 bytes.
    pub fn spiffe_id(s: &str) -> bool {
        if s.len() > 2048 {
            return false;
        }
        let Some(rest) = s.strip_prefix("spiffe://") else {
            return false;
        };
        match rest.split_once('/') {
            None => trust_domain(rest),
            Some((td, path)) => trust_domain(td) && path.split('/').all(segment),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_key_loads_as_ed25519() {
        assert_eq!(fixed_key().key_type(), sigil_pki::KeyType::Ed25519);
    }

    #[test]
    fn framing() {
        let (f, rest) = split_fields(b"a\nb\nc\nrest\nmore", 3);
        assert_eq!(f, vec!["a", "b", "c"]);
        assert_eq!(rest, b"rest\nmore");
        let (f, rest) = split_fields(b"a", 3);
        assert_eq!(f, vec!["a", "", ""]);
        assert!(rest.is_empty());
        assert_eq!(split_ca_files(b"x\n#issuer.crt\ny"), (&b"x"[..], &b"y"[..]));
        assert_eq!(split_ca_files(b"xy"), (&b"xy"[..], &b"xy"[..]));
    }
}
