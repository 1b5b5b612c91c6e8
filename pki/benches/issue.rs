//! Criterion benchmarks of the signing path's pure core, per key type:
//! CSR parse + signature verification, and leaf issuance from a validated CSR.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use sigil_pki::issue::LeafExtras;
use sigil_pki::{Authority, CaParams, IssuePolicy, KeyType, SpiffeId, ValidatedCsr};
use time::OffsetDateTime;

fn csr_for(alg: &'static rcgen::SignatureAlgorithm) -> String {
    let key = KeyPair::generate_for(alg).expect("key generation");
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.serialize_request(&key).expect("csr").pem().expect("pem")
}

fn rsa_csr() -> Option<String> {
    // ring cannot generate RSA keys; openssl makes one when it is installed.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("openssl req -new -newkey rsa:2048 -nodes -keyout /dev/null -subj / 2>/dev/null")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn bench(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let id = SpiffeId::parse("spiffe://public/ns/default/orders").expect("id");
    let mut csrs = vec![
        ("ed25519", csr_for(&rcgen::PKCS_ED25519)),
        ("p256", csr_for(&rcgen::PKCS_ECDSA_P256_SHA256)),
        ("p384", csr_for(&rcgen::PKCS_ECDSA_P384_SHA384)),
    ];
    if let Some(rsa) = rsa_csr() {
        csrs.push(("rsa2048", rsa));
    }

    let mut group = c.benchmark_group("csr_parse_verify");
    for (name, pem) in &csrs {
        group.bench_with_input(BenchmarkId::from_parameter(name), pem, |b, pem| {
            b.iter(|| ValidatedCsr::parse(pem.as_bytes()).expect("valid"))
        });
    }
    group.finish();

    for ca_key in [KeyType::Ed25519, KeyType::EcdsaP256] {
        let mut params = CaParams::new(
            "public".parse().expect("td"),
            "default".parse().expect("ns"),
        );
        params.key_type = ca_key;
        let files = Authority::generate(&params, now).expect("generate");
        let authority = Authority::load(&files, now).expect("load");
        let mut group = c.benchmark_group(format!("issue_leaf/ca_{}", ca_key.name()));
        for (name, pem) in &csrs {
            let csr = ValidatedCsr::parse(pem.as_bytes()).expect("valid");
            group.bench_with_input(BenchmarkId::from_parameter(name), &csr, |b, csr| {
                b.iter(|| {
                    authority
                        .issue(
                            csr,
                            &id,
                            &LeafExtras::default(),
                            &IssuePolicy::default(),
                            now,
                        )
                        .expect("issued")
                })
            });
        }
        group.finish();
    }

    // The whole pure path for one request: parse + verify + issue, Ed25519 everywhere
    // (Dapr's defaults).
    let mut params = CaParams::new(
        "public".parse().expect("td"),
        "default".parse().expect("ns"),
    );
    params.key_type = KeyType::Ed25519;
    let files = Authority::generate(&params, now).expect("generate");
    let authority = Authority::load(&files, now).expect("load");
    let pem = &csrs[0].1;
    c.bench_function("full_pki_path/ed25519", |b| {
        b.iter(|| {
            let csr = ValidatedCsr::parse(pem.as_bytes()).expect("valid");
            authority
                .issue(
                    &csr,
                    &id,
                    &LeafExtras::default(),
                    &IssuePolicy::default(),
                    now,
                )
                .expect("issued")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
