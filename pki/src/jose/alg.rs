//! JWS signature algorithms: the one list Sigil signs with and accepts.

use std::fmt;
use std::str::FromStr;

use super::jws::JwtError;
use super::shorten;

/// A JWS signature algorithm. Public-key algorithms only: `none` and HMAC have no variant,
/// so no code path can sign or accept them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Dapr's default).
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA P-256 with SHA-256.
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// Ed25519. daprd does not accept it: Sigil signs with it only on explicit request.
    EdDsa,
}

/// The kind of key an algorithm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA.
    Rsa,
    /// ECDSA on P-256.
    P256,
    /// ECDSA on P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Rsa => "RSA",
            KeyKind::P256 => "ECDSA P-256",
            KeyKind::P384 => "ECDSA P-384",
            KeyKind::Ed25519 => "Ed25519",
        })
    }
}

impl Algorithm {
    /// Every algorithm, for help texts and tests.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::EdDsa,
    ];

    /// The JOSE name (`RS256`, `EdDSA`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// Reads the `alg` of a token header or a JWK. JOSE names are case-sensitive (RFC 7515
    /// section 4.1.1), so this is exact; `none` and HMAC names get errors of their own,
    /// whatever their case, so a log says plainly what was tried.
    pub fn from_jose(name: &str) -> Result<Self, JwtError> {
        if let Some(alg) = Algorithm::ALL.into_iter().find(|a| a.name() == name) {
            return Ok(alg);
        }
        if name.eq_ignore_ascii_case("none") {
            Err(JwtError::AlgNone)
        } else if name.len() >= 2 && name.as_bytes()[..2].eq_ignore_ascii_case(b"HS") {
            Err(JwtError::Hmac(shorten(name)))
        } else {
            Err(JwtError::UnsupportedAlgorithm(shorten(name)))
        }
    }

    /// The key this algorithm signs and verifies with.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::Rs256
            | Algorithm::Rs384
            | Algorithm::Rs512
            | Algorithm::Ps256
            | Algorithm::Ps384
            | Algorithm::Ps512 => KeyKind::Rsa,
            Algorithm::Es256 => KeyKind::P256,
            Algorithm::Es384 => KeyKind::P384,
            Algorithm::EdDsa => KeyKind::Ed25519,
        }
    }

    /// Whether Dapr sidecars accept tokens signed this way (they take RS*, ES* and PS*).
    pub fn accepted_by_daprd(self) -> bool {
        self != Algorithm::EdDsa
    }

    /// The algorithm used with an existing key when none was configured; `None` for
    /// Ed25519, which must be asked for explicitly.
    pub fn default_for(kind: KeyKind) -> Option<Self> {
        match kind {
            KeyKind::Rsa => Some(Algorithm::Rs256),
            KeyKind::P256 => Some(Algorithm::Es256),
            KeyKind::P384 => Some(Algorithm::Es384),
            KeyKind::Ed25519 => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// For flags and configuration (`--jwt-signing-algorithm es256`): forgiving about case and
/// surrounding space, unlike [`Algorithm::from_jose`], which reads what others signed.
impl FromStr for Algorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let names: Vec<_> = Algorithm::ALL.iter().map(|a| a.name()).collect();
                format!(
                    "unknown JWT signing algorithm {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jose_names_are_exact_and_flags_forgiving() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_jose(alg.name()), Ok(alg));
            assert_eq!(alg.name().to_lowercase().parse::<Algorithm>(), Ok(alg));
        }
        assert_eq!(
            Algorithm::from_jose("rs256"),
            Err(JwtError::UnsupportedAlgorithm("rs256".into()))
        );
        assert_eq!(Algorithm::from_jose("None"), Err(JwtError::AlgNone));
        assert_eq!(
            Algorithm::from_jose("hs256"),
            Err(JwtError::Hmac("hs256".into()))
        );
        assert!("HS256".parse::<Algorithm>().is_err());
    }
}
