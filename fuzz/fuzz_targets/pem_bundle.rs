//! Any bytes as a PEM trust bundle (`ca.crt`) and as a certificate file: no panic; an
//! accepted bundle holds only self-signed CAs that verify independently, and round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_pki::{pem_bundle, TrustBundle};
use x509_parser::prelude::*;

fuzz_target!(|data: &[u8]| {
    if let Ok(ders) = pem_bundle::parse_certificates("fuzz", data) {
        assert!(!ders.is_empty() && ders.len() <= pem_bundle::MAX_CERTS);
        for der in &ders {
            assert_eq!(
                der.first(),
                Some(&0x30),
                "accepted a certificate that is not a SEQUENCE"
            );
            let (rest, _) = X509Certificate::from_der(der).expect("accepted a non-certificate");
            assert!(rest.is_empty());
        }
    }
    if let Ok(bundle) = TrustBundle::from_pem(data) {
        assert!(!bundle.roots().is_empty());
        for der in bundle.roots() {
            let (_, c) = X509Certificate::from_der(der).expect("root parses");
            assert_eq!(
                c.subject().as_raw(),
                c.issuer().as_raw(),
                "root not self-issued"
            );
            c.verify_signature(None)
                .expect("root's self-signature verifies");
            assert!(c.is_ca(), "root is not a CA");
        }
        let again = TrustBundle::from_pem(bundle.to_pem().as_bytes()).expect("round trip");
        assert_eq!(again, bundle);
    }
});
