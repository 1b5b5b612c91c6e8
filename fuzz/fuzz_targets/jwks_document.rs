//! Any bytes as a JWKS document: no panic, bounded key count, and every accepted key is one of
//! the supported types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_pki::jose::{JwkSet, MAX_JWKS_KEYS};

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = JwkSet::parse(data) {
        assert!(
            set.keys.len() + set.skipped.len() <= MAX_JWKS_KEYS,
            "more keys accepted than the limit"
        );
    }
});
