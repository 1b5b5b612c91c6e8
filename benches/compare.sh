#!/usr/bin/env bash
# Side-by-side throughput of Sigil and cfssl on loopback, one after the other in one run.
#   benches/compare.sh [REQUESTS]      (default 10000 per run)
# Prints one line per run (requests/s, latency percentiles, server CPU ms per certificate,
# peak RSS) and the Sigil/cfssl ratios. Both CAs use ECDSA P-256 keys and P-256 CSRs for the
# fair comparison; Sigil's Ed25519 default is reported separately. cfssl speaks plain
# HTTP/JSON, Sigil gRPC over TLS: the comparison is unfavourable to Sigil on transport.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  [ -x "$SHARED/bench/cfssl-peer.sh" ] && "$SHARED/bench/cfssl-peer.sh" stop "$work/cfssl" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

command -v openssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; }
cargo build --release --quiet --bin sigil --bin sigil-loadgen
S=target/release/sigil
L=target/release/sigil-loadgen
# Servers run on core 0, the load generator on core 1, so "server CPU per certificate" and
# "requests/s on one core" mean what they say and neither side steals the other's core.
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c "$SERVER_CPU"); PIN_CLIENT=(taskset -c "$CLIENT_CPU")
else
  PIN_SERVER=(); PIN_CLIENT=()
fi

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo || true
echo
echo "== physical limit per core (openssl speed, 2 s each)"
openssl speed -seconds 2 ed25519 ecdsap256 2>/dev/null | grep -E '^ *(253|256) bits' || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

start_sigil() { # $1 = key type, $2 = dir
  local port hport mport
  port=$(free_port); hport=$(free_port); mport=$(free_port)
  "$S" ca init --out "$2" --key-type "$1" --trust-domain localhost >/dev/null
  local t0; t0=$(date +%s%N)
  "${PIN_SERVER[@]}" "$S" serve --issuer-credentials "$2" --port "$port" --healthz-port "$hport" --metrics-port "$mport" \
     --config /nonexistent --log-level warn 2>"$2.log" &
  SIGIL_PID=$!; pids+=("$SIGIL_PID")
  until curl -sf "http://127.0.0.1:$hport/healthz" >/dev/null; do sleep 0.005; done
  local t1; t1=$(date +%s%N)
  SIGIL_PORT=$port
  echo "sigil ($1 CA): serving $(( (t1 - t0) / 1000000 )) ms after start with existing CA files; idle RSS $(awk '/VmRSS/{printf "%.1f MiB", $2/1024}' /proc/$SIGIL_PID/status)"
}

results=()
run() { # label, then loadgen args
  local label=$1; shift
  local line; line=$("${PIN_CLIENT[@]}" "$L" --label "$label" "$@" 2>/dev/null)
  echo "$line"
  results+=("$line")
}

rps_of() { printf '%s\n' "${results[@]}" | grep "^$1 " | sed -E 's/.* rps=([0-9]+).*/\1/'; }

echo
echo "== Sigil, P-256 CA, P-256 CSRs (gRPC over TLS)"
start_sigil p256 "$work/sigil-p256"
for c in 1 8 32; do
  run "sigil-p256-c$c" --target grpc --addr "127.0.0.1:$SIGIL_PORT" --ca "$work/sigil-p256/ca.crt" -n "$N" -c "$c" --key p256 --server-pid "$SIGIL_PID"
done
run "sigil-p256-newconn-c32" --target grpc --addr "127.0.0.1:$SIGIL_PORT" --ca "$work/sigil-p256/ca.crt" -n "$N" -c 32 --key p256 --new-conn --server-pid "$SIGIL_PID"
kill "$SIGIL_PID"; wait "$SIGIL_PID" 2>/dev/null || true

