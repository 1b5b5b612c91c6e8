#!/usr/bin/env bash
# Side-by-side throughput of Sigil, Dapr Sentry and cfssl on loopback, interleaved in one run.
#   benches/compare.sh [REQUESTS]      (default 10000 requests per cell)
# Knobs (environment):
#   MAX_SECONDS=20      cap per cell; a cell that hits it reports fewer ok requests (rps stays valid)
#   SENTRY_BIN=PATH     Dapr's sentry binary; default: built from conformance/dapr into target/peers/
#   SKIP_CFSSL=1        leave cfssl out
#   SERVER_CPU=0 CLIENT_CPU=1   cores for the servers and for the load generator
#
# Sigil and Dapr Sentry run as they do out of the box: standalone mode, insecure validator,
# an Ed25519 root and issuer generated into an empty --issuer-credentials directory on first
# start, the same Dapr Configuration file (mTLS defaults). The load is what daprd sends: a
# CSR for an Ed25519 key with an empty subject, and the server accepted only by its SPIFFE ID
# spiffe://localhost/ns/default/dapr-sentry against the anchors (ca.crt), no session
# resumption. Two patterns: one reused HTTP/2 connection per worker, and a new TCP+TLS
# connection (full handshake) per request, as daprd does. A P-256-CSR row compares with
# cfssl, which signs with a P-256 CA over plain HTTP/JSON (no TLS: favours cfssl); cfssl
# cannot sign with an Ed25519 key.
#
# Cells are interleaved (each cell runs on every server before the next cell, alternating
# which server goes first), so that load from other processes hits all servers alike.
# Every server is pinned to SERVER_CPU, the load generator to CLIENT_CPU. Server CPU per
# certificate is the utime+stime delta of /proc/<pid>/stat over the cell, divided by the
# certificates issued; RSS is VmRSS (idle: one second after the first certificate) and VmHWM.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
MAX_SECONDS=${MAX_SECONDS:-20}
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
echo "== build"
cargo build --release --quiet --bin sigil --bin sigil-loadgen
S=target/release/sigil
L=target/release/sigil-loadgen
if [ -z "${SENTRY_BIN:-}" ]; then
  mkdir -p target/peers
  t0=$(date +%s%N)
  (cd conformance/dapr && go build -o ../../target/peers/sentry github.com/dapr/dapr/cmd/sentry)
  echo "dapr sentry (github.com/dapr/dapr $(sed -nE 's/^require github.com\/dapr\/dapr (v[^ ]+)$/\1/p' conformance/dapr/go.mod), $(go version | cut -d' ' -f3)): go build $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  SENTRY_BIN=target/peers/sentry
fi
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN_SERVER=(taskset -c "$SERVER_CPU"); PIN_CLIENT=(taskset -c "$CLIENT_CPU")
else
  PIN_SERVER=(); PIN_CLIENT=()
fi

