//! X.509-SVID checks shared by the response check and the TLS verifiers: the chain must
//! verify to the current anchors (webpki, ring algorithms), and the leaf must carry exactly
//! one URI SAN, a valid SPIFFE ID.

use rustls_pki_types::{CertificateDer, UnixTime};
use sigil_pki::SpiffeId;
use x509_parser::prelude::*;

use crate::anchors::AnchorSet;

/// Which side of TLS the certificate is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Usage {
    Server,
    Client,
}

/// Why a certificate was refused.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// webpki refused the chain.
    Chain(webpki::Error),
    /// The leaf's SANs are not one SPIFFE ID.
    Identity(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Chain(e) => write!(f, "chain does not verify against the trust anchors: {e}"),
            Refusal::Identity(e) => f.write_str(e),
        }
    }
}

/// Verifies `leaf` + `intermediates` against `anchors` at `now` for `usage`.
pub(crate) fn verify_chain(
    anchors: &AnchorSet,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: Usage,
) -> Result<(), Refusal> {
    let cert = webpki::EndEntityCert::try_from(leaf).map_err(Refusal::Chain)?;
    let eku = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors.webpki_anchors(),
        intermediates,
        now,
        eku,
        None,
        None,
    )
    .map(|_| ())
    .map_err(Refusal::Chain)
}

/// The SPIFFE ID of a leaf: exactly one URI SAN, and it must parse as a SPIFFE ID.
pub(crate) fn spiffe_id_of(leaf: &[u8]) -> Result<SpiffeId, Refusal> {
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| Refusal::Identity(format!("certificate does not parse: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Refusal::Identity(format!("bad SubjectAlternativeName: {e}")))?
        .ok_or_else(|| Refusal::Identity("certificate has no SubjectAlternativeName".into()))?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => SpiffeId::parse(one).map_err(|e| Refusal::Identity(e.to_string())),
        [] => Err(Refusal::Identity(
            "certificate has no URI SAN (no SPIFFE ID)".into(),
        )),
        many => Err(Refusal::Identity(format!(
            "certificate has {} URI SANs; an X.509-SVID has exactly one",
            many.len()
        ))),
    }
}

/// The reason carried inside a rustls error. Its `Debug` is the plain message, because
/// rustls prints `CertificateError::Other` with `Debug`.
struct Reason(String);

impl std::fmt::Debug for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reason {}

fn other(msg: String) -> rustls::CertificateError {
    rustls::CertificateError::Other(rustls::OtherError(std::sync::Arc::new(Reason(msg))))
}

/// Maps a refusal to what rustls reports to the peer and the caller.
pub(crate) fn to_rustls(r: Refusal) -> rustls::Error {
    use rustls::CertificateError as C;
    let e = match r {
        Refusal::Chain(e) => match e {
            webpki::Error::CertExpired { time, not_after } => C::ExpiredContext { time, not_after },
            webpki::Error::CertNotValidYet { time, not_before } => {
                C::NotValidYetContext { time, not_before }
            }
            webpki::Error::UnknownIssuer => C::UnknownIssuer,
            webpki::Error::InvalidSignatureForPublicKey => C::BadSignature,
            webpki::Error::BadDer | webpki::Error::BadDerTime => C::BadEncoding,
            other_error => other(format!("chain does not verify: {other_error}")),
        },
        Refusal::Identity(msg) => other(msg),
    };
    rustls::Error::InvalidCertificate(e)
}
