//! Private keys: generated or read from PEM, zeroized on drop, never printed.
//!
//! CA keys may be Ed25519 (the default, as Dapr), ECDSA P-256 or P-384; imported issuers
//! may also carry RSA keys. PEM input may be PKCS#8 (`PRIVATE KEY`), SEC1
//! (`EC PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`), the three forms Dapr reads. PEM output
//! is always PKCS#8.

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm};
use zeroize::{Zeroize, Zeroizing};

use crate::der;
use crate::Error;

/// Algorithms for keys Sigil generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum KeyType {
    /// Ed25519 (Dapr's default).
    #[default]
    Ed25519,
    /// ECDSA on NIST P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcdsaP384,
    /// RSA with PKCS#1 v1.5 SHA-256 signatures (only for imported keys).
    Rsa,
}

impl KeyType {
    pub(crate) fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa => &rcgen::PKCS_RSA_SHA256,
        }
    }

    /// Short name as used on the command line (`ed25519`, `p256`, `p384`, `rsa`).
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::EcdsaP256 => "p256",
            KeyType::EcdsaP384 => "p384",
            KeyType::Rsa => "rsa",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(KeyType::Ed25519),
            "p256" | "ecdsa-p256" | "p-256" => Ok(KeyType::EcdsaP256),
            "p384" | "ecdsa-p384" | "p-384" => Ok(KeyType::EcdsaP384),
            other => Err(format!(
                "unknown key type {other:?} (expected ed25519, p256 or p384)"
            )),
        }
    }
}

/// A private key that can sign certificates. Its bytes are wiped when it is dropped and
/// its `Debug` output names only the algorithm.
pub struct PrivateKey {
    inner: KeyPair,
    key_type: KeyType,
}

impl PrivateKey {
    /// Generates a fresh key. RSA generation is not offered: Sigil's own keys are EC or
    /// Ed25519.
    pub fn generate(key_type: KeyType) -> Result<Self, Error> {
        if key_type == KeyType::Rsa {
            return Err(Error::PrivateKey(
                "Sigil does not generate RSA keys; choose ed25519, p256 or p384".into(),
            ));
        }
        let inner = KeyPair::generate_for(key_type.signature_algorithm())
            .map_err(|e| Error::PrivateKey(e.to_string()))?;
        Ok(Self { inner, key_type })
    }

    /// Reads a key from PEM: PKCS#8, SEC1 or PKCS#1. Other blocks in the file (such as
    /// `EC PARAMETERS`) are skipped.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, Error> {
        let blocks = pem::parse_many(pem_text)
            .map_err(|e| Error::PrivateKey(format!("not valid PEM: {e}")))?;
        let block = blocks
            .iter()
            .find(|b| b.tag().ends_with("PRIVATE KEY"))
            .ok_or_else(|| Error::PrivateKey("no PRIVATE KEY block found".into()))?;
        let der = Zeroizing::new(block.contents().to_vec());
        // The blocks' own buffers hold key bytes too; wipe them as soon as we are done.
        let result = match block.tag() {
            "PRIVATE KEY" => Self::from_pkcs8(&der),
            "EC PRIVATE KEY" => Self::from_pkcs8(&der::pkcs8_from_sec1(&der, der::OID_P256))
                .or_else(|_| Self::from_pkcs8(&der::pkcs8_from_sec1(&der, der::OID_P384)))
                .map_err(|_| {
                    Error::PrivateKey(
                        "EC PRIVATE KEY is not a valid P-256 or P-384 key (other curves are not supported)"
                            .into(),
                    )
                }),
            "RSA PRIVATE KEY" => Self::from_pkcs8(&der::pkcs8_from_pkcs1(&der)),
            "ENCRYPTED PRIVATE KEY" => Err(Error::PrivateKey(
                "the key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)".into(),
            )),
            other => Err(Error::PrivateKey(format!("unsupported PEM block {other:?}"))),
        };
        for b in blocks {
            b.into_contents().zeroize();
        }
        result
    }

    /// Reads a PKCS#8 DER key of any supported algorithm.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, Error> {
        // Try each algorithm explicitly: format sniffing of the DER is not reliable for RSA.
        let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from(der);
        for key_type in [
            KeyType::Ed25519,
            KeyType::EcdsaP256,
            KeyType::EcdsaP384,
            KeyType::Rsa,
        ] {
            if let Ok(inner) =
                KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, key_type.signature_algorithm())
            {
                return Ok(Self { inner, key_type });
            }
        }
        Err(Error::PrivateKey(
            "not a valid Ed25519, P-256, P-384 or RSA (2048-8192 bit) PKCS#8 key".into(),
        ))
    }

    /// The algorithm of this key.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// PKCS#8 PEM, in a buffer wiped on drop.
    ///
    /// Ed25519 keys are written as PKCS#8 v1 (RFC 8410 without the optional public key):
    /// ring produces v2, which OpenSSL 3.0 refuses to load ("unsupported"), and a key file
    /// that the usual tools cannot read is of little use to anyone.
    pub fn to_pem(&self) -> Zeroizing<String> {
        if self.key_type != KeyType::Ed25519 {
            return Zeroizing::new(self.inner.serialize_pem());
        }
        let der = Zeroizing::new(self.inner.serialize_der());
        let v1 = match ed25519_pkcs8_v1(&der) {
            Some(v1) => v1,
            None => der,
        };
        let block = pem::Pem::new("PRIVATE KEY", v1.to_vec());
        let text = Zeroizing::new(pem::encode_config(
            &block,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ));
        block.into_contents().zeroize();
        text
    }

    /// The raw public key bytes (the SubjectPublicKeyInfo BIT STRING contents).
    pub fn public_key_raw(&self) -> &[u8] {
        self.inner.der_bytes()
    }

    /// DER SubjectPublicKeyInfo of the public half.
    pub fn public_key_spki(&self) -> Vec<u8> {
        self.inner.subject_public_key_info()
    }

    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.inner
    }
}

