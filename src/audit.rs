//! The audit log: one line for every certificate Sigil issues or refuses, on the
//! `sigil::audit` tracing target, whichever way the request came (the Dapr gRPC API or a
//! PodCertificateRequest). The fields a log pipeline keys on are written here and nowhere
//! else, so the two paths cannot drift apart. Nothing secret is logged: no token, no key,
//! caller-supplied strings only shortened. (Which fields are written with `%` and which
//! plain is kept as it was, so the lines read exactly as before the move.)

use sigil_pki::IssuedCertificate;

use crate::validator::Identity;

/// How much of a caller-supplied string a refusal line quotes.
const QUOTED_CHARS: usize = 96;

/// A caller-supplied string, cut to [`QUOTED_CHARS`] characters.
pub fn shorten(s: &str) -> String {
    s.chars().take(QUOTED_CHARS).collect()
}

/// A certificate issued through the gRPC API.
pub fn issued(
    validator: &str,
    identity: &Identity,
    certificate: &IssuedCertificate,
    jwt: bool,
    peer: &str,
) {
    tracing::info!(
        target: "sigil::audit",
        event = "issued",
        validator,
        trust_domain = %identity.trust_domain,
        namespace = %identity.namespace,
        app_id = %identity.app_id,
        authenticated_as = %identity.authenticated_as,
        serial = %certificate.serial_hex,
        not_after = %certificate.not_after,
        jwt,
        peer = %peer,
        "certificate issued"
    );
}

/// What a refused gRPC request asked for, as the caller sent it.
pub struct Asked<'a> {
    /// The requested trust domain.
    pub trust_domain: &'a str,
    /// The requested namespace.
    pub namespace: &'a str,
    /// The requested app id.
    pub app_id: &'a str,
}

/// A gRPC request refused.
pub fn refused(
    validator: &str,
    asked: &Asked<'_>,
    code: tonic::Code,
    reason: &dyn std::fmt::Display,
    peer: &str,
) {
    tracing::warn!(
        target: "sigil::audit",
        event = "refused",
        validator,
        trust_domain = %shorten(asked.trust_domain),
        namespace = %shorten(asked.namespace),
        app_id = %shorten(asked.app_id),
        code = ?code,
        reason = %reason,
        peer = %peer,
        "certificate refused"
    );
}

/// Where a settled PodCertificateRequest came from.
pub struct PodRequest<'a> {
    /// The signer name it was addressed to.
    pub signer: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub request: &'a str,
    /// The pod it is for.
    pub pod: &'a str,
    /// The node that asked.
    pub node: &'a str,
}

/// A PodCertificateRequest settled: `condition` and `reason` as written to its status,
/// `detail` the identity and serial (issued) or the refusal message.
pub fn pod_certificate(request: &PodRequest<'_>, condition: &str, reason: &str, detail: &str) {
    tracing::info!(
        target: "sigil::audit",
        event = "pod_certificate",
        signer = %request.signer,
        namespace = %request.namespace,
        request = %request.request,
        pod = %request.pod,
        node = %request.node,
        condition,
        reason,
        detail = %detail,
        "PodCertificateRequest settled"
    );
}
