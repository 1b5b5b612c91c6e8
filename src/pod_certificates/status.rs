//! The status Sigil writes on a PodCertificateRequest: once, with exactly one condition.
//!
//! Issued: the chain (leaf first, PEM), `notBefore`/`notAfter` equal to the leaf's, and
//! `beginRefreshAt` at half the lifetime, moved by up to ±10% of that half so that pods
//! started together do not all refresh together. Denied and Failed carry the condition only
//! (the API server refuses other fields with them).

use k8s_openapi::api::certificates::v1::{PodCertificateRequest, PodCertificateRequestStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use sigil_pki::IssuedCertificate;
use time::OffsetDateTime;

/// Condition types (KEP-4317).
pub const ISSUED: &str = "Issued";
/// The signer refuses the request.
pub const DENIED: &str = "Denied";
/// The signer cannot ever issue for the request.
pub const FAILED: &str = "Failed";

/// Longest condition message written.
const MAX_MESSAGE: usize = 1024;

/// Whether some signer already settled the request (an Issued, Denied or Failed condition
/// with status True).
pub fn is_settled(pcr: &PodCertificateRequest) -> bool {
    pcr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conds| {
            conds
                .iter()
                .any(|c| c.status == "True" && [ISSUED, DENIED, FAILED].contains(&c.type_.as_str()))
        })
}

fn time(t: OffsetDateTime) -> Time {
    // Whole seconds: the wire format and the certificate both carry seconds only.
    Time(Timestamp::from_second(t.unix_timestamp()).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn condition(type_: &str, reason: &str, message: &str, now: OffsetDateTime) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: reason.to_owned(),
        message: message.chars().take(MAX_MESSAGE).collect(),
        last_transition_time: time(now),
        observed_generation: None,
    }
}

/// When the kubelet should start refreshing: `not_before` + half the lifetime + `jitter`
/// (in [-1, 1]) × 10% of that half.
pub fn begin_refresh_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    jitter: f64,
) -> OffsetDateTime {
    let half = (not_after - not_before) / 2;
    not_before + half + half * (0.1 * jitter.clamp(-1.0, 1.0))
}

/// The status of an issued request.
pub fn issued(
    cert: &IssuedCertificate,
    now: OffsetDateTime,
    jitter: f64,
) -> PodCertificateRequestStatus {
    PodCertificateRequestStatus {
        certificate_chain: Some(cert.chain_pem.clone()),
        not_before: Some(time(cert.not_before)),
        not_after: Some(time(cert.not_after)),
        begin_refresh_at: Some(time(begin_refresh_at(
            cert.not_before,
            cert.not_after,
            jitter,
        ))),
        conditions: Some(vec![condition(
            ISSUED,
            "Issued",
            &format!("issued by Sigil, serial {}", cert.serial_hex),
            now,
        )]),
    }
}

/// The status of a denied (`DENIED`) or failed (`FAILED`) request.
pub fn refused(
    type_: &str,
    reason: &str,
    message: &str,
    now: OffsetDateTime,
) -> PodCertificateRequestStatus {
    PodCertificateRequestStatus {
        conditions: Some(vec![condition(type_, reason, message, now)]),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    #[test]
    fn refresh_is_at_half_life_within_ten_percent() {
        let nb = at(1_796_169_600);
        let na = nb + time::Duration::hours(10);
        assert_eq!(begin_refresh_at(nb, na, 0.0), nb + time::Duration::hours(5));
        assert_eq!(
            begin_refresh_at(nb, na, 1.0),
            nb + time::Duration::minutes(330)
        );
        assert_eq!(
            begin_refresh_at(nb, na, -1.0),
            nb + time::Duration::minutes(270)
        );
        assert_eq!(begin_refresh_at(nb, na, 7.0), begin_refresh_at(nb, na, 1.0));
    }

    #[test]
    fn exactly_one_condition_and_nothing_else_when_refused() {
        let now = at(1_796_212_800);
        let s = refused(DENIED, "UnsupportedKeyType", &"x".repeat(5000), now);
        let conds = s.conditions.as_ref().unwrap();
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].status, "True");
        assert_eq!(conds[0].message.len(), MAX_MESSAGE);
        assert!(s.certificate_chain.is_none() && s.not_after.is_none());
        assert!(s.begin_refresh_at.is_none() && s.not_before.is_none());
        let pcr = PodCertificateRequest {
            status: Some(s),
            ..Default::default()
        };
        assert!(is_settled(&pcr));
        assert!(!is_settled(&PodCertificateRequest::default()));
    }
}