/// `OneAsymmetricKey` v2 prefix of an Ed25519 key as ring writes it: SEQUENCE (81 bytes),
/// version 1, AlgorithmIdentifier id-Ed25519, privateKey OCTET STRING { OCTET STRING (32) }.
const ED25519_V2_PREFIX: [u8; 16] = [
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The same for v1: SEQUENCE (46 bytes), version 0, then as above.
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The v1 form of a v2 Ed25519 PKCS#8 document (same private key, public key left out);
/// `None` when `der` is not in the exact form ring writes.
pub(crate) fn ed25519_pkcs8_v1(der: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    // v2: prefix, 32-byte seed, publicKey [1] IMPLICIT BIT STRING (0 unused bits, 32 bytes).
    if der.len() != 16 + 32 + 35
        || der[..16] != ED25519_V2_PREFIX
        || der[48..51] != [0x81, 0x21, 0x00]
    {
        return None;
    }
    let mut v1 = Zeroizing::new(Vec::with_capacity(48));
    v1.extend_from_slice(&ED25519_V1_PREFIX);
    v1.extend_from_slice(&der[16..48]);
    Some(v1)
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.inner.zeroize();
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.key_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_keys_are_written_as_pkcs8_v1_and_read_back() {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let pem_text = key.to_pem();
        let der = pem::parse(pem_text.as_bytes()).unwrap().into_contents();
        assert_eq!(der.len(), 48);
        assert_eq!(der[..16], ED25519_V1_PREFIX);
        let back = PrivateKey::from_pem(pem_text.as_bytes()).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
        // Anything but ring's exact v2 layout is left alone.
        assert!(ed25519_pkcs8_v1(&der).is_none());
        assert!(ed25519_pkcs8_v1(&[0u8; 83]).is_none());
    }

    #[test]
    fn generated_keys_round_trip_through_pem() {
        for kt in [KeyType::Ed25519, KeyType::EcdsaP256, KeyType::EcdsaP384] {
            let key = PrivateKey::generate(kt).unwrap();
            let pem = key.to_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let back = PrivateKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(back.key_type(), kt);
            assert_eq!(back.public_key_raw(), key.public_key_raw());
        }
    }

    #[test]
    fn debug_is_redacted() {
        let key = PrivateKey::generate(KeyType::Ed25519).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "PrivateKey(ed25519, <redacted>)");
        assert!(!shown.contains(&key.to_pem()[30..50]));
    }

    #[test]
    fn rsa_generation_is_refused() {
        assert!(matches!(
            PrivateKey::generate(KeyType::Rsa),
            Err(Error::PrivateKey(_))
        ));
    }

    #[test]
    fn garbage_and_encrypted_keys_are_refused_with_reasons() {
        let e = PrivateKey::from_pem(b"hello").unwrap_err().to_string();
        assert!(
            e.contains("no PRIVATE KEY block") || e.contains("not valid PEM"),
            "{e}"
        );
        let enc = pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", vec![1, 2, 3]));
        let e = PrivateKey::from_pem(enc.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("encrypted"), "{e}");
        let bad = pem::encode(&pem::Pem::new(
            "PRIVATE KEY",
            vec![0x30, 0x03, 0x02, 0x01, 0x00],
        ));
        assert!(PrivateKey::from_pem(bad.as_bytes()).is_err());
        let truncated = {
            let key = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
            let pem = key.to_pem();
            let p = pem::parse(pem.as_bytes()).unwrap();
            pem::encode(&pem::Pem::new("PRIVATE KEY", p.contents()[..20].to_vec()))
        };
        assert!(PrivateKey::from_pem(truncated.as_bytes()).is_err());
    }

    #[test]
    fn reads_legacy_sec1_and_pkcs1_keys() {
        use crate::csr::tests::openssl_pem;
        for (curve, kt) in [
            ("prime256v1", KeyType::EcdsaP256),
            ("secp384r1", KeyType::EcdsaP384),
        ] {
            let pem = openssl_pem(&format!("openssl ecparam -name {curve} -genkey"));
            assert!(String::from_utf8_lossy(&pem).contains("BEGIN EC PRIVATE KEY"));
            assert_eq!(PrivateKey::from_pem(&pem).unwrap().key_type(), kt);
        }
        let pem =
            openssl_pem("openssl genrsa 2048 2>/dev/null | openssl rsa -traditional 2>/dev/null");
        assert!(String::from_utf8_lossy(&pem).contains("BEGIN RSA PRIVATE KEY"));
        assert_eq!(PrivateKey::from_pem(&pem).unwrap().key_type(), KeyType::Rsa);
        let pem = openssl_pem("openssl ecparam -name secp521r1 -genkey -noout");
        assert!(PrivateKey::from_pem(&pem).is_err());
    }

    #[test]
    fn key_type_parses_cli_names() {
        assert_eq!("ed25519".parse::<KeyType>().unwrap(), KeyType::Ed25519);
        assert_eq!("P256".parse::<KeyType>().unwrap(), KeyType::EcdsaP256);
        assert_eq!("p384".parse::<KeyType>().unwrap(), KeyType::EcdsaP384);
        assert!("rsa1024".parse::<KeyType>().is_err());
    }
}
