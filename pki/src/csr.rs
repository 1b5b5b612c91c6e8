//! Certificate signing requests: parsed, bounded, signature-checked and key-policed.
//!
//! [`ValidatedCsr`] is the only thing the issuing code accepts, and the only way to get one
//! is [`ValidatedCsr::parse`], which runs every check. It keeps nothing from the request
//! but the public key: subject, requested extensions and SANs are read by nobody, so they
//! can never leak into a certificate.

use std::fmt;

use rcgen::{PublicKeyData, SignatureAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::error::X509Error;
use x509_parser::oid_registry::{self, Oid};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::Error;

/// Largest CSR accepted, in bytes of PEM or DER. A 8192-bit RSA CSR in PEM is about 2.5 KiB.
pub const MAX_CSR_BYTES: usize = 64 * 1024;

/// Smallest and largest RSA modulus accepted, in bits.
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// The kind of public key a CSR carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CsrKeyType {
    /// Ed25519.
    Ed25519,
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// RSA with the given modulus size.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
}

impl fmt::Display for CsrKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CsrKeyType::Ed25519 => f.write_str("ed25519"),
            CsrKeyType::EcdsaP256 => f.write_str("ecdsa-p256"),
            CsrKeyType::EcdsaP384 => f.write_str("ecdsa-p384"),
            CsrKeyType::Rsa { bits } => write!(f, "rsa-{bits}"),
        }
    }
}

/// A CSR whose encoding, signature and key passed every check. Holds only the public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedCsr {
    key_type: CsrKeyType,
    /// SubjectPublicKeyInfo BIT STRING contents.
    public_key: Vec<u8>,
    /// The full DER SubjectPublicKeyInfo as the requester sent it.
    spki_der: Vec<u8>,
}

impl ValidatedCsr {
    /// Parses a CSR given as PEM (`CERTIFICATE REQUEST`, or the legacy `CERTIFICATE` label
    /// Dapr also accepts) or as raw DER, and runs every check.
    pub fn parse(input: &[u8]) -> Result<Self, Error> {
        if input.is_empty() {
            return Err(Error::CsrMissing);
        }
        if input.len() > MAX_CSR_BYTES {
            return Err(Error::CsrTooLarge {
                size: input.len(),
                max: MAX_CSR_BYTES,
            });
        }
        if input[0] == 0x30 {
            Self::from_der(input)
        } else {
            let der = decode_single_pem(input)?;
            Self::from_der(&der)
        }
    }

    /// Parses and checks a DER-encoded PKCS#10 request.
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        let csr: X509CertificationRequest<'_> = exactly_one("the request", der)?;
        let checked = Self::from_key(&csr.certification_request_info.subject_pki)?;
        check_signature_algorithm(&csr.signature_algorithm.algorithm)?;
        csr.verify_signature().map_err(|e| match e {
            x509_parser::error::X509Error::SignatureUnsupportedAlgorithm => {
                Error::CsrSignatureAlgorithm(csr.signature_algorithm.algorithm.to_id_string())
            }
            _ => Error::CsrBadSignature,
        })?;
        Ok(checked)
    }

    /// Takes a bare DER SubjectPublicKeyInfo whose possession was proven elsewhere and runs
    /// the key checks a CSR's key gets. Its one user is the PodCertificateRequest signer, for
    /// `v1beta1`'s `pkixPublicKey`: the kube-apiserver verifies the request's
    /// `proofOfPossession` over the pod UID when the request is created, and the spec cannot
    /// change after that.
    pub fn from_proven_public_key(spki_der: &[u8]) -> Result<Self, Error> {
        let spki: SubjectPublicKeyInfo<'_> = exactly_one("the public key", spki_der)?;
        Self::from_key(&spki)
    }

    /// The key checks, shared by both ways in.
    fn from_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, Error> {
        Ok(Self {
            key_type: classify_key(spki)?,
            public_key: spki.subject_public_key.data.to_vec(),
            spki_der: spki.raw.to_vec(),
        })
    }

    /// The key's algorithm.
    pub fn key_type(&self) -> CsrKeyType {
        self.key_type
    }

    /// DER SubjectPublicKeyInfo of the requester's key, exactly as received.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

