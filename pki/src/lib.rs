//! # sigil-pki — the pure PKI core of Sigil
//!
//! Everything Sigil decides about certificates lives here, and nothing else does: no
//! async, no files, no network, no Kubernetes. Callers hand in bytes and the current
//! time, and get back typed values or a typed [`Error`].
//!
//! The flow of one signing request through this crate:
//!
//! 1. [`spiffe`] turns the caller's claimed trust domain, namespace and app id into types
//!    that can only hold valid values ([`TrustDomain`], [`Namespace`], [`AppId`],
//!    [`SpiffeId`]). Bad input never gets further than a parse.
//! 2. [`csr`] parses a PEM or DER certificate signing request, bounds its size, verifies
//!    its self-signature and applies the key policy. The result, a [`ValidatedCsr`], can only
//!    be obtained that way, and it keeps nothing of the request but its public key.
//! 3. [`issue`] combines a [`ValidatedCsr`], a proven [`SpiffeId`] and an [`IssuePolicy`]
//!    into a leaf certificate signed by the current [`Authority`], capped at the issuer's own
//!    expiry and refused outright when the issuer is not valid at that moment.
//!
//! CA material lives in [`authority`]: generate a root and issuer the way Dapr Sentry does,
//! or load the user's own PEM files, with each way a bundle can be broken reported as its
//! own [`Error`] variant. [`bundle::TrustBundle`] holds one or more roots so that a root can
//! be rotated without a flag day. Private keys live in [`keys`], zeroized on drop and
//! redacted in `Debug`.
//!
//! Time is never read behind the caller's back: every check takes `now`, which callers
//! obtain from a [`Clock`] so tests can move time without sleeping.
//!
//! JWT-SVIDs (tokens issued next to certificates) live in [`jwt`]: signing keys, the
//! published key set and its rotation, and token signing. Both it and Sigil's token
//! validators stand on [`jose`], the one place that knows JWS algorithms, JWKs and compact
//! tokens.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authority;
pub mod bundle;
pub mod clock;
pub mod csr;
mod der;
mod error;
mod inspect;
pub mod issue;
pub mod jose;
pub mod jwt;
pub mod keys;
pub mod pem_bundle;
pub mod spiffe;

pub use authority::{Authority, CaFiles, CaParams, ExpiryWarning};
pub use bundle::TrustBundle;
pub use clock::{Clock, ManualClock, SystemClock};
pub use csr::{CsrKeyType, ValidatedCsr, MAX_CSR_BYTES};
pub use error::Error;
pub use issue::{IssuePolicy, IssuedCertificate};
pub use jwt::{JwksDocument, JwtRequest, JwtSigningKey};
pub use keys::{KeyType, PrivateKey};
pub use spiffe::{AppId, Namespace, SpiffeId, TrustDomain};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
