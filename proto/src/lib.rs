//! Wire types for `dapr.proto.sentry.v1`, generated at build time from
//! `dapr/proto/sentry/v1/sentry.proto` with a pure-Rust protobuf compiler.
//!
//! The proto file reproduces Dapr Sentry's package, service, message names and field
//! numbers exactly: an unmodified Dapr sidecar talks to Sigil through these types.
#![forbid(unsafe_code)]

/// `dapr.proto.sentry.v1`: the `CA` service and its messages.
pub mod sentry {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("dapr.proto.sentry.v1");
}

/// Encoded `FileDescriptorSet` of the proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sentry_descriptor.bin"));

pub use sentry::sign_certificate_request::TokenValidator;
pub use sentry::{SignCertificateRequest, SignCertificateResponse};

/// A credential in a `Debug` view: its length, never its bytes.
struct Redacted(usize);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}

// skip_debug reaches the nested enum too; it holds no secret.
impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str_name())
    }
}

impl std::fmt::Debug for SignCertificateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignCertificateRequest")
            .field("id", &self.id)
            .field("token", &Redacted(self.token.len()))
            .field("trust_domain", &self.trust_domain)
            .field("namespace", &self.namespace)
            .field(
                "certificate_signing_request",
                &String::from_utf8_lossy(&self.certificate_signing_request),
            )
            .field("token_validator", &self.token_validator())
            .field("jwt_audiences", &self.jwt_audiences)
            .finish()
    }
}

impl std::fmt::Debug for SignCertificateResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let audiences: std::collections::BTreeMap<_, _> = self
            .per_audience_jwts
            .iter()
            .map(|(aud, jwt)| (aud, Redacted(jwt.len())))
            .collect();
        f.debug_struct("SignCertificateResponse")
            .field(
                "workload_certificate",
                &String::from_utf8_lossy(&self.workload_certificate),
            )
            .field(
                "trust_chain_certificates",
                &self
                    .trust_chain_certificates
                    .iter()
                    .map(|c| String::from_utf8_lossy(c))
                    .collect::<Vec<_>>(),
            )
            .field("valid_until", &self.valid_until)
            .field("jwt", &self.jwt.as_ref().map(|j| Redacted(j.len())))
            .field("per_audience_jwts", &audiences)
            .finish()
    }
}

/// Full gRPC method path of the one RPC.
pub const SIGN_CERTIFICATE_PATH: &str = "/dapr.proto.sentry.v1.CA/SignCertificate";

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn field_numbers_match_dapr() {
        // Hand-encode a request with field numbers 1..7 and decode it with the generated type.
        let mut buf = Vec::new();
        for (field, value) in [(1u8, "app"), (2, "tok"), (3, "td"), (4, "ns")] {
            buf.push(field << 3 | 2);
            buf.push(value.len() as u8);
            buf.extend_from_slice(value.as_bytes());
        }
        buf.extend_from_slice(&[5 << 3 | 2, 3, b'c', b's', b'r']);
        buf.extend_from_slice(&[6 << 3, 2]); // token_validator = KUBERNETES
        buf.extend_from_slice(&[7 << 3 | 2, 3, b'a', b'u', b'd']);
        let req = SignCertificateRequest::decode(buf.as_slice()).unwrap();
        assert_eq!(req.id, "app");
        assert_eq!(req.token, "tok");
        assert_eq!(req.trust_domain, "td");
        assert_eq!(req.namespace, "ns");
        assert_eq!(req.certificate_signing_request, b"csr");
        assert_eq!(req.token_validator(), TokenValidator::Kubernetes);
        assert_eq!(req.jwt_audiences, vec!["aud".to_string()]);

        let resp = SignCertificateResponse {
            workload_certificate: b"w".to_vec(),
            trust_chain_certificates: vec![b"t".to_vec()],
            valid_until: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            jwt: Some("j".to_string()),
            per_audience_jwts: [("a".to_string(), "x".to_string())].into_iter().collect(),
        };
        let bytes = resp.encode_to_vec();
        assert_eq!(&bytes[..3], &[1 << 3 | 2, 1, b'w']);
        assert_eq!(&bytes[3..6], &[2 << 3 | 2, 1, b't']);
        assert_eq!(bytes[6], 3 << 3 | 2);
        assert!(bytes.contains(&(4 << 3 | 2)) && bytes.contains(&(5 << 3 | 2)));
        assert_eq!(TokenValidator::Jwks as i32, 3);
        assert_eq!(TokenValidator::Insecure as i32, 1);
    }

    #[test]
    fn debug_never_shows_a_credential() {
        let req = SignCertificateRequest {
            id: "orders".into(),
            token: "eyJsecret-token".into(),
            jwt_audiences: vec!["aud".into()],
            ..Default::default()
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("orders") && shown.contains("<redacted, 15 bytes>"));
        let resp = SignCertificateResponse {
            jwt: Some("eyJsvid-one".into()),
            per_audience_jwts: [("a".to_string(), "eyJsvid-two".to_string())].into(),
            ..Default::default()
        };
        let shown = format!("{resp:?}");
        assert!(!shown.contains("svid"), "{shown}");
        assert!(shown.contains("\"a\": <redacted, 11 bytes>"), "{shown}");
    }
}
