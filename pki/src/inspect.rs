//! What one certificate says about itself, and the checks each certificate passes on its own;
//! how certificates relate to each other (chains, anchors) is [`crate::authority`]'s.

use ::time::OffsetDateTime;
use x509_parser::prelude::*;

use crate::Error;

/// The subject as messages name it; an empty one is said to be empty, so that a message
/// never reads as if a word were missing.
pub(crate) fn subject_of(cert: &X509Certificate<'_>) -> String {
    let s = cert.subject().to_string();
    if s.is_empty() {
        "<empty subject>".into()
    } else {
        s
    }
}

pub(crate) fn time_of(t: ASN1Time) -> OffsetDateTime {
    t.to_datetime()
}

/// Checks that `cert` is a self-signed CA certificate.
pub(crate) fn self_signed_check(cert: &X509Certificate<'_>) -> Result<(), Error> {
    let subject = subject_of(cert);
    if cert.subject().as_raw() != cert.issuer().as_raw() {
        return Err(Error::AnchorNotSelfSigned {
            subject,
            reason: "its issuer name differs from its subject",
        });
    }
    if cert.verify_signature(None).is_err() {
        return Err(Error::AnchorNotSelfSigned {
            subject,
            reason: "its signature does not verify with its own key",
        });
    }
    ca_check(cert)
}

/// Checks that `cert` may sign certificates: CA:TRUE and, when keyUsage is present,
/// keyCertSign.
pub(crate) fn ca_check(cert: &X509Certificate<'_>) -> Result<(), Error> {
    let subject = || subject_of(cert);
    match cert.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {}
        Ok(Some(_)) => {
            return Err(Error::NotACa {
                subject: subject(),
                reason: "basicConstraints says CA:FALSE",
            })
        }
        Ok(None) => {
            return Err(Error::NotACa {
                subject: subject(),
                reason: "it has no basicConstraints extension",
            })
        }
        Err(_) => {
            return Err(Error::NotACa {
                subject: subject(),
                reason: "its basicConstraints extension is malformed",
            })
        }
    }
    match cert.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => Err(Error::NotACa {
            subject: subject(),
            reason: "its keyUsage lacks keyCertSign",
        }),
        Ok(_) => Ok(()),
        Err(_) => Err(Error::NotACa {
            subject: subject(),
            reason: "its keyUsage extension is malformed",
        }),
    }
}

/// The pathLenConstraint, when the certificate sets one.
pub(crate) fn path_len(cert: &X509Certificate<'_>) -> Option<u32> {
    cert.basic_constraints()
        .ok()
        .flatten()
        .and_then(|bc| bc.value.path_len_constraint)
}

/// Checks that `cert`, in the role `role` (for the message), is valid at `now`.
pub(crate) fn validity_check(
    role: &'static str,
    cert: &X509Certificate<'_>,
    now: OffsetDateTime,
) -> Result<(), Error> {
    let nb = time_of(cert.validity().not_before);
    let na = time_of(cert.validity().not_after);
    if now < nb {
        return Err(Error::NotYetValid {
            what: role,
            subject: subject_of(cert),
            not_before: nb,
        });
    }
    if now > na {
        return Err(Error::Expired {
            what: role,
            subject: subject_of(cert),
            not_after: na,
        });
    }
    Ok(())
}