echo
echo "== cfssl, P-256 CA, P-256 CSRs (HTTP/JSON, no TLS)"
read -r CFSSL_PID CFSSL_PORT < <("$SHARED/bench/cfssl-peer.sh" start "$work/cfssl" "$(free_port)" p256)
pids+=("$CFSSL_PID")
# The peer script starts cfssl unpinned; move it (and its threads) to the server core.
command -v taskset >/dev/null && taskset -a -p -c "$SERVER_CPU" "$CFSSL_PID" >/dev/null || true
for c in 1 8 32; do
  run "cfssl-p256-c$c" --target cfssl --addr "127.0.0.1:$CFSSL_PORT" -n "$N" -c "$c" --key p256 --server-pid "$CFSSL_PID"
done
run "cfssl-p256-newconn-c32" --target cfssl --addr "127.0.0.1:$CFSSL_PORT" -n "$N" -c 32 --key p256 --new-conn --server-pid "$CFSSL_PID"
"$SHARED/bench/cfssl-peer.sh" stop "$work/cfssl" >/dev/null

echo
echo "== Sigil default: Ed25519 CA, Ed25519 CSRs"
start_sigil ed25519 "$work/sigil-ed"
run "sigil-ed25519-c1" --target grpc --addr "127.0.0.1:$SIGIL_PORT" --ca "$work/sigil-ed/ca.crt" -n "$N" -c 1 --key ed25519 --server-pid "$SIGIL_PID"
run "sigil-ed25519-c32" --target grpc --addr "127.0.0.1:$SIGIL_PORT" --ca "$work/sigil-ed/ca.crt" -n "$N" -c 32 --key ed25519 --server-pid "$SIGIL_PID"
run "sigil-ed25519-newconn-c32" --target grpc --addr "127.0.0.1:$SIGIL_PORT" --ca "$work/sigil-ed/ca.crt" -n "$N" -c 32 --key ed25519 --new-conn --server-pid "$SIGIL_PID"
echo "after load: RSS $(awk '/VmRSS/{printf "%.1f MiB", $2/1024}' /proc/$SIGIL_PID/status), peak $(awk '/VmHWM/{printf "%.1f MiB", $2/1024}' /proc/$SIGIL_PID/status)"

echo
cpu_of() { printf '%s\n' "${results[@]}" | grep "^$1 " | sed -E 's/.* server_cpu_ms_per_cert=([0-9.]+).*/\1/'; }
echo "== physical limit on one core from the openssl figures above: 1/(1/sign + 1/verify)"
openssl speed -seconds 1 ed25519 ecdsap256 2>/dev/null | awk '/^ *256 bits ecdsa/ {printf "p256: %.0f certificates/s\n", 1/(1/$7+1/$8)} /^ *253 bits EdDSA/ {printf "ed25519: %.0f certificates/s\n", 1/(1/$7+1/$8)}'
for l in sigil-ed25519-c32 sigil-p256-c32; do
  c=$(cpu_of "$l"); echo "$l: $c ms server CPU per certificate = $(python3 -c "print(f'{1000/$c:.0f}')") certificates/s per core"
done
echo
echo "== ratios Sigil/cfssl (requests/s, P-256 both)"
for c in 1 8 32; do
  s=$(rps_of "sigil-p256-c$c"); f=$(rps_of "cfssl-p256-c$c")
  echo "c=$c: sigil $s rps / cfssl $f rps = $(python3 -c "print(f'{$s/$f:.2f}x')" 2>/dev/null || echo n/a)"
done
s=$(rps_of "sigil-p256-newconn-c32"); f=$(rps_of "cfssl-p256-newconn-c32")
echo "new connection per request, c=32: sigil $s rps / cfssl $f rps = $(python3 -c "print(f'{$s/$f:.2f}x')" 2>/dev/null || echo n/a)"
for c in 1 8 32; do
  s=$(cpu_of "sigil-p256-c$c"); f=$(cpu_of "cfssl-p256-c$c")
  echo "server CPU per certificate, c=$c: sigil $s ms, cfssl $f ms: cfssl/sigil = $(python3 -c "print(f'{$f/$s:.2f}x')" 2>/dev/null || echo n/a)"
done
