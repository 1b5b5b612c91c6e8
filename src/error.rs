//! The service's one error type, and the one place where errors become gRPC statuses.

use tonic::{Code, Status};

/// What can go wrong in the Sigil service, in the user's terms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request named no validator and the server has no default (Dapr's text).
    #[error("a validator name must be specified in this environment")]
    ValidatorNotSpecified,
    /// The request named a validator the server does not run (Dapr's text).
    #[error("the requested validator is not enabled")]
    ValidatorNotEnabled,
    /// The caller did not prove the identity it asked for.
    #[error("{0}")]
    Denied(String),
    /// A system we depend on for authentication (Kubernetes API, JWKS endpoint) is
    /// unreachable: fail closed, tell the caller to retry.
    #[error("authentication backend unavailable: {0}")]
    Unavailable(String),
    /// The CSR is unusable.
    #[error("{0}")]
    Csr(sigil_pki::Error),
    /// Signing failed (issuer expired, key problem).
    #[error("failed to sign certificate: {0}")]
    Signing(sigil_pki::Error),
    /// The request's `jwt_audiences` are refused (too many, too long, control characters).
    #[error("{0}")]
    JwtAudiences(String),
    /// Signing a JWT-SVID failed.
    #[error("failed to generate JWT: {0}")]
    JwtSigning(sigil_pki::Error),
    /// The caller (by address or by proven identity) sent more requests than its rate limit.
    #[error("rate limit: {0}")]
    RateLimited(String),
    /// The server is shutting down or not ready.
    #[error("server not ready: {0}")]
    NotReady(String),
    /// CA material problem (loading, storing, validating).
    #[error("CA material: {0}")]
    Ca(#[from] sigil_pki::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Invalid configuration, found at start.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store was emptied, wholly or partly, after CA material had existed in it.
    /// Generating a new root over it would break mTLS for every workload, so Sigil refuses.
    #[error("CA material lost: {0}")]
    CaMaterialLost(String),
    /// The credential store refused or failed.
    #[error("credential store: {0}")]
    Store(String),
    /// The gRPC server stopped with an error while serving.
    #[error("gRPC server: {0}")]
    Serve(String),
    /// A task of ours panicked or was cancelled (a bug, never the caller's doing).
    #[error("{what} task failed: {source}")]
    Task {
        /// Which task.
        what: &'static str,
        /// How it ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// The gRPC code Dapr Sentry answers for this error (see the spec's request handling).
    pub fn code(&self) -> Code {
        match self {
            Error::ValidatorNotSpecified
            | Error::ValidatorNotEnabled
            | Error::Csr(_)
            | Error::JwtAudiences(_) => Code::InvalidArgument,
            Error::Denied(_) => Code::PermissionDenied,
            Error::Unavailable(_) | Error::NotReady(_) => Code::Unavailable,
            Error::RateLimited(_) => Code::ResourceExhausted,
            Error::Signing(_)
            | Error::JwtSigning(_)
            | Error::Ca(_)
            | Error::Io { .. }
            | Error::Config(_)
            | Error::CaMaterialLost(_)
            | Error::Store(_)
            | Error::Serve(_)
            | Error::Task { .. } => Code::Internal,
        }
    }

    /// A short, stable label for metrics (`reason` on failure counters).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::ValidatorNotSpecified => "validator_not_specified",
            Error::ValidatorNotEnabled => "validator_not_enabled",
            Error::Denied(_) => "denied",
            Error::Unavailable(_) => "auth_backend_unavailable",
            Error::Csr(sigil_pki::Error::CsrBadSignature) => "csr_bad_signature",
            Error::Csr(_) => "csr_invalid",
            Error::Signing(sigil_pki::Error::IssuerNotValidNow(_)) => "issuer_not_valid",
            Error::Signing(_) => "signing_failed",
            Error::NotReady(_) => "not_ready",
            Error::RateLimited(_) => "rate_limited",
            Error::JwtAudiences(_) => "jwt_audiences_invalid",
            Error::JwtSigning(_) => "jwt_signing_failed",
            Error::Ca(_)
            | Error::Io { .. }
            | Error::Config(_)
            | Error::CaMaterialLost(_)
            | Error::Store(_)
            | Error::Serve(_)
            | Error::Task { .. } => "internal",
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        // Internal details (paths, store errors) are logged, not sent to callers.
        let message = match e.code() {
            Code::Internal => match &e {
                Error::Signing(_) | Error::JwtSigning(_) => e.to_string(),
                _ => "internal error".to_string(),
            },
            _ => e.to_string(),
        };
        Status::new(e.code(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_dapr() {
        assert_eq!(Error::ValidatorNotSpecified.code(), Code::InvalidArgument);
        assert_eq!(
            Error::ValidatorNotEnabled.to_string(),
            "the requested validator is not enabled"
        );
        assert_eq!(Error::Denied("x".into()).code(), Code::PermissionDenied);
        assert_eq!(Error::Unavailable("x".into()).code(), Code::Unavailable);
        assert_eq!(
            Error::Csr(sigil_pki::Error::CsrBadSignature).to_string(),
            "invalid signature"
        );
        let s: Status = Error::Store("secret detail".into()).into();
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secret detail"));
    }
}
