//! JOSE, written once: the JWS algorithms ([`Algorithm`]), public JSON Web Keys and key
//! sets ([`jwk`]), and compact tokens ([`jws`]: split, parse, verify, assemble).
//!
//! Everything that signs or reads a JWT goes through here: the JWT-SVID signer and its
//! published key set ([`crate::jwt`]), the JWKS token validator, and the Kubernetes
//! validator's look at a service-account token before it asks the API server. So there is
//! one list of algorithms, one JWK reader, one set of limits, and one place where `alg:
//! none`, HMAC and key confusion are shut out.
//!
//! Pure like the rest of the crate: no I/O, and the caller passes `now`. The test signer
//! ([`testing`], feature `testing`) makes the tokens a verifier must refuse.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

mod alg;
pub mod jwk;
pub mod jws;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use alg::{Algorithm, KeyKind};
pub use jwk::{Jwk, JwkSet, JwksError, PublicKey};
pub use jws::{parse_unverified, Expectations, JwtError, TokenClaims, UnverifiedToken};

/// Largest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest `kid` accepted, in a token and in a key set.
pub const MAX_KID_BYTES: usize = 256;
/// Largest JWKS document read, in bytes: a relying party's, fetched or from a file, and
/// Sigil's own stored set alike.
pub const MAX_JWKS_BYTES: usize = 512 * 1024;
/// Most keys in one JWKS document (bounds the work of a token without `kid`).
pub const MAX_JWKS_KEYS: usize = 64;
/// Tolerance for `exp`, `nbf` and `iat` (Dapr's).
pub const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Base64url without padding: JWS parts and the members Sigil writes.
pub(crate) const B64URL: GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Base64url that tolerates padding, for JWK members: some JWKS publishers pad `n`/`e`.
pub(crate) const JWK_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Dapr's `kid` for an RFC 7638 thumbprint: *standard* base64 with padding (not RFC 7638's
/// base64url), so a `jwks.json` written by Dapr keeps matching tokens of the same key.
pub fn kid_from_thumbprint(thumbprint: &[u8; 32]) -> String {
    STANDARD.encode(thumbprint)
}

/// Token content quoted back to a caller: at most 64 characters, marked when cut.
pub(crate) fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}
