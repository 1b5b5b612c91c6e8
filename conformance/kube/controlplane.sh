#!/usr/bin/env bash
# A real Kubernetes control plane on loopback for tests: etcd + kube-apiserver, nothing else
# (no kubelet, scheduler or controller-manager). Certificates are made at run time.
#
#   controlplane.sh build OUTDIR     build OUTDIR/kube-apiserver and OUTDIR/etcd with the go command
#   controlplane.sh start STATEDIR   start both on 127.0.0.1 (free ports), wait for /readyz, write
#                                    STATEDIR/admin.kubeconfig and STATEDIR/env
#   controlplane.sh stop STATEDIR    stop both (SIGTERM, then SIGKILL after 20 s)
#   controlplane.sh kill-apiserver STATEDIR / start-apiserver STATEDIR
#                                    fault injection: SIGKILL the apiserver; start it again
#   controlplane.sh stop-etcd STATEDIR / start-etcd STATEDIR
#                                    fault injection: stop etcd under the running apiserver
#
# `start` takes the binaries from $CONTROLPLANE_BIN (default: target/controlplane of the
# repository). STATEDIR/env has ETCD_PID, ETCD_PORT, APISERVER_PID, APISERVER_PORT, KUBECONFIG,
# CONTROLPLANE_BIN and READY_SECONDS, in shell syntax.
# Logs: STATEDIR/etcd.log, STATEDIR/kube-apiserver.log, and the API audit log
# STATEDIR/audit.log (every request at Metadata level: user, verb, resource, response code).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
default_bin="$repo/target/controlplane"

die() {
	echo "controlplane: $*" >&2
	exit 1
}

# A free TCP port on 127.0.0.1 (the kernel's choice; released before the server binds it).
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

