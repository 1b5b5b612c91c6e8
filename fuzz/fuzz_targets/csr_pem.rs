//! Any bytes as a CSR (PEM or DER, as the gRPC field carries them): no panic, and nothing
//! is accepted that an independent reading does not verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_fuzz::independently_verified_csr_spki;
use sigil_pki::ValidatedCsr;

fuzz_target!(|data: &[u8]| {
    if let Ok(csr) = ValidatedCsr::parse(data) {
        let spki = independently_verified_csr_spki(data)
            .expect("Sigil accepted a CSR whose signature does not verify independently");
        assert_eq!(
            spki,
            csr.spki_der(),
            "accepted key differs from the CSR's key"
        );
    }
});
