#!/usr/bin/env bash
# Generates the seed corpora of every fuzz target from real material: CSRs of every key
# type Sigil accepts, real trust bundles and issuer chains, real private keys in each PEM
# form. Nothing here is a pasted blob; everything is made fresh by openssl (and by
# `sigil ca init` when SIGIL_BIN points at a built sigil binary).
#
# Usage: fuzz/seeds.sh [CORPUS_DIR]      (default: fuzz/corpus, gitignored)
# Needs: openssl 3.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
corpus="${1:-$here/corpus}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for t in csr_pem csr_der spiffe_id pem_bundle ca_load private_key issue_e2e; do
    mkdir -p "$corpus/$t"
done

# ---- private keys and CSRs of every accepted key type ------------------------------------
declare -A genkey=(
    [ed25519]="genpkey -algorithm ED25519"
    [p256]="genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256"
    [p384]="genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384"
    [rsa2048]="genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048"
    [rsa3072]="genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072"
)
n=0
for kt in ed25519 p256 p384 rsa2048 rsa3072; do
    # shellcheck disable=SC2086
    openssl ${genkey[$kt]} -out "$work/$kt.key" 2>/dev/null
    cp "$work/$kt.key" "$corpus/private_key/pkcs8-$kt.pem"
    # An empty subject, as daprd sends, and one with a subject and SANs Sigil must ignore.
    openssl req -new -key "$work/$kt.key" -subj / -out "$work/$kt-empty.csr" 2>/dev/null
    openssl req -new -key "$work/$kt.key" -subj "/CN=evil/O=x" \
        -addext "subjectAltName=DNS:evil.example,URI:spiffe://evil/ns/x/y" \
        -addext "basicConstraints=critical,CA:TRUE" -out "$work/$kt-greedy.csr" 2>/dev/null
    for v in empty greedy; do
        pem="$work/$kt-$v.csr"
        der="$work/$kt-$v.der"
        openssl req -in "$pem" -outform DER -out "$der"
        cp "$pem" "$corpus/csr_pem/$kt-$v.pem"
        cp "$der" "$corpus/csr_pem/$kt-$v.der"
        cp "$der" "$corpus/csr_der/$kt-$v.der"
        for ident in "orders\ndefault\npublic" "dapr-injector\ndapr-system\ncluster.local" "a_b-C9\nns-1\n" ; do
            n=$((n + 1))
            { printf "%b\n" "$ident"; cat "$pem"; } >"$corpus/issue_e2e/$kt-$v-$n.pem"
            { printf "%b\n" "$ident"; cat "$der"; } >"$corpus/issue_e2e/$kt-$v-$n.der"
        done
    done
done
# Legacy key forms Sigil reads: SEC1 EC keys and PKCS#1 RSA keys.
openssl ecparam -name prime256v1 -genkey -out "$corpus/private_key/sec1-p256.pem" 2>/dev/null
openssl ecparam -name secp384r1 -genkey -noout -out "$corpus/private_key/sec1-p384.pem" 2>/dev/null
openssl pkey -in "$work/rsa2048.key" -traditional -out "$corpus/private_key/pkcs1-rsa2048.pem" 2>/dev/null

# ---- CA material: roots, issuer chains, bundles -----------------------------------------
# The ca_load target uses a fixed Ed25519 issuer key (seed 0x5a * 32, see fuzz/src/lib.rs);
# the issuers below are certified for that same key so that seeds reach the deep checks.
{
    printf '\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20'
    for _ in $(seq 32); do printf '\x5a'; done
} | openssl pkey -inform DER -out "$work/fixed.key"

cat >"$work/ca.ext" <<'EXT'
[inter]
basicConstraints=critical,CA:TRUE,pathlen:1
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
[issuer]
basicConstraints=critical,CA:TRUE,pathlen:0
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT

# sign NAME KEY SUBJECT SECTION PARENT  -> $work/NAME.crt
sign() {
    local name=$1 key=$2 subject=$3 section=$4 parent=$5
    openssl req -new -key "$key" -subj "$subject" -out "$work/$name.csr" 2>/dev/null
    openssl x509 -req -in "$work/$name.csr" -CA "$work/$parent.crt" -CAkey "$work/$parent.key" \
        -CAcreateserial -days 3650 -extfile "$work/ca.ext" -extensions "$section" \
        -out "$work/$name.crt" 2>/dev/null
}