echo
echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo || true
echo "uptime at start: $(uptime)"
echo "git: $(git log --oneline -1 2>/dev/null || echo unknown)"
echo "requests per cell: $N (cap ${MAX_SECONDS}s per cell)"
echo
echo "== physical limit per core (openssl speed, 2 s each)"
openssl speed -seconds 2 ed25519 ecdsap256 2>/dev/null | grep -E '^ *(253|256) bits' || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
rss_of() { awk -v k="$2:" '$1==k {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# The Dapr Configuration both CAs read (standalone: a file). mTLS defaults: 24h leaves, 15m skew.
CFG=$work/daprsystem.yaml
cat >"$CFG" <<'YAML'
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprsystem
spec:
  mtls:
    enabled: true
YAML

results=$work/results
: >"$results"
emit() { echo "$*"; echo "$*" >>"$results"; }

# start_ca KIND NAME DIR [extra args]: starts Sigil or Sentry on fresh loopback ports, pinned,
# and measures start to /healthz 200 and start to the first certificate signed (the probe
# retries from the moment the process is started; ca.crt may not exist yet).
start_ca() {
  local kind=$1 name=$2 dir=$3; shift 3
  local port hport mport fresh=existing
  port=$(free_port); hport=$(free_port); mport=$(free_port)
  mkdir -p "$dir"
  [ -s "$dir/ca.crt" ] || fresh=generated
  local t0; t0=$(date +%s%N)
  case $kind in
  sigil)
    env -u NAMESPACE "${PIN_SERVER[@]}" "$S" serve --config "$CFG" --issuer-credentials "$dir" \
      --listen-address 127.0.0.1 --port "$port" --healthz-listen-address 127.0.0.1 --healthz-port "$hport" \
      --metrics-listen-address 127.0.0.1 --metrics-port "$mport" --log-level warn \
      --peer-rate-limit=0 --identity-rate-limit=0 "$@" >"$dir.log" 2>&1 & ;;
  sentry)
    env -u NAMESPACE "${PIN_SERVER[@]}" "$SENTRY_BIN" --config "$CFG" --issuer-credentials "$dir" \
      --listen-address 127.0.0.1 --port "$port" --healthz-listen-address 127.0.0.1 --healthz-port "$hport" \
      --metrics-listen-address 127.0.0.1 --metrics-port "$mport" --log-level warn \
      --peer-rate-limit=0 --identity-rate-limit=0 "$@" >"$dir.log" 2>&1 & ;;
  esac
  CA_PID=$!; pids+=("$CA_PID"); CA_PORT=$port
  "${PIN_CLIENT[@]}" "$L" --probe --since-ns "$t0" --max-seconds 20 --addr "127.0.0.1:$port" --ca "$dir/ca.crt" \
    --label "$name" >"$dir.probe" 2>/dev/null &
  local probe=$! healthz_ms=never
  for _ in $(seq 1 4000); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$hport/healthz")" = 200 ]; then
      healthz_ms=$(( ($(date +%s%N) - t0) / 1000000 )); break
    fi
    sleep 0.005
  done
  wait "$probe" || { cat "$dir.probe" "$dir.log" >&2; echo "$name never signed" >&2; exit 1; }
  local first; first=$(sed -E 's/.*first_sign_ms=([0-9]+).*/\1/' "$dir.probe")
  sleep 1
  emit "start-$name kind=$kind ca=$fresh healthz_ms=$healthz_ms first_sign_ms=$first idle_rss_mib=$(rss_of "$CA_PID" VmRSS)"
}
stop_ca() { kill -INT "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

run() { # label pid, then loadgen args
  local label=$1 pid=$2; shift 2
  local line; line=$("${PIN_CLIENT[@]}" "$L" --label "$label" --server-pid "$pid" -n "$N" --max-seconds "$MAX_SECONDS" "$@" 2>"$work/loadgen.err") \
    || { cat "$work/loadgen.err" >&2; exit 1; }
  emit "$line"
  grep -q ' errors=0 ' <<<"$line" || grep 'first error' "$work/loadgen.err" >&2 || true
}

echo
echo "== start: first start (empty --issuer-credentials: the CA is generated), then a restart with the files"
for srv in sigil sentry; do
  start_ca "$srv" "$srv-first" "$work/$srv"; stop_ca "$CA_PID"
done
start_ca sigil sigil "$work/sigil"; SIGIL_PID=$CA_PID; SIGIL_PORT=$CA_PORT
start_ca sentry sentry "$work/sentry"; SENTRY_PID=$CA_PID; SENTRY_PORT=$CA_PORT
start_ca sigil sigil_p256ca "$work/sigil-p256ca" --ca-key-type p256; SIGILP_PID=$CA_PID; SIGILP_PORT=$CA_PORT
CFSSL_PID=
if [ -z "${SKIP_CFSSL:-}" ]; then
  read -r CFSSL_PID CFSSL_PORT < <("$SHARED/bench/cfssl-peer.sh" start "$work/cfssl" "$(free_port)" p256)
  pids+=("$CFSSL_PID")
  # The peer script starts cfssl unpinned; move it (and its threads) to the server core.
  command -v taskset >/dev/null && taskset -a -p -c "$SERVER_CPU" "$CFSSL_PID" >/dev/null || true
  sleep 1
  emit "start-cfssl kind=cfssl ca=generated idle_rss_mib=$(rss_of "$CFSSL_PID" VmRSS)"
fi

cell() { # server key pattern c
  local srv=$1 key=$2 pat=$3 c=$4 extra=()
  [ "$pat" = newconn ] && extra=(--new-conn)
  local label="$srv-$key-$pat-c$c"
  case $srv in
  sigil) run "$label" "$SIGIL_PID" --target grpc --addr "127.0.0.1:$SIGIL_PORT" --ca "$work/sigil/ca.crt" -c "$c" --key "$key" "${extra[@]}" ;;
  sentry) run "$label" "$SENTRY_PID" --target grpc --addr "127.0.0.1:$SENTRY_PORT" --ca "$work/sentry/ca.crt" -c "$c" --key "$key" "${extra[@]}" ;;
  sigil_p256ca) run "$label" "$SIGILP_PID" --target grpc --addr "127.0.0.1:$SIGILP_PORT" --ca "$work/sigil-p256ca/ca.crt" -c "$c" --key "$key" "${extra[@]}" ;;
  cfssl) if [ -n "$CFSSL_PID" ]; then run "$label" "$CFSSL_PID" --target cfssl --addr "127.0.0.1:$CFSSL_PORT" -c "$c" --key "$key" "${extra[@]}"; fi ;;
  esac
}

