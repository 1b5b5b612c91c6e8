use time::OffsetDateTime;

/// Everything that can go wrong in the PKI core, in the terms of the person who has to fix it.
///
/// Each variant is one cause: callers (the gRPC layer, the CLI) map variants to status codes
/// and exit codes without parsing messages.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    // ---- identities -------------------------------------------------------------------
    /// The trust domain is empty, too long, or has characters SPIFFE does not allow.
    #[error("invalid trust domain {value:?}: {reason}")]
    InvalidTrustDomain {
        /// The rejected input (truncated for display).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The namespace cannot be used as a SPIFFE path segment.
    #[error("invalid namespace {value:?}: {reason}")]
    InvalidNamespace {
        /// The rejected input (truncated for display).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The app id breaks Dapr's rules or cannot be used as a SPIFFE path segment.
    /// The reason strings for Dapr's own rules are Dapr's texts.
    #[error("{reason}")]
    InvalidAppId {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A string that should be a SPIFFE ID is not one.
    #[error("invalid SPIFFE ID {value:?}: {reason}")]
    InvalidSpiffeId {
        /// The rejected input (truncated for display).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    // ---- certificate signing requests -------------------------------------------------
    /// The CSR is larger than Sigil accepts.
    #[error("CSR is {size} bytes, more than the limit of {max}")]
    CsrTooLarge {
        /// Size received.
        size: usize,
        /// Largest accepted size.
        max: usize,
    },
    /// The CSR is empty.
    #[error("CSR is required")]
    CsrMissing,
    /// The CSR is not PEM, or is PEM with a label other than `CERTIFICATE REQUEST`.
    // "invalid certificate signing request" opens both CSR messages, as in Dapr.
    #[error("invalid certificate signing request: not a PEM 'CERTIFICATE REQUEST' block: {0}")]
    CsrEncoding(String),
    /// The CSR's DER does not parse as PKCS#10.
    #[error("invalid certificate signing request: could not be parsed: {0}")]
    CsrMalformed(String),
    /// The CSR's self-signature does not verify with the key it carries.
    #[error("invalid signature")]
    CsrBadSignature,
    /// The CSR is signed with an algorithm Sigil refuses (e.g. SHA-1).
    #[error("CSR signature algorithm {0} is not accepted")]
    CsrSignatureAlgorithm(String),
    /// The public key's algorithm or curve is not one Sigil issues for.
    #[error("unsupported public key: {0}")]
    UnsupportedKey(String),
    /// An RSA key outside the accepted size range.
    #[error("RSA key of {bits} bits is not accepted (allowed: 2048 to 8192 bits)")]
    RsaKeySize {
        /// Modulus size in bits.
        bits: usize,
    },

    // ---- private keys -----------------------------------------------------------------
    /// The private key file could not be read as a key of a supported type.
    #[error("private key could not be read: {0}")]
    PrivateKey(String),

    // ---- CA material -----------------------------------------------------------------
    /// A PEM file holds no certificate, or something that is not PEM.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input (e.g. "trust anchors (ca.crt)").
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A certificate does not parse.
    #[error("{what}: certificate #{index} does not parse: {reason}")]
    CertificateMalformed {
        /// Which input.
        what: &'static str,
        /// Position in the file, from 1.
        index: usize,
        /// Parser's reason.
        reason: String,
    },
    /// A trust anchor is not self-signed (issuer != subject or signature fails).
    #[error("trust anchor {subject:?} is not a self-signed root: {reason}")]
    AnchorNotSelfSigned {
        /// Subject of the offending certificate.
        subject: String,
        /// What check failed.
        reason: &'static str,
    },
    /// A certificate in the CA chain is not allowed to sign certificates.
    #[error("{subject:?} cannot act as a CA: {reason}")]
    NotACa {
        /// Subject of the offending certificate.
        subject: String,
        /// Which property is missing.
        reason: &'static str,
    },
    /// The issuer key is not the key of the issuer certificate.
    #[error("issuer key does not match issuer certificate {subject:?} (the key is for a different certificate)")]
    KeyMismatch {
        /// Subject of the issuer certificate.
        subject: String,
    },
    /// A link in the issuer chain does not verify.
    #[error("issuer chain is broken: {subject:?} is not signed by {issuer:?}")]
    ChainBroken {
        /// Subject of the certificate whose signature failed.
        subject: String,
        /// Subject of the certificate that should have signed it.
        issuer: String,
    },
    /// The issuer chain does not end at any of the trust anchors.
    #[error("issuer chain does not lead to any trust anchor in ca.crt: top of chain {subject:?} is issued by {issuer:?}, which is not among the anchors")]
    UnknownRoot {
        /// Subject of the last chain certificate.
        subject: String,
        /// Its issuer name.
        issuer: String,
    },
    /// The chain repeats a certificate or is too long.
    #[error("issuer chain is invalid: {0}")]
    ChainShape(String),
    /// Path length constraint of a CA in the chain is exceeded.
    #[error("path length constraint of {subject:?} is exceeded")]
    PathLength {
        /// Subject of the constraining CA.
        subject: String,
    },
    /// A certificate in the CA material has expired.
    #[error("{what} {subject:?} expired at {not_after}")]
    Expired {
        /// Role ("root", "issuer").
        what: &'static str,
        /// Subject.
        subject: String,
        /// When it stopped being valid.
        not_after: OffsetDateTime,
    },
    /// A certificate in the CA material is not valid yet.
    #[error("{what} {subject:?} is not valid before {not_before}")]
    NotYetValid {
        /// Role ("root", "issuer").
        what: &'static str,
        /// Subject.
        subject: String,
        /// When it becomes valid.
        not_before: OffsetDateTime,
    },
    /// A trust bundle operation that would leave no root, or adds a non-root.
    #[error("trust bundle: {0}")]
    Bundle(String),

    // ---- issuance ---------------------------------------------------------------------
    /// The requested lifetime is zero, negative or absurd.
    #[error("invalid certificate lifetime: {0}")]
    InvalidTtl(String),
    /// The issuer (or a CA above it) is not valid at the moment of signing.
    #[error("refusing to sign: {0}")]
    IssuerNotValidNow(String),
    /// A DNS name for the leaf is not a valid DNS name.
    #[error("invalid DNS name {0:?}")]
    InvalidDnsName(String),
    /// The signing primitive failed.
    #[error("signing failed: {0}")]
    Signing(String),

    // ---- JWT-SVIDs --------------------------------------------------------------------
    /// The JWT signing key cannot be used (unreadable, or not fit for the algorithm).
    #[error("JWT signing key: {0}")]
    JwtKey(String),
    /// The JWKS document is unusable.
    #[error("JWKS: {0}")]
    Jwks(String),
    /// The requested JWT audiences are refused.
    #[error("invalid jwt_audiences: {0}")]
    JwtAudience(String),
}
