//! Any bytes as `issuer.key`: no panic; an accepted key round-trips through PKCS#8 PEM with
//! the same algorithm and public key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_pki::PrivateKey;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = PrivateKey::from_pem(data) {
        let pem = key.to_pem();
        let again = PrivateKey::from_pem(pem.as_bytes()).expect("our own PEM reads back");
        assert_eq!(again.key_type(), key.key_type());
        assert_eq!(again.public_key_raw(), key.public_key_raw());
    }
});