echo
echo "== cells (interleaved; Ed25519 CSRs to Sigil and Sentry, both with their Ed25519 issuer)"
i=0
for pat in reuse newconn; do
  for c in 1 8 32; do
    if (( i % 2 == 0 )); then order=(sigil sentry); else order=(sentry sigil); fi
    for srv in "${order[@]}"; do cell "$srv" ed25519 "$pat" "$c"; done
    i=$((i + 1))
  done
done
echo
echo "== cells (interleaved; P-256 CSRs: Sigil and Sentry with their Ed25519 issuer, cfssl and Sigil with a P-256 CA)"
for pc in reuse:1 reuse:8 reuse:32 newconn:32; do
  pat=${pc%:*}; c=${pc#*:}
  if (( i % 2 == 0 )); then order=(sigil sentry cfssl sigil_p256ca); else order=(cfssl sigil_p256ca sentry sigil); fi
  for srv in "${order[@]}"; do cell "$srv" p256 "$pat" "$c"; done
  i=$((i + 1))
done

echo
for name in sigil:$SIGIL_PID sentry:$SENTRY_PID sigil_p256ca:$SIGILP_PID ${CFSSL_PID:+cfssl:$CFSSL_PID}; do
  emit "end-${name%%:*} rss_mib=$(rss_of "${name#*:}" VmRSS) peak_rss_mib=$(rss_of "${name#*:}" VmHWM)"
done
echo "uptime at end: $(uptime)"

echo
echo "== physical limit on one core (openssl speed): 1/(1/sign + 1/verify)"
openssl speed -seconds 1 ed25519 ecdsap256 2>/dev/null | awk '/^ *256 bits ecdsa/ {printf "p256: %.0f certificates/s\n", 1/(1/$7+1/$8)} /^ *253 bits EdDSA/ {printf "ed25519: %.0f certificates/s\n", 1/(1/$7+1/$8)}'

echo
echo "== table (ratios: Sigil/Sentry; targets at c=32: rps >= 3x, CPU/cert <= 0.33x, p99 < 1x, idle RSS < 1x)"
python3 benches/compare_table.py "$results"