impl PublicKeyData for ValidatedCsr {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        // Only the SubjectPublicKeyInfo algorithm identifier is written from this, and for
        // each of these it is exactly the identifier the requester used.
        match self.key_type {
            CsrKeyType::Ed25519 => &rcgen::PKCS_ED25519,
            CsrKeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            CsrKeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            CsrKeyType::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

/// `der` as exactly one DER value of type `T`, at most [`MAX_CSR_BYTES`] long: the framing
/// checks every input gets before its own. `what` names it in errors.
fn exactly_one<'a, T: FromDer<'a, X509Error>>(what: &str, der: &'a [u8]) -> Result<T, Error> {
    if der.len() > MAX_CSR_BYTES {
        return Err(Error::CsrTooLarge {
            size: der.len(),
            max: MAX_CSR_BYTES,
        });
    }
    // x509-parser does not check the outer tag; DER demands a SEQUENCE (found by fuzzing).
    if der.first() != Some(&0x30) {
        return Err(Error::CsrMalformed(format!("{what} is not a DER SEQUENCE")));
    }
    let (rest, value) =
        T::from_der(der).map_err(|e| Error::CsrMalformed(format!("{what}: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::CsrMalformed(format!(
            "{} bytes of trailing data after {what}",
            rest.len()
        )));
    }
    Ok(value)
}

fn decode_single_pem(input: &[u8]) -> Result<Vec<u8>, Error> {
    let text = std::str::from_utf8(input)
        .map_err(|_| Error::CsrEncoding("input is neither DER nor ASCII PEM".into()))?;
    let blocks = pem::parse_many(text).map_err(|e| Error::CsrEncoding(e.to_string()))?;
    let block = match blocks.as_slice() {
        [] => return Err(Error::CsrEncoding("no PEM block found".into())),
        [one] => one,
        more => {
            return Err(Error::CsrEncoding(format!(
                "expected one PEM block, found {}",
                more.len()
            )))
        }
    };
    if block.tag() != "CERTIFICATE REQUEST" && block.tag() != "CERTIFICATE" {
        return Err(Error::CsrEncoding(format!(
            "PEM block is {:?}, expected \"CERTIFICATE REQUEST\"",
            block.tag()
        )));
    }
    // Anything but whitespace around the block is refused: a CSR is one block, nothing else.
    let begin = text.find("-----BEGIN").unwrap_or(0);
    let end_marker = format!("-----END {}-----", block.tag());
    let end = text.find(&end_marker).map(|i| i + end_marker.len());
    let trailing = end.map(|e| &text[e..]).unwrap_or("");
    if !text[..begin].trim().is_empty() || !trailing.trim().is_empty() {
        return Err(Error::CsrEncoding(
            "unexpected data outside the PEM block".into(),
        ));
    }
    Ok(block.contents().to_vec())
}

fn classify_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<CsrKeyType, Error> {
    let alg = &spki.algorithm.algorithm;
    let key = &spki.subject_public_key.data;
    if *alg == oid_registry::OID_SIG_ED25519 {
        if key.len() != 32 {
            return Err(Error::UnsupportedKey("Ed25519 key is not 32 bytes".into()));
        }
        return Ok(CsrKeyType::Ed25519);
    }
    if *alg == oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| Error::UnsupportedKey("EC key without a named curve".into()))?;
        let (kind, len) = if curve == oid_registry::OID_EC_P256 {
            (CsrKeyType::EcdsaP256, 65)
        } else if curve == oid_registry::OID_NIST_EC_P384 {
            (CsrKeyType::EcdsaP384, 97)
        } else {
            return Err(Error::UnsupportedKey(format!(
                "EC curve {} (accepted: P-256, P-384)",
                curve.to_id_string()
            )));
        };
        if key.first() != Some(&0x04) || key.len() != len {
            return Err(Error::UnsupportedKey(
                "EC point must be uncompressed".into(),
            ));
        }
        return Ok(kind);
    }
    if *alg == oid_registry::OID_PKCS1_RSAENCRYPTION {
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(Error::UnsupportedKey("RSA key does not parse".into()));
        };
        let bits = modulus_bits(rsa.modulus);
        if !RSA_BITS.contains(&bits) {
            return Err(Error::RsaKeySize { bits });
        }
        return Ok(CsrKeyType::Rsa { bits });
    }
    Err(Error::UnsupportedKey(format!(
        "algorithm {} (accepted: Ed25519, ECDSA P-256/P-384, RSA 2048-8192)",
        alg.to_id_string()
    )))
}

