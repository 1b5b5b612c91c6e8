//! Any bytes as a DER PKCS#10 request: no panic, and nothing is accepted that an
//! independent reading does not verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_fuzz::independently_verified_csr_spki;
use sigil_pki::ValidatedCsr;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = ValidatedCsr::from_der(data) {
        // from_der takes DER whatever the first byte; the independent check only reads DER
        // when it starts with a SEQUENCE, which every accepted request does.
        assert_eq!(
            data.first(),
            Some(&0x30),
            "accepted DER that is not a SEQUENCE"
        );
        let spki = independently_verified_csr_spki(data)
            .expect("Sigil accepted a CSR whose signature does not verify independently");
        assert_eq!(
            spki,
            csr.spki_der(),
            "accepted key differs from the CSR's key"
        );
    }
});
