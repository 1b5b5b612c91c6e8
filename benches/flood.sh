#!/usr/bin/env bash
# The resource flood of issue 13 on loopback, with legitimate requests alongside:
#   benches/flood.sh [SIGIL_BINARY]      (default: target/release/sigil, built here)
# 48 TLS connections each keep 250 SignCertificate streams open that sent part of a message
# and stalled (re-opened when the server ends one), 100 idle HTTP/2 connections, 100
# slow-header connections on the health port; meanwhile 4 workers send REQUESTS (default
# 2000) valid requests, each on a new connection as daprd does. Prints one line: the
# legitimate p50/p99 and success rate, the server's RSS before, its peak (VmHWM) and its RSS
# 3 s and 15 s after the flood's connections closed. Bounded: the flood lasts FLOOD_SECONDS (30).
# Give an older build as SIGIL_BINARY to compare (its flags must include those used here).
set -euo pipefail
cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-2000}
FLOOD_SECONDS=${FLOOD_SECONDS:-30}
if [ $# -ge 1 ]; then
  S=$1
  [ -n "${LOADGEN:-}" ] || cargo build --release --quiet --bin sigil-loadgen
else
  cargo build --release --quiet --bin sigil --bin sigil-loadgen
  S=target/release/sigil
fi
L=${LOADGEN:-target/release/sigil-loadgen}
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
port=$(free_port); hport=$(free_port); mport=$(free_port)
"$S" ca init --out "$work/ca" --trust-domain localhost >/dev/null
# Rate limits off: every legitimate request comes from one loopback address.
"$S" serve --issuer-credentials "$work/ca" --port "$port" --healthz-port "$hport" --metrics-port "$mport" \
  --config /nonexistent --log-level error --peer-rate-limit=0 --identity-rate-limit=0 2>"$work/server.log" &
pid=$!
for _ in $(seq 1 500); do curl -sf "http://127.0.0.1:$hport/healthz" >/dev/null && break; sleep 0.01; done
# A few requests first, so that "before" is a warmed-up server.
"$L" --addr "127.0.0.1:$port" --ca "$work/ca/ca.crt" -n 50 -c 2 --new-conn >/dev/null 2>&1
idle=$(awk '/VmRSS/{printf "%.1f", $2/1024}' /proc/$pid/status)
echo "server $S: RSS before the flood ${idle} MiB"
ulimit -n 65536 2>/dev/null || true
"$L" --addr "127.0.0.1:$port" --ca "$work/ca/ca.crt" -n "$REQUESTS" -c 4 --new-conn --max-seconds "$FLOOD_SECONDS" \
  --server-pid "$pid" --label flood \
  --flood-connections 48 --flood-streams 250 --idle-connections 100 \
  --slow-header-connections 100 --healthz-addr "127.0.0.1:$hport" --flood-seconds "$FLOOD_SECONDS"
kill -0 "$pid" 2>/dev/null && echo "server still running" || echo "server DIED"
# The allocator hands freed pages back over seconds (jemalloc's background purge, decay 10 s):
# RSS once more, 15 s after the flood ended.
sleep 12
echo "server RSS 15 s after the flood $(awk '/VmRSS/{printf "%.1f", $2/1024}' /proc/$pid/status) MiB"