cmd_build() {
	local out="${1:?usage: controlplane.sh build OUTDIR}"
	mkdir -p "$out"
	out="$(cd "$out" && pwd)"
	# The apiserver and etcd are separate modules: k8s.io/kubernetes v1.37 requires etcd v3.7
	# modules, which would lift etcd server out of the v3.6 line in a shared module graph.
	# The version Kubernetes' own build stamps in (else /version says v0.0.0-master).
	local v pkg=k8s.io/component-base/version
	v="$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
	local minor="${v#v1.}"
	minor="${minor%%.*}"
	(cd "$here" && go build \
		-ldflags "-X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean" \
		-o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
	(cd "$here/etcd" && go build -o "$out/etcd" go.etcd.io/etcd/server/v3)
	"$out/kube-apiserver" --version
	local ev
	ev="$("$out/etcd" --version)"
	echo "${ev%%$'\n'*}"
}

# openssl helpers -------------------------------------------------------------------------

ec_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# new_ca DIR NAME CN
new_ca() {
	ec_key "$1/$2.key"
	openssl req -x509 -new -key "$1/$2.key" -out "$1/$2.crt" -subj "/CN=$3" -days 7 \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# leaf DIR NAME CA SUBJECT EXTFILE-CONTENT
leaf() {
	local dir="$1" name="$2" ca="$3" subj="$4" ext="$5"
	ec_key "$dir/$name.key"
	openssl req -new -key "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr" 2>/dev/null
	printf '%s\n' "$ext" >"$dir/$name.ext"
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" \
		-CAcreateserial -days 7 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
	rm -f "$dir/$name.csr" "$dir/$name.ext"
}

make_pki() {
	local p="$1"
	mkdir -p "$p"
	chmod 700 "$p"
	new_ca "$p" ca "sigil-test-apiserver-ca"
	leaf "$p" apiserver ca "/CN=kube-apiserver" \
		"basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
	new_ca "$p" client-ca "sigil-test-client-ca"
	leaf "$p" admin client-ca "/O=system:masters/CN=sigil-test-admin" \
		"basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
	# The service-account token signing key (RS256, as kubeadm makes it).
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$p/sa.key" 2>/dev/null
	openssl pkey -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
	rm -f "$p"/*.srl
}

b64() { base64 -w0 <"$1"; }

write_kubeconfig() {
	local state="$1" port="$2" p="$1/pki"
	cat >"$state/admin.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: loopback
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(b64 "$p/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$p/admin.crt")
    client-key-data: $(b64 "$p/admin.key")
contexts:
- name: admin
  context:
    cluster: loopback
    user: admin
current-context: admin
EOF
	chmod 600 "$state/admin.kubeconfig"
}

# wait_for PID WHAT SECONDS COMMAND...: run COMMAND until it succeeds, the process dies or time runs out.
wait_for() {
	local pid="$1" what="$2" secs="$3"
	shift 3
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		kill -0 "$pid" 2>/dev/null || return 1
		((SECONDS < deadline)) || {
			echo "controlplane: $what not ready after ${secs}s" >&2
			return 1
		}
		sleep 0.2
	done
}

cmd_start() {
	local state="${1:?usage: controlplane.sh start STATEDIR}"
	local bin="${CONTROLPLANE_BIN:-$default_bin}"
	[[ -x "$bin/kube-apiserver" && -x "$bin/etcd" ]] ||
		die "no kube-apiserver/etcd in $bin (run: controlplane.sh build $bin, or set CONTROLPLANE_BIN)"
	bin="$(cd "$bin" && pwd)"
	mkdir -p "$state"
	state="$(cd "$state" && pwd)"
	[[ -f "$state/env" ]] && die "$state/env exists: stop the running control plane first"
	local t0=$SECONDS
	rm -rf "$state/pki" "$state/etcd-data" "$state/apiserver-certs" "$state/audit.log"
	make_pki "$state/pki"

	local etcd_port etcd_peer api_port
	etcd_port="$(free_port)"
	etcd_peer="$(free_port)"
	api_port="$(free_port)"

	: >"$state/env"
	if ! launch_etcd "$state" "$bin" "$etcd_port" "$etcd_peer"; then
		cmd_stop "$state" || true
		die "etcd did not start (log: $state/etcd.log)"
	fi

	# Every request at Metadata level (user, verb, resource, name, response code), written
	# before the response is sent: the tests read Sigil's API calls from it.
	cat >"$state/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
EOF
	printf 'CONTROLPLANE_BIN=%s\nKUBECONFIG=%s\n' "$bin" "$state/admin.kubeconfig" >>"$state/env"
	write_kubeconfig "$state" "$api_port"
	if ! launch_apiserver "$state" "$bin" "$api_port" "$etcd_port"; then
		cmd_stop "$state" || true
		die "kube-apiserver did not become ready (log: $state/kube-apiserver.log)"
	fi
	echo "READY_SECONDS=$((SECONDS - t0))" >>"$state/env"
	echo "control plane ready in $((SECONDS - t0))s: https://127.0.0.1:$api_port (KUBECONFIG=$state/admin.kubeconfig)"
}

# launch_etcd STATEDIR BIN PORT PEER_PORT: start etcd (log appended), record ETCD_PID,
# ETCD_PORT and ETCD_PEER_PORT in STATEDIR/env, wait for /health.
launch_etcd() {
	local state="$1" bin="$2" etcd_port="$3" etcd_peer="$4"
	local existing=new
	[[ -d "$state/etcd-data/member" ]] && existing=existing
	setsid "$bin/etcd" \
		--name sigil-test \
		--data-dir "$state/etcd-data" \
		--listen-client-urls "http://127.0.0.1:$etcd_port" \
		--advertise-client-urls "http://127.0.0.1:$etcd_port" \
		--listen-peer-urls "http://127.0.0.1:$etcd_peer" \
		--initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
		--initial-cluster "sigil-test=http://127.0.0.1:$etcd_peer" \
		--initial-cluster-state "$existing" \
		--unsafe-no-fsync \
		</dev/null >>"$state/etcd.log" 2>&1 &
	local etcd_pid=$!
	sed -i '/^ETCD_PID=/d; /^ETCD_PORT=/d; /^ETCD_PEER_PORT=/d' "$state/env"
	printf 'ETCD_PID=%s\nETCD_PORT=%s\nETCD_PEER_PORT=%s\n' "$etcd_pid" "$etcd_port" "$etcd_peer" >>"$state/env"
	if ! wait_for "$etcd_pid" etcd 60 curl -fsS "http://127.0.0.1:$etcd_port/health"; then
		tail -20 "$state/etcd.log" >&2
		return 1
	fi
}

# launch_apiserver STATEDIR BIN PORT ETCD_PORT: start kube-apiserver (log appended), record
# APISERVER_PID and APISERVER_PORT in STATEDIR/env, wait for /readyz.
launch_apiserver() {
	local state="$1" bin="$2" api_port="$3" etcd_port="$4" p="$1/pki"
	setsid "$bin/kube-apiserver" \
		--bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 \
		--secure-port="$api_port" \
		--cert-dir="$state/apiserver-certs" \
		--tls-cert-file="$p/apiserver.crt" \
		--tls-private-key-file="$p/apiserver.key" \
		--client-ca-file="$p/client-ca.crt" \
		--etcd-servers="http://127.0.0.1:$etcd_port" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$p/sa.pub" \
		--service-account-signing-key-file="$p/sa.key" \
		--api-audiences=https://kubernetes.default.svc.cluster.local \
		--authorization-mode=Node,RBAC \
		--runtime-config=certificates.k8s.io/v1beta1/podcertificaterequests=true \
		--enable-admission-plugins=NodeRestriction \
		--service-cluster-ip-range=10.96.0.0/16 \
		--endpoint-reconciler-type=none \
		--allow-privileged=false \
		--profiling=false \
		--audit-policy-file="$state/audit-policy.yaml" \
		--audit-log-path="$state/audit.log" \
		--audit-log-mode=blocking \
		</dev/null >>"$state/kube-apiserver.log" 2>&1 &
	local api_pid=$!
	sed -i '/^APISERVER_PID=/d; /^APISERVER_PORT=/d' "$state/env"
	printf 'APISERVER_PID=%s\nAPISERVER_PORT=%s\n' "$api_pid" "$api_port" >>"$state/env"
	if ! wait_for "$api_pid" kube-apiserver 180 \
		curl -fsS --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" \
		"https://127.0.0.1:$api_port/readyz"; then
		tail -30 "$state/kube-apiserver.log" >&2
		return 1
	fi
}

# Fault injection for tests: SIGKILL the apiserver (etcd keeps running), and start it again
# on the same port with the same state.
cmd_kill_apiserver() {
	local state="${1:?usage: controlplane.sh kill-apiserver STATEDIR}" APISERVER_PID=""
	[[ -f "$state/env" ]] || die "no $state/env"
	# shellcheck disable=SC1091
	source "$state/env"
	kill -KILL "$APISERVER_PID" 2>/dev/null || die "kube-apiserver ($APISERVER_PID) is not running"
	while kill -0 "$APISERVER_PID" 2>/dev/null; do sleep 0.05; done
}

cmd_start_apiserver() {
	local state="${1:?usage: controlplane.sh start-apiserver STATEDIR}"
	local APISERVER_PID="" APISERVER_PORT="" ETCD_PORT="" CONTROLPLANE_BIN=""
	[[ -f "$state/env" ]] || die "no $state/env"
	# shellcheck disable=SC1091
	source "$state/env"
	kill -0 "$APISERVER_PID" 2>/dev/null && die "kube-apiserver ($APISERVER_PID) is running"
	local t0=$SECONDS
	launch_apiserver "$state" "$CONTROLPLANE_BIN" "$APISERVER_PORT" "$ETCD_PORT" ||
		die "kube-apiserver did not become ready again (log: $state/kube-apiserver.log)"
	echo "kube-apiserver ready again in $((SECONDS - t0))s"
}

cmd_stop_etcd() {
	local state="${1:?usage: controlplane.sh stop-etcd STATEDIR}" ETCD_PID=""
	[[ -f "$state/env" ]] || die "no $state/env"
	# shellcheck disable=SC1091
	source "$state/env"
	kill -0 "$ETCD_PID" 2>/dev/null || die "etcd ($ETCD_PID) is not running"
	stop_pid "$ETCD_PID" etcd
}

cmd_start_etcd() {
	local state="${1:?usage: controlplane.sh start-etcd STATEDIR}"
	local ETCD_PID="" ETCD_PORT="" ETCD_PEER_PORT="" CONTROLPLANE_BIN=""
	[[ -f "$state/env" ]] || die "no $state/env"
	# shellcheck disable=SC1091
	source "$state/env"
	kill -0 "$ETCD_PID" 2>/dev/null && die "etcd ($ETCD_PID) is running"
	local t0=$SECONDS
	launch_etcd "$state" "$CONTROLPLANE_BIN" "$ETCD_PORT" "$ETCD_PEER_PORT" ||
		die "etcd did not start again (log: $state/etcd.log)"
	echo "etcd ready again in $((SECONDS - t0))s"
}

# stop_pid PID NAME: SIGTERM, wait up to 20 s, then SIGKILL.
stop_pid() {
	local pid="$1" name="$2"
	[[ -n "$pid" ]] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.2
	done
	echo "controlplane: $name ($pid) ignored SIGTERM; SIGKILL" >&2
	kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
	local state="${1:?usage: controlplane.sh stop STATEDIR}"
	[[ -f "$state/env" ]] || die "no $state/env: nothing to stop"
	local APISERVER_PID="" ETCD_PID=""
	# shellcheck disable=SC1091
	source "$state/env"
	stop_pid "$APISERVER_PID" kube-apiserver
	stop_pid "$ETCD_PID" etcd
	rm -f "$state/env"
}

case "${1:-}" in
build) cmd_build "${2:-}" ;;
start) cmd_start "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
kill-apiserver) cmd_kill_apiserver "${2:-}" ;;
start-apiserver) cmd_start_apiserver "${2:-}" ;;
stop-etcd) cmd_stop_etcd "${2:-}" ;;
start-etcd) cmd_start_etcd "${2:-}" ;;
*)
	echo "usage: $0 build OUTDIR | start STATEDIR | stop STATEDIR | kill-apiserver|start-apiserver|stop-etcd|start-etcd STATEDIR" >&2
	exit 2
	;;
esac
