#!/usr/bin/env bash
# A bounded soak on loopback: N requests (default 100,000) through one Sigil, one in five
# hostile (each must be refused with its gRPC code), the issuer rotated twice while it runs.
# Prints the loadgen line and the server's RSS after warm-up and at the end. Not a test:
# figures for BENCHMARKS.md.
#
#   benches/soak.sh [N]      (builds target/release/sigil and sigil-loadgen)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}"
cargo build --release --bin sigil --bin sigil-loadgen >/dev/null
S=target/release/sigil
L=target/release/sigil-loadgen
work="$(mktemp -d)"
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss() { awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
port=$(free_port); hport=$(free_port); mport=$(free_port)
"$S" ca init --out "$work/ca" --trust-domain localhost --root-key-out "$work/root.key" >/dev/null
cp "$work/ca/ca.crt" "$work/root.crt"
# Rate limits off: every request comes from one loopback address.
"$S" serve --issuer-credentials "$work/ca" --port "$port" --healthz-port "$hport" --metrics-port "$mport" \
  --config /nonexistent --log-level error --reload-interval 1s \
  --peer-rate-limit=0 --identity-rate-limit=0 2>"$work/server.log" &
pid=$!
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$hport/healthz" >/dev/null && break; sleep 0.1; done
"$L" --addr "127.0.0.1:$port" --ca "$work/ca/ca.crt" -n 2000 -c 16 --label warmup >/dev/null
warm=$(rss "$pid")
echo "server RSS after warm-up: ${warm} MiB"
# Two issuer rotations under the same root while the soak runs: after a fifth and after
# three fifths of the valid requests have been signed (read from the server's metrics).
signed() { curl -s "http://127.0.0.1:$mport/" | awk '/^dapr_sentry_cert_sign_success_total/ {print $2}'; }
rotate_at() {
  while [ "$(signed)" -lt "$1" ]; do sleep 0.2; done
  "$S" ca rotate --dir "$work/ca" --root-cert "$work/root.crt" --root-key "$work/root.key" >/dev/null
  echo "issuer rotated after $(signed) certificates"
}
( rotate_at $((2000 + N * 4 / 25)); rotate_at $((2000 + N * 12 / 25)) ) &
rot=$!
"$L" --addr "127.0.0.1:$port" --ca "$work/ca/ca.crt" -n "$N" -c 16 --hostile-every 5 \
  --max-seconds 900 --server-pid "$pid" --label soak
wait "$rot"
end=$(rss "$pid")
echo "server RSS at the end: ${end} MiB (after warm-up: ${warm} MiB)"
curl -sf "http://127.0.0.1:$hport/healthz" >/dev/null && echo "server healthy"
curl -s "http://127.0.0.1:$mport/" | grep -E '^(dapr_sentry_issuercert_changed_total|sigil_ca_reload_failures_total|dapr_sentry_cert_sign_success_total) '

