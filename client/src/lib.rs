//! # sigil-client — auto-renewing SPIFFE identities for sidecars
//!
//! A sidecar (or any workload) gets its X.509-SVID from Sigil or Dapr Sentry over the
//! `dapr.proto.sentry.v1.CA/SignCertificate` API, keeps it fresh, and uses it for mutual
//! TLS with peers that are authorized by SPIFFE ID.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sigil_client::Error> {
//! use sigil_client::{PeerAuthorizer, SourceConfig, SvidSource, TrustAnchorSource};
//! let config = SourceConfig::new(
//!     "127.0.0.1:50001",
//!     "orders",
//!     "default",
//!     TrustAnchorSource::File("/var/run/secrets/dapr.io/tls/ca.crt".into()),
//! )?;
//! let source = SvidSource::start(config)?;
//! source.wait_for_svid().await?;
//! let server = source.server_config(PeerAuthorizer::trust_domain("public".parse().unwrap()))?;
//! # let _ = server; Ok(()) }
//! ```
//!
//! What it does that daprd does not:
//! - every certificate is checked before it is used ([`svid`]): `valid_until` set, exactly
//!   one URI SAN equal to the ID asked for, our public key, chain to the trust anchors; a
//!   certificate for another identity is refused and the previous one kept;
//! - renewal at 50% ± 10% of the lifetime, exponential backoff on failure that never
//!   passes expiry, immediate renewal after a suspend or clock step ([`schedule`]);
//! - trust anchors reloaded from their file without a restart ([`anchors`]);
//! - an unreachable CA at start is retried, not a crash loop;
//! - status and the current certificate are observable ([`SvidSource::status`],
//!   [`SvidSource::subscribe`]).
//!
//! Keys: a fresh key per request, Ed25519 by default, ECDSA P-256 or P-384 on request.
//! RSA keys (which some Dapr components send) cannot be generated: *ring*, the only crypto
//! library in this build, verifies RSA but has no RSA key generation. Key bytes held by this
//! crate are zeroized on drop; the copy inside rustls' signing key is *ring*'s and is not.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod anchors;
mod error;
pub mod schedule;
pub mod sentry;
pub mod source;
pub mod svid;
pub mod tls;
mod verify;

pub use anchors::{AnchorSet, TrustAnchorSource, TRUST_ANCHORS_ENV};
pub use error::Error;
pub use schedule::RenewalPolicy;
pub use sigil_pki::{AppId, KeyType, Namespace, SpiffeId, TrustDomain};
pub use source::{SourceConfig, SourceStatus, SvidSource, Validator};
pub use svid::Svid;
pub use tls::{peer_spiffe_id, PeerAuthorizer};
