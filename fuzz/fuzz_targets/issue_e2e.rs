//! One signing request end to end, minus the network: arbitrary request fields and CSR
//! bytes -> identity types -> CSR checks -> `Authority::issue` with a fixed test CA.
//!
//! Input framing (so that seeds are plain text): `app id\nnamespace\ntrust domain\n` then
//! the CSR bytes. An empty trust domain means Dapr's default, `public`.
//!
//! Properties: never a panic; a certificate is issued only when the CSR's signature
//! verifies independently and the identity is valid by the specification's rules; the leaf
//! carries exactly the CSR's public key and exactly the requested SPIFFE ID, is not a CA,
//! and verifies under the issuer.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sigil_fuzz::{independently_verified_csr_spki, spec_rules, split_fields};
use sigil_pki::issue::LeafExtras;
use sigil_pki::{
    AppId, Authority, CaParams, IssuePolicy, Namespace, SpiffeId, TrustDomain, ValidatedCsr,
};
use x509_parser::prelude::*;

struct TestCa {
    authority: Authority,
    now: ::time::OffsetDateTime,
}

fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let now = ::time::OffsetDateTime::now_utc();
        let params = CaParams::new(
            TrustDomain::new("localhost").expect("td"),
            Namespace::new("default").expect("ns"),
        );
        let files = Authority::generate(&params, now).expect("generate");
        let authority = Authority::load(&files, now).expect("load");
        TestCa { authority, now }
    })
}

fuzz_target!(|data: &[u8]| {
    let (fields, csr_bytes) = split_fields(data, 3);
    let (app_s, ns_s, td_field) = (&fields[0], &fields[1], &fields[2]);
    let td_s: &str = if td_field.is_empty() {
        "public"
    } else {
        td_field
    };

    let Ok(app) = AppId::new(app_s) else { return };
    let Ok(ns) = Namespace::new(ns_s) else { return };
    let Ok(td) = TrustDomain::new(td_s) else {
        return;
    };
    let Ok(csr) = ValidatedCsr::parse(csr_bytes) else {
        return;
    };
    let id = SpiffeId::workload(&td, &ns, &app);

    let ca = test_ca();
    let issued = ca
        .authority
        .issue(
            &csr,
            &id,
            &LeafExtras::default(),
            &IssuePolicy::default(),
            ca.now,
        )
        .expect("a valid CSR and identity must be issued");

    // From here on: independent checks of what was just issued.
    assert!(
        spec_rules::app_id(app_s) && spec_rules::namespace(ns_s) && spec_rules::trust_domain(td_s),
        "issued for an identity the specification rejects: {app_s:?} {ns_s:?} {td_s:?}"
    );
    let csr_spki = independently_verified_csr_spki(csr_bytes)
        .expect("issued for a CSR whose signature does not verify independently");
    let (rest, leaf) = X509Certificate::from_der(&issued.leaf_der).expect("leaf parses");
    assert!(rest.is_empty());
    assert_eq!(
        leaf.public_key().raw,
        &csr_spki[..],
        "leaf key is not the CSR's key"
    );
    let want = format!("spiffe://{td_s}/ns/{ns_s}/{app_s}");
    let san = leaf
        .subject_alternative_name()
        .expect("SAN parses")
        .expect("leaf has a SAN");
    assert_eq!(san.value.general_names, vec![GeneralName::URI(&want)]);
    assert!(!leaf.is_ca(), "leaf is a CA");
    let (_, issuer) =
        X509Certificate::from_der(&ca.authority.chain_der()[0]).expect("issuer parses");
    leaf.verify_signature(Some(issuer.public_key()))
        .expect("leaf verifies under the issuer");
});
