#!/usr/bin/env bash
# Interop checks: real `sigil serve` processes, a Python gRPC client generated at run time
# from proto/dapr/proto/sentry/v1/sentry.proto, and independent validators (openssl,
# cryptography's X.509 verifier, pkilint, py-spiffe) judging every certificate issued.
#
# Needs: python3 (3.11+) with venv, openssl, cargo. Creates .venv-interop (gitignored).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
venv="$repo/.venv-interop"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt

cargo build --quiet --bin sigil --example jwt_fetch
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
sigil_bin="$target_dir/debug/sigil"

"$venv/bin/python" tests/interop/interop.py \
    --sigil "$sigil_bin" \
    --proto-root "$repo/proto" \
    --proto dapr/proto/sentry/v1/sentry.proto

# JWT-SVIDs from a running server, verified by PyJWT through the OIDC discovery server.
for alg in RS256 ES256 EdDSA; do
    echo "== PyJWT check, $alg"
    "$venv/bin/python" tests/interop/jwt_verify.py --target-dir "$target_dir" --alg "$alg"
done
