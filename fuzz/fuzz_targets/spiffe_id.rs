//! SPIFFE ID, trust domain, namespace and app id parsing: no panic, Sigil accepts exactly
//! what the specification (written out independently in `spec_rules`) accepts, and what it
//! accepts round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigil_fuzz::{spec_rules, split_fields};
use sigil_pki::{AppId, Namespace, SpiffeId, TrustDomain};

fn check_one(s: &str) {
    let id = SpiffeId::parse(s);
    assert_eq!(
        id.is_ok(),
        spec_rules::spiffe_id(s),
        "SpiffeId::parse({s:?})"
    );
    if let Ok(id) = id {
        assert_eq!(id.to_string(), s);
        assert_eq!(SpiffeId::parse(&id.to_string()).ok(), Some(id.clone()));
        if let Some((ns, app)) = id.workload_parts() {
            let again = SpiffeId::workload(id.trust_domain(), &ns, &app);
            assert_eq!(again, id);
        }
    }
    assert_eq!(
        TrustDomain::new(s).is_ok(),
        spec_rules::trust_domain(s),
        "TrustDomain::new({s:?})"
    );
    assert_eq!(
        Namespace::new(s).is_ok(),
        spec_rules::namespace(s),
        "Namespace::new({s:?})"
    );
    assert_eq!(
        AppId::new(s).is_ok(),
        spec_rules::app_id(s),
        "AppId::new({s:?})"
    );
}

fuzz_target!(|data: &[u8]| {
    let whole = String::from_utf8_lossy(data);
    check_one(&whole);
    // Also as the three request fields (trust domain, namespace, app id), one per line.
    let (fields, _) = split_fields(data, 3);
    for f in &fields {
        check_one(f);
    }
    if let (Ok(td), Ok(ns), Ok(app)) = (
        TrustDomain::new(&fields[0]),
        Namespace::new(&fields[1]),
        AppId::new(&fields[2]),
    ) {
        let id = SpiffeId::workload(&td, &ns, &app);
        let text = id.to_string();
        assert_eq!(
            text,
            format!("spiffe://{}/ns/{}/{}", fields[0], fields[1], fields[2])
        );
        let parsed = SpiffeId::parse(&text).expect("a workload ID Sigil built must parse");
        let (pns, papp) = parsed.workload_parts().expect("workload parts");
        assert_eq!((pns, papp), (ns, app));
    }
});