for kt in ed25519 p256 p384 rsa2048; do
    # shellcheck disable=SC2086
    openssl ${genkey[$kt]} -out "$work/root-$kt.key" 2>/dev/null
    openssl req -x509 -new -key "$work/root-$kt.key" -subj "/O=public" -days 3650 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,digitalSignature" \
        -out "$work/root-$kt.crt" 2>/dev/null
    sign "issuer-$kt" "$work/fixed.key" "/O=spiffe:\/\/public\/ns\/default\/dapr-sentry" issuer "root-$kt"
    cp "$work/root-$kt.crt" "$corpus/pem_bundle/root-$kt.pem"
    cp "$work/issuer-$kt.crt" "$corpus/pem_bundle/issuer-$kt.pem"
    { cat "$work/root-$kt.crt"; printf '\n#issuer.crt\n'; cat "$work/issuer-$kt.crt"; } \
        >"$corpus/ca_load/direct-$kt.pem"
    # issuer.crt with the root appended: Sigil drops a trailing root, as Dapr does.
    { cat "$work/root-$kt.crt"; printf '\n#issuer.crt\n'; cat "$work/issuer-$kt.crt" "$work/root-$kt.crt"; } \
        >"$corpus/ca_load/trailing-root-$kt.pem"
done
# root -> intermediate -> issuer, and a bundle of two roots.
openssl ${genkey[p256]} -out "$work/inter-p256.key" 2>/dev/null
sign inter-p256 "$work/inter-p256.key" "/O=intermediate" inter root-ed25519
sign issuer-via-inter "$work/fixed.key" "/O=spiffe:\/\/public\/ns\/default\/dapr-sentry" issuer inter-p256
{ cat "$work/root-ed25519.crt" "$work/root-p384.crt"; printf '\n#issuer.crt\n'; cat "$work/issuer-via-inter.crt" "$work/inter-p256.crt"; } \
    >"$corpus/ca_load/intermediate.pem"
cat "$work/root-ed25519.crt" "$work/root-p256.crt" "$work/root-rsa2048.crt" >"$corpus/pem_bundle/three-roots.pem"
cat "$work/issuer-via-inter.crt" "$work/inter-p256.crt" >"$corpus/pem_bundle/chain.pem"

# Material exactly as Sigil writes it, when a built binary is at hand.
if [ -n "${SIGIL_BIN:-}" ] && [ -x "$SIGIL_BIN" ]; then
    for kt in ed25519 p256 p384; do
        "$SIGIL_BIN" ca init --out "$work/sigil-$kt" --key-type "$kt" --trust-domain public >/dev/null
        cp "$work/sigil-$kt/ca.crt" "$corpus/pem_bundle/sigil-ca-$kt.pem"
        cp "$work/sigil-$kt/issuer.crt" "$corpus/pem_bundle/sigil-issuer-$kt.pem"
        cp "$work/sigil-$kt/issuer.key" "$corpus/private_key/sigil-issuer-$kt.pem"
        { cat "$work/sigil-$kt/ca.crt"; printf '\n#issuer.crt\n'; cat "$work/sigil-$kt/issuer.crt"; } \
            >"$corpus/ca_load/sigil-$kt.pem"
    done
fi

# ---- identities --------------------------------------------------------------------------
i=0
for s in \
    "spiffe://public/ns/default/orders" \
    "spiffe://cluster.local/ns/dapr-system/dapr-sentry" \
    "spiffe://example.org" \
    "spiffe://td/a/b/c.d/e_f-g" \
    "public\ndefault\norders" \
    "cluster.local\ndapr-system\ndapr-injector" \
    "spiffe://td/../x" \
    "spiffe://TD/x" \
    "spiffe://td:443/x" \
    "a.b\nns/x\nUPPER"; do
    i=$((i + 1))
    printf "%b" "$s" >"$corpus/spiffe_id/id-$i"
done

total=$(find "$corpus" -type f | wc -l)
echo "seeds: $total files in $corpus"
for t in "$corpus"/*/; do
    printf '  %-12s %s\n' "$(basename "$t")" "$(find "$t" -type f | wc -l)"
done
