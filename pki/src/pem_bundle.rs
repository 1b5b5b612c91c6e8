//! PEM files of certificates (`ca.crt`, `issuer.crt`): read strictly, written canonically.

use x509_parser::prelude::FromDer;

use crate::Error;

/// Most certificates accepted in one bundle: more is a mistake or an attack.
pub const MAX_CERTS: usize = 64;

/// Reads every `CERTIFICATE` block of a PEM file. The file must hold at least one, each must
/// parse as X.509, and it must hold nothing else (a private key pasted into a certificate
/// file is refused, not skipped).
pub fn parse_certificates(what: &'static str, pem_text: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let blocks = pem::parse_many(pem_text).map_err(|e| Error::Pem {
        what,
        reason: format!("not valid PEM: {e}"),
    })?;
    if blocks.is_empty() {
        return Err(Error::Pem {
            what,
            reason: "no PEM CERTIFICATE block found".into(),
        });
    }
    if blocks.len() > MAX_CERTS {
        return Err(Error::Pem {
            what,
            reason: format!("{} blocks; at most {MAX_CERTS} are accepted", blocks.len()),
        });
    }
    let mut out = Vec::with_capacity(blocks.len());
    for (i, block) in blocks.into_iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            return Err(Error::Pem {
                what,
                reason: format!(
                    "block #{} is {:?}; only CERTIFICATE blocks belong here",
                    i + 1,
                    block.tag()
                ),
            });
        }
        let der = block.into_contents();
        // x509-parser does not check the outer tag; DER demands a SEQUENCE.
        if der.first() != Some(&0x30) {
            return Err(Error::CertificateMalformed {
                what,
                index: i + 1,
                reason: "not a DER SEQUENCE".into(),
            });
        }
        match x509_parser::certificate::X509Certificate::from_der(&der) {
            Ok(([], _)) => {}
            Ok(_) => {
                return Err(Error::CertificateMalformed {
                    what,
                    index: i + 1,
                    reason: "trailing bytes after the certificate".into(),
                })
            }
            Err(e) => {
                return Err(Error::CertificateMalformed {
                    what,
                    index: i + 1,
                    reason: e.to_string(),
                })
            }
        }
        out.push(der);
    }
    Ok(out)
}

/// PEM text of certificates, in order.
pub fn to_pem<D: AsRef<[u8]>>(ders: &[D]) -> String {
    let mut out = String::new();
    for der in ders {
        out.push_str(&pem::encode_config(
            &pem::Pem::new("CERTIFICATE", der.as_ref().to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_certificate_that_is_not_a_sequence() {
        let (files, _) = crate::authority::tests::generated();
        let mut der = parse_certificates("x", &files.ca_crt).unwrap().remove(0);
        der[0] = 0xb0;
        let text = pem::encode(&pem::Pem::new("CERTIFICATE", der));
        assert!(matches!(
            parse_certificates("x", text.as_bytes()),
            Err(Error::CertificateMalformed { index: 1, .. })
        ));
    }

    #[test]
    fn refuses_empty_foreign_and_broken_blocks() {
        assert!(matches!(
            parse_certificates("x", b""),
            Err(Error::Pem { .. })
        ));
        assert!(matches!(
            parse_certificates("x", b"not pem"),
            Err(Error::Pem { .. })
        ));
        let key = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        let e = parse_certificates("x", key.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("only CERTIFICATE blocks"), "{e}");
        let junk = pem::encode(&pem::Pem::new("CERTIFICATE", vec![0x30, 0x00]));
        assert!(matches!(
            parse_certificates("x", junk.as_bytes()),
            Err(Error::CertificateMalformed { index: 1, .. })
        ));
    }
}