fn modulus_bits(modulus: &[u8]) -> usize {
    let trimmed: &[u8] = {
        let zeros = modulus.iter().take_while(|b| **b == 0).count();
        &modulus[zeros..]
    };
    match trimmed.first() {
        None => 0,
        Some(first) => (trimmed.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

fn check_signature_algorithm(alg: &Oid<'_>) -> Result<(), Error> {
    // SHA-1 signatures are forgeable in practice; no modern client sends them.
    let sha1 = [
        oid_registry::OID_PKCS1_SHA1WITHRSA,
        oid_registry::OID_SHA1_WITH_RSA,
    ];
    if sha1.contains(alg) {
        return Err(Error::CsrSignatureAlgorithm(format!(
            "{} (SHA-1)",
            alg.to_id_string()
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    /// PEM output of an openssl command (openssl is installed by .ci/run).
    pub(crate) fn openssl_pem(script: &str) -> Vec<u8> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("openssl is needed to make RSA and legacy-format test keys");
        assert!(out.status.success(), "{script} failed");
        out.stdout
    }

    pub(crate) fn rsa_pkcs8(bits: usize) -> Vec<u8> {
        let pem_text = openssl_pem(&format!(
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:{bits} 2>/dev/null"
        ));
        ::pem::parse(pem_text).unwrap().into_contents()
    }

    pub(crate) fn key_for(kind: CsrKeyType) -> KeyPair {
        match kind {
            CsrKeyType::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
            CsrKeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            CsrKeyType::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
            CsrKeyType::Rsa { bits } => KeyPair::from_pkcs8_der_and_sign_algo(
                &rustls_pki_types::PrivatePkcs8KeyDer::from(rsa_pkcs8(bits)),
                &rcgen::PKCS_RSA_SHA256,
            )
            .unwrap(),
        }
    }

    pub(crate) fn csr_pem(key: &KeyPair) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_every_supported_key_type_in_pem_and_der() {
        for kind in [
            CsrKeyType::Ed25519,
            CsrKeyType::EcdsaP256,
            CsrKeyType::EcdsaP384,
            CsrKeyType::Rsa { bits: 2048 },
        ] {
            let key = key_for(kind);
            let pem_text = csr_pem(&key);
            let csr = ValidatedCsr::parse(pem_text.as_bytes()).unwrap();
            assert_eq!(csr.key_type(), kind);
            assert_eq!(csr.der_bytes(), key.der_bytes());
            let der = pem::parse(&pem_text).unwrap().into_contents();
            assert_eq!(ValidatedCsr::parse(&der).unwrap(), csr);
            // The legacy label Dapr tolerates.
            let legacy = pem::encode(&pem::Pem::new("CERTIFICATE", der));
            assert_eq!(
                ValidatedCsr::parse(legacy.as_bytes()).unwrap().key_type(),
                kind
            );
        }
    }

    #[test]
    fn a_bare_public_key_gets_the_same_key_checks_and_the_same_result_as_its_csr() {
        for kind in [
            CsrKeyType::Ed25519,
            CsrKeyType::EcdsaP256,
            CsrKeyType::EcdsaP384,
            CsrKeyType::Rsa { bits: 3072 },
        ] {
            let key = key_for(kind);
            let from_csr = ValidatedCsr::parse(csr_pem(&key).as_bytes()).unwrap();
            let bare = ValidatedCsr::from_proven_public_key(from_csr.spki_der()).unwrap();
            assert_eq!(bare, from_csr, "{kind}");
        }
        let p521 = openssl_pem(
            "openssl ecparam -name secp521r1 -genkey -noout | openssl pkey -pubout -outform DER",
        );
        assert!(matches!(
            ValidatedCsr::from_proven_public_key(&p521),
            Err(Error::UnsupportedKey(_))
        ));
        let rsa1024 = openssl_pem(
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 2>/dev/null | openssl pkey -pubout -outform DER",
        );
        assert_eq!(
            ValidatedCsr::from_proven_public_key(&rsa1024).unwrap_err(),
            Error::RsaKeySize { bits: 1024 }
        );
        let good = ValidatedCsr::parse(csr_pem(&key_for(CsrKeyType::EcdsaP256)).as_bytes())
            .unwrap()
            .spki_der()
            .to_vec();
        let mut trailing = good.clone();
        trailing.push(0);
        for bad in [
            &[][..],
            &[0x04, 0x00][..],
            &good[..good.len() - 1],
            &trailing[..],
        ] {
            assert!(
                matches!(
                    ValidatedCsr::from_proven_public_key(bad),
                    Err(Error::CsrMalformed(_))
                ),
                "{bad:02x?} accepted"
            );
        }
    }

    #[test]
    fn refuses_small_rsa() {
        // ring will not even load a 1024-bit key, so the CSR comes from openssl.
        let dir = std::env::temp_dir().join(format!("sigil-rsa1024-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keyf = dir.join("k.pem");
        let out = std::process::Command::new("openssl")
            .args([
                "req", "-new", "-newkey", "rsa:1024", "-nodes", "-subj", "/", "-outform", "DER",
                "-keyout",
            ])
            .arg(&keyf)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            ValidatedCsr::parse(&out.stdout).unwrap_err(),
            Error::RsaKeySize { bits: 1024 }
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn refuses_unsupported_curves() {
        for curve in ["secp521r1", "secp256k1"] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "openssl ecparam -name {curve} -genkey -noout | openssl req -new -key /dev/stdin -subj / -outform DER"
                ))
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl failed for {curve}");
            assert!(
                matches!(
                    ValidatedCsr::parse(&out.stdout),
                    Err(Error::UnsupportedKey(_))
                ),
                "{curve} accepted"
            );
        }
    }

    #[test]
    fn refuses_sha1_signatures() {
        let der = openssl_pem(
            "openssl req -new -newkey rsa:2048 -nodes -keyout /dev/null -subj / -sha1 -outform DER 2>/dev/null",
        );
        assert!(
            matches!(ValidatedCsr::parse(&der), Err(Error::CsrSignatureAlgorithm(ref a)) if a.contains("SHA-1")),
            "{:?}",
            ValidatedCsr::parse(&der)
        );
    }

    #[test]
    fn refuses_bad_signature() {
        let key = key_for(CsrKeyType::EcdsaP256);
        let mut der = pem::parse(csr_pem(&key)).unwrap().into_contents();
        let last = der.len() - 3;
        der[last] ^= 0x55;
        assert_eq!(
            ValidatedCsr::parse(&der).unwrap_err(),
            Error::CsrBadSignature
        );
    }

    #[test]
    fn refuses_csr_signed_by_another_key() {
        // Same request body, signature from a different key: splice the signature in.
        let a = key_for(CsrKeyType::Ed25519);
        let b = key_for(CsrKeyType::Ed25519);
        let da = pem::parse(csr_pem(&a)).unwrap().into_contents();
        let db = pem::parse(csr_pem(&b)).unwrap().into_contents();
        let mut spliced = da.clone();
        let n = 64; // Ed25519 signature length, at the very end of the DER
        spliced[da.len() - n..].copy_from_slice(&db[db.len() - n..]);
        assert_eq!(
            ValidatedCsr::parse(&spliced).unwrap_err(),
            Error::CsrBadSignature
        );
    }

    #[test]
    fn refuses_bad_encodings() {
        assert_eq!(ValidatedCsr::parse(b"").unwrap_err(), Error::CsrMissing);
        assert!(matches!(
            ValidatedCsr::parse(&vec![b'A'; MAX_CSR_BYTES + 1]),
            Err(Error::CsrTooLarge { .. })
        ));
        assert!(matches!(
            ValidatedCsr::parse(b"garbage"),
            Err(Error::CsrEncoding(_))
        ));
        assert!(matches!(
            ValidatedCsr::parse(&[0x30, 0x03, 1, 2, 3]),
            Err(Error::CsrMalformed(_))
        ));
        let key = key_for(CsrKeyType::Ed25519);
        let good = csr_pem(&key);
        let junk = format!("{good}trailing junk");
        assert!(matches!(
            ValidatedCsr::parse(junk.as_bytes()),
            Err(Error::CsrEncoding(_))
        ));
        let two = format!("{good}{good}");
        assert!(matches!(
            ValidatedCsr::parse(two.as_bytes()),
            Err(Error::CsrEncoding(_))
        ));
        let wrong_label = good.replace("CERTIFICATE REQUEST", "PUBLIC KEY");
        assert!(matches!(
            ValidatedCsr::parse(wrong_label.as_bytes()),
            Err(Error::CsrEncoding(_))
        ));
        let mut der = pem::parse(&good).unwrap().into_contents();
        // Outer tag other than SEQUENCE (0xb0 was accepted by x509-parser).
        let mut retagged = der.clone();
        retagged[0] = 0xb0;
        assert!(matches!(
            ValidatedCsr::from_der(&retagged),
            Err(Error::CsrMalformed(_))
        ));
        let retagged_pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", retagged));
        assert!(matches!(
            ValidatedCsr::parse(retagged_pem.as_bytes()),
            Err(Error::CsrMalformed(_))
        ));
        der.push(0);
        assert!(matches!(
            ValidatedCsr::parse(&der),
            Err(Error::CsrMalformed(_))
        ));
    }

    #[test]
    fn modulus_bits_counts_significant_bits() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(modulus_bits(&[0x01, 0xff]), 9);
        assert_eq!(modulus_bits(&[]), 0);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = ValidatedCsr::parse(&bytes);
        }

        #[test]
        fn a_bare_public_key_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = ValidatedCsr::from_proven_public_key(&bytes);
        }
    }
}
