//! Any bytes as a JWKS document: no panic, bounded key count, and every accepted key is one of
//! the supported types.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil::validator::jwks::parse_document;

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = parse_document(data) {
        assert!(
            set.keys.len() + set.skipped.len() <= 64,
            "more keys accepted than the limit"
        );
    }
});
