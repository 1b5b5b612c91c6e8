//! Fuzzed `ca.crt` and `issuer.crt` with a fixed valid `issuer.key` through every check of
//! `Authority::load`: no panic; when it accepts, the chain really is what the checks claim,
//! and the authority can issue a leaf that verifies under the issuer.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sigil_fuzz::{fixed_key, fixed_key_pem, split_ca_files};
use sigil_pki::issue::LeafExtras;
use sigil_pki::{Authority, CaFiles, IssuePolicy, SpiffeId, ValidatedCsr};
use x509_parser::prelude::*;
use zeroize::Zeroizing;

fn leaf_csr() -> &'static ValidatedCsr {
    static CSR: OnceLock<ValidatedCsr> = OnceLock::new();
    CSR.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let req = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .expect("csr");
        ValidatedCsr::parse(req.der()).expect("valid csr")
    })
}

fuzz_target!(|data: &[u8]| {
    let (ca, issuer) = split_ca_files(data);
    let files = CaFiles {
        ca_crt: ca.to_vec(),
        issuer_crt: issuer.to_vec(),
        issuer_key: Zeroizing::new(fixed_key_pem().into_bytes()),
    };
    let now = ::time::OffsetDateTime::now_utc();
    let Ok(authority) = Authority::load(&files, now) else {
        return;
    };
    let chain = authority.chain_der();
    let (_, issuer_cert) = X509Certificate::from_der(&chain[0]).expect("issuer parses");
    assert!(issuer_cert.is_ca(), "accepted an issuer that is not a CA");
    assert_eq!(
        issuer_cert.public_key().subject_public_key.data.as_ref(),
        fixed_key().public_key_raw(),
        "accepted an issuer certificate for another key"
    );
    assert!(!authority.trust_bundle().roots().is_empty());
    let id = SpiffeId::parse("spiffe://public/ns/default/fuzz").expect("id");
    let leaf = authority
        .issue(
            leaf_csr(),
            &id,
            &LeafExtras::default(),
            &IssuePolicy::default(),
            now,
        )
        .expect("a loaded authority must be able to issue");
    let (_, leaf_cert) = X509Certificate::from_der(&leaf.leaf_der).expect("leaf parses");
    leaf_cert
        .verify_signature(Some(issuer_cert.public_key()))
        .expect("leaf verifies under the issuer");
});
