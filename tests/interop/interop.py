"""Interop checks of Sigil's certificates by independent validators.

For every CA key type (`sigil ca init --key-type`), a real `sigil serve` runs on free
loopback ports; a gRPC client generated at run time from the proto file asks it, over TLS
pinned to the CA's ca.crt (server name `localhost`), for certificates for every CSR key
type. Each answer is judged by:

- shape: workload_certificate = leaf + issuer (no root); trust_chain_certificates = one
  element holding the roots; valid_until = leaf NotAfter; leaf key = CSR key; one URI SAN.
- openssl verify -CAfile ca.crt -untrusted issuer leaf (plain, and -x509_strict with
  -purpose sslclient and sslserver)
- cryptography's x509.verification (client verifier and server verifier)
- pkilint (RFC 5280 linter): no ERROR/FATAL finding on leaf, issuer, root
- py-spiffe: X509Svid.parse, and the SPIFFE ID it reports

A check that cannot be made for a documented reason is reported as N/A with that reason;
anything else that does not pass is FAIL, printed with the validator's own words.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import verification
from spiffe.svid.x509_svid import X509Svid

import pkilint_judge
from pkilint_judge import NOTE_PKILINT_URI

CA_KEY_TYPES = ["ed25519", "p256", "p384"]
CSR_KEY_TYPES = ["ed25519", "p256", "p384", "rsa2048", "rsa3072"]
TRUST_DOMAIN = "public"
NAMESPACE = "interop"
CHECKS = ["shape", "openssl", "crypto-client", "crypto-server", "pkilint", "py-spiffe"]

PASS, FAIL, NA = "PASS", "FAIL", "N/A"

NOTE_ED25519 = (
    "cryptography's x509.verification implements the CA/Browser Forum Web PKI profile, "
    "which permits only RSA and ECDSA keys; it refuses Ed25519 with 'Forbidden public key "
    "algorithm' (not configurable through PolicyBuilder)"
)
NOTE_SERVER = (
    "cryptography's ServerVerifier matches the leaf against a DNSName or IPAddress subject "
    "only; a SPIFFE SVID carries a single URI SAN and no DNS SAN, so the check is made and "
    "must fail with exactly 'no matching subjectAltName' (a leaf that matched 'localhost' "
    "would be a FAIL)"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gen_stubs(proto_root: str, proto: str, out: str):
    import grpc_tools
    from grpc_tools import protoc

    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(
        [
            "protoc",
            f"-I{proto_root}",
            f"-I{wkt}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            proto,
        ]
    )
    if rc != 0:
        raise SystemExit(f"grpc_tools.protoc failed ({rc}) on {proto}")
    sys.path.insert(0, out)
    module = proto[: -len(".proto")].replace("/", ".")
    return importlib.import_module(module + "_pb2"), importlib.import_module(module + "_pb2_grpc")


def make_key(kind: str):
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate(), None
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1()), hashes.SHA384()
    bits = int(kind[3:])
    return rsa.generate_private_key(public_exponent=65537, key_size=bits), hashes.SHA256()


def make_csr(kind: str):
    key, digest = make_key(kind)
    # An empty subject, as daprd sends.
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, digest)
    return key, csr.public_bytes(serialization.Encoding.PEM)


def spki(cert_or_key) -> bytes:
    pub = cert_or_key.public_key()
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Server:
    def __init__(self, sigil: str, creds: str, log_path: str):
        self.port, self.healthz, self.metrics = free_port(), free_port(), free_port()
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sigil, "serve",
                "--issuer-credentials", creds,
                "--config", "/nonexistent/sigil-interop-config.yaml",
                "--port", str(self.port),
                "--healthz-port", str(self.healthz),
                "--metrics-port", str(self.metrics),
            ],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.log_path = log_path
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"sigil serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.healthz}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"sigil serve did not become healthy:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self) -> str:
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-4000:].decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def check_shape(resp, leaf_key, want_id, roots, issuer_file):
    chain = x509.load_pem_x509_certificates(resp.workload_certificate)
    problems = []
    if len(chain) != 2:
        problems.append(f"workload_certificate holds {len(chain)} certificates, want leaf + issuer")
    if len(chain) >= 2 and der(chain[1]) != der(issuer_file[0]):
        problems.append("second certificate of workload_certificate is not issuer.crt")
    root_ders = {der(r) for r in roots}
    if any(der(c) in root_ders for c in chain):
        problems.append("workload_certificate contains a root")
    if len(resp.trust_chain_certificates) != 1:
        problems.append(f"trust_chain_certificates has {len(resp.trust_chain_certificates)} elements, want 1")
    else:
        got = [der(c) for c in x509.load_pem_x509_certificates(resp.trust_chain_certificates[0])]
        if got != [der(r) for r in roots]:
            problems.append("trust_chain_certificates[0] is not the roots of ca.crt")
    leaf = chain[0]
    na = int(leaf.not_valid_after_utc.timestamp())
    if not resp.HasField("valid_until") or resp.valid_until.seconds != na:
        problems.append(f"valid_until {resp.valid_until.seconds} != leaf NotAfter {na}")
    if spki(leaf) != spki(leaf_key):
        problems.append("leaf public key is not the CSR's key")
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if list(san) != [x509.UniformResourceIdentifier(want_id)]:
        problems.append(f"SANs {list(san)}, want only URI {want_id}")
    return (FAIL, "; ".join(problems)) if problems else (PASS, "")


def check_openssl(tmp, leaf, issuer, ca_path):
    leaf_path, issuer_path = os.path.join(tmp, "leaf.pem"), os.path.join(tmp, "issuer.pem")
    with open(leaf_path, "wb") as f:
        f.write(pem(leaf))
    with open(issuer_path, "wb") as f:
        f.write(pem(issuer))
    # Plain, then strict RFC 5280 checks for each TLS role an SVID plays.
    for extra in ([], ["-x509_strict", "-purpose", "sslclient"], ["-x509_strict", "-purpose", "sslserver"]):
        r = subprocess.run(
            ["openssl", "verify", *extra, "-CAfile", ca_path, "-untrusted", issuer_path, leaf_path],
            capture_output=True, text=True,
        )
        if r.returncode != 0 or not r.stdout.strip().endswith(": OK"):
            return FAIL, f"openssl verify {' '.join(extra)}: " + (r.stdout + r.stderr).strip()
    return PASS, ""


def has_ed25519(*certs) -> bool:
    return any(isinstance(c.public_key(), ed25519.Ed25519PublicKey) for c in certs)


def check_crypto(leaf, issuer, roots, want_id, server: bool):
    builder = verification.PolicyBuilder().store(verification.Store(roots)).time(
        datetime.datetime.now(datetime.timezone.utc)
    )
    try:
        if server:
            builder.build_server_verifier(verification.DNSName("localhost")).verify(leaf, [issuer])
            return FAIL, "the server verifier accepted a SPIFFE leaf for DNS name 'localhost'"
        verified = builder.build_client_verifier().verify(leaf, [issuer])
    except verification.VerificationError as e:
        words = str(e)
        if "Forbidden public key algorithm" in words and has_ed25519(leaf, issuer, *roots):
            return NA, "ed25519"
        if server and "no matching subjectAltName" in words:
            return NA, "server"
        return FAIL, words
    if x509.UniformResourceIdentifier(want_id) not in (verified.subjects or []):
        return FAIL, f"client verifier reports subjects {verified.subjects}"
    if der(verified.chain[-1]) not in {der(r) for r in roots}:
        return FAIL, "client verifier built a chain to something other than ca.crt"
    return PASS, ""


def check_pkilint(venv_bin, tmp, cert, label):
    path = os.path.join(tmp, f"{label}.pem")
    with open(path, "wb") as f:
        f.write(pem(cert))
    return pkilint_judge.judge(os.path.join(venv_bin, "lint_pkix_cert"), path, TRUST_DOMAIN)


def check_py_spiffe(resp, key, want_id):
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        svid = X509Svid.parse(resp.workload_certificate, key_pem)
    except Exception as e:  # py-spiffe raises its own error classes; report them verbatim
        return FAIL, f"{type(e).__name__}: {e}"
    if str(svid.spiffe_id) != want_id:
        return FAIL, f"py-spiffe reports {svid.spiffe_id}, want {want_id}"
    return PASS, str(svid.spiffe_id)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sigil", required=True)
    ap.add_argument("--proto-root", required=True)
    ap.add_argument("--proto", required=True)
    args = ap.parse_args()
    if shutil.which("openssl") is None:
        raise SystemExit("openssl is not installed")
    venv_bin = os.path.dirname(sys.executable)

    work = tempfile.mkdtemp(prefix="sigil-interop-")
    stubs = os.path.join(work, "stubs")
    os.makedirs(stubs)
    pb, pb_grpc = gen_stubs(args.proto_root, args.proto, stubs)
    rows, failures, notes = [], [], set()

    try:
        for ca_kt in CA_KEY_TYPES:
            creds = os.path.join(work, f"ca-{ca_kt}")
            r = subprocess.run(
                [args.sigil, "ca", "init", "--out", creds, "--key-type", ca_kt, "--trust-domain", "localhost"],
                capture_output=True, text=True,
            )
            if r.returncode != 0:
                raise SystemExit(f"sigil ca init --key-type {ca_kt} failed: {r.stdout}{r.stderr}")
            ca_path = os.path.join(creds, "ca.crt")
            with open(ca_path, "rb") as f:
                ca_pem = f.read()
            roots = x509.load_pem_x509_certificates(ca_pem)
            with open(os.path.join(creds, "issuer.crt"), "rb") as f:
                issuer_file = x509.load_pem_x509_certificates(f.read())

            for label, cert in (("root", roots[0]), ("issuer", issuer_file[0])):
                st, detail = check_pkilint(venv_bin, work, cert, f"{ca_kt}-{label}")
                rows.append((f"ca={ca_kt} {label} cert", {"pkilint": st}))
                if st == FAIL:
                    failures.append(f"ca={ca_kt} {label}: pkilint: {detail}")

            server = Server(args.sigil, creds, os.path.join(work, f"serve-{ca_kt}.log"))
            try:
                creds_tls = grpc.ssl_channel_credentials(root_certificates=ca_pem)
                channel = grpc.secure_channel(
                    f"127.0.0.1:{server.port}", creds_tls,
                    options=[("grpc.ssl_target_name_override", "localhost")],
                )
                grpc.channel_ready_future(channel).result(timeout=30)
                stub = pb_grpc.CAStub(channel)
                for csr_kt in CSR_KEY_TYPES:
                    key, csr_pem = make_csr(csr_kt)
                    app = f"app-{csr_kt}"
                    want_id = f"spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/{app}"
                    req = pb.SignCertificateRequest(
                        id=app, namespace=NAMESPACE, trust_domain=TRUST_DOMAIN,
                        certificate_signing_request=csr_pem,
                        token_validator=pb.SignCertificateRequest.INSECURE,
                    )
                    name = f"ca={ca_kt} csr={csr_kt}"
                    try:
                        resp = stub.SignCertificate(req, timeout=30)
                    except grpc.RpcError as e:
                        rows.append((name, {c: FAIL for c in CHECKS}))
                        failures.append(f"{name}: SignCertificate: {e.code()}: {e.details()}")
                        continue
                    chain = x509.load_pem_x509_certificates(resp.workload_certificate)
                    leaf, issuer = chain[0], chain[1] if len(chain) > 1 else issuer_file[0]
                    results = {
                        "shape": check_shape(resp, key, want_id, roots, issuer_file),
                        "openssl": check_openssl(work, leaf, issuer, ca_path),
                        "crypto-client": check_crypto(leaf, issuer, roots, want_id, server=False),
                        "crypto-server": check_crypto(leaf, issuer, roots, want_id, server=True),
                        "pkilint": check_pkilint(venv_bin, work, leaf, f"{ca_kt}-{csr_kt}-leaf"),
                        "py-spiffe": check_py_spiffe(resp, key, want_id),
                    }
                    cells = {}
                    for check, (st, detail) in results.items():
                        if st == NA:
                            notes.add(detail)
                            st = f"N/A({detail})"
                        if st == PASS + "*":
                            notes.add("pkilint-uri")
                        if st == FAIL:
                            failures.append(f"{name}: {check}: {detail}")
                        cells[check] = st
                    rows.append((name, cells))
                channel.close()
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    width = max(len(r[0]) for r in rows) + 2
    print()
    print("".ljust(width) + "".join(c.ljust(18) for c in CHECKS))
    counts = {PASS: 0, FAIL: 0, NA: 0}
    for name, cells in rows:
        line = name.ljust(width)
        for c in CHECKS:
            v = cells.get(c, "-")
            line += v.ljust(18)
            if v.startswith(PASS):
                counts[PASS] += 1
            elif v.startswith("N/A"):
                counts[NA] += 1
            elif v == FAIL:
                counts[FAIL] += 1
        print(line)
    print()
    if "ed25519" in notes:
        print(f"N/A(ed25519): {NOTE_ED25519}")
    if "server" in notes:
        print(f"N/A(server): {NOTE_SERVER}")
    if "pkilint-uri" in notes:
        print(f"PASS*: {NOTE_PKILINT_URI}")
    print(f"\ninterop summary: {counts[PASS]} checks PASS, {counts[FAIL]} FAIL, {counts[NA]} N/A")
    if failures:
        print("\nFAILURES (validators' own words):")
        for f in failures:
            print(f"  - {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
