//! The crate's one error type. Variants are named for what the operator has to look at.

use std::time::Duration;

/// Everything that can go wrong while obtaining, checking, renewing or using an SVID.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is unusable (bad app id, unsupported key type, zero timeout, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The trust anchors could not be read or are not a bundle of root certificates.
    #[error("trust anchors from {source_name}: {reason}")]
    TrustAnchors {
        /// Where the anchors came from (a path, `DAPR_TRUST_ANCHORS`, ...).
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// The token file could not be read. Projected tokens rotate, so it is read on every
    /// request and a failure only fails that request.
    #[error("token file {path}: {reason}")]
    Token {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Generating the key or the CSR failed.
    #[error("key generation: {0}")]
    Key(String),
    /// No connection to Sentry/Sigil (refused, DNS, TLS handshake, Sentry's identity
    /// not the one pinned).
    #[error("cannot reach the CA at {addr}: {reason}")]
    Unreachable {
        /// The address dialled.
        addr: String,
        /// The cause, with its chain of sources.
        reason: String,
    },
    /// One try took longer than the per-try timeout.
    #[error("the CA at {addr} did not answer within {timeout:?}")]
    Timeout {
        /// The address dialled.
        addr: String,
        /// The per-try limit.
        timeout: Duration,
    },
    /// The CA answered with a gRPC error.
    #[error("the CA refused the request ({code:?}): {message}")]
    Refused {
        /// gRPC status code.
        code: tonic::Code,
        /// The CA's message.
        message: String,
    },
    /// The CA's answer is malformed (no `valid_until`, no certificate, bad PEM ...).
    #[error("the CA's response is unusable: {0}")]
    BadResponse(String),
    /// The CA issued a certificate for an identity other than the one asked for. The
    /// previous certificate, if any, stays in use.
    #[error(
        "the CA issued a certificate for {got}, but {expected} was asked for; certificate refused"
    )]
    WrongIdentity {
        /// The SPIFFE ID requested.
        expected: String,
        /// What the certificate carries.
        got: String,
    },
    /// The issued certificate does not carry the public key of the key we generated.
    #[error("the issued certificate does not carry the public key we sent; certificate refused")]
    KeyMismatch,
    /// The issued certificate does not chain to the trust anchors.
    #[error("the issued certificate does not verify against the trust anchors: {0}")]
    Untrusted(String),
    /// A TLS peer's certificate was refused (chain or identity).
    #[error("peer certificate refused: {0}")]
    PeerRefused(String),
    /// Building a rustls configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The source was stopped.
    #[error("the certificate source has been stopped")]
    Stopped,
    /// Writing an output file failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
}

impl Error {
    /// Whether trying again soon can help (the CA is down or overloaded), as opposed to a
    /// refusal that will repeat until something is reconfigured.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Timeout { .. } => true,
            Error::Refused { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
            ),
            _ => false,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, e: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            reason: e.to_string(),
        }
    }
}

/// An error and all its sources, joined with `: ` (tonic's transport errors say only
/// "transport error" at the top; the reason is further down).
pub(crate) fn with_sources(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}
