#!/usr/bin/env python3
"""Independent check of Sigil's JWT-SVIDs with PyJWT.

Starts `sigil serve` with --jwt-enabled and the OIDC discovery server (TLS, with a
certificate made here), asks it for an SVID with extra audiences (the `jwt_fetch` example
does the gRPC call), then verifies every returned token the way a relying party would:
discovery document -> jwks_uri -> PyJWKClient -> jwt.decode with audience and issuer.
Also checks that a tampered token and a wrong audience are refused, and that a Host
outside --oidc-allowed-hosts gets 403.

Needs: Python 3.9+ with `pyjwt[crypto]`, and the binaries built:
    cargo build --bin sigil --example jwt_fetch
Usage:
    python tests/interop/jwt_verify.py [--target-dir DIR] [--alg RS256]
Exit status 0 when every check passes.
"""

import argparse
import datetime
import http.client
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tls(dirname):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(dirname, "oidc.crt")
    key_path = os.path.join(dirname, "oidc.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--target-dir",
        default=os.environ.get("CARGO_TARGET_DIR", "target"),
        help="cargo target directory holding debug/sigil and debug/examples/jwt_fetch",
    )
    ap.add_argument("--profile", default="debug")
    ap.add_argument("--alg", default=None, help="--jwt-signing-algorithm for the server")
    args = ap.parse_args()
    sigil = os.path.join(args.target_dir, args.profile, "sigil")
    fetch = os.path.join(args.target_dir, args.profile, "examples", "jwt_fetch")
    for b in (sigil, fetch):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} not found: cargo build --bin sigil --example jwt_fetch")

    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = make_tls(tmp)
        creds = os.path.join(tmp, "credentials")
        grpc, health, metrics, oidc = (free_port() for _ in range(4))
        issuer = f"https://localhost:{oidc}"
        cmd = [
            sigil, "serve",
            "--port", str(grpc), "--healthz-port", str(health), "--metrics-port", str(metrics),
            "--issuer-credentials", creds, "--config", os.path.join(tmp, "none.yaml"),
            "--jwt-enabled", "--jwt-issuer", issuer,
            "--oidc-enabled", "--oidc-server-listen-port", str(oidc),
            "--oidc-server-tls-cert-file", cert_path, "--oidc-server-tls-key-file", key_path,
            "--oidc-allowed-hosts", "localhost",
        ]
        if args.alg:
            cmd += ["--jwt-signing-algorithm", args.alg]
        log = open(os.path.join(tmp, "sigil.log"), "wb")
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    sys.stdout.write(open(os.path.join(tmp, "sigil.log")).read())
                    sys.exit("sigil did not become ready")
                time.sleep(0.2)

            out = subprocess.run(
                [fetch, "--addr", f"127.0.0.1:{grpc}", "--ca", os.path.join(creds, "ca.crt"),
                 "--trust-domain", "example.org", "--namespace", "shop", "--app-id", "orders",
                 "--audience", "api://interop", "--audience", "example.org"],
                check=True, capture_output=True, text=True,
            ).stdout
            resp = json.loads(out)
            print("token (jwt):", resp["jwt"])
            spiffe_id = resp["spiffe_id"]

            ctx = ssl.create_default_context(cafile=cert_path)
            disc_url = f"https://localhost:{oidc}/.well-known/openid-configuration"
            with urllib.request.urlopen(disc_url, context=ctx, timeout=10) as r:
                check(r.headers.get("Content-Type") == "application/json", "discovery is application/json")
                disc = json.load(r)
            check(disc["issuer"] == issuer, f"discovery issuer {disc['issuer']}")
            print("discovery:", json.dumps(disc))
            algs = disc["id_token_signing_alg_values_supported"]
            jwks_client = jwt.PyJWKClient(disc["jwks_uri"], ssl_context=ctx)

            tokens = [(["example.org", "api://interop"], resp["jwt"])]
            tokens += [([aud], tok) for aud, tok in sorted(resp["per_audience_jwts"].items())]
            check(sorted(resp["per_audience_jwts"]) == ["api://interop", "example.org"],
                  "one token per (de-duplicated) audience")
            for auds, token in tokens:
                key = jwks_client.get_signing_key_from_jwt(token)
                for aud in auds:
                    claims = jwt.decode(
                        token, key.key, algorithms=algs, audience=aud, issuer=issuer,
                        options={"require": ["exp", "iat", "nbf", "sub", "aud", "jti", "iss"]},
                    )
                    check(claims["sub"] == spiffe_id and claims["aud"] == auds,
                          f"PyJWT verified {jwt.get_unverified_header(token)['alg']} token for aud={aud}: sub={claims['sub']} aud={claims['aud']}")

            head, body, sig = resp["jwt"].split(".")
            tampered = head + "." + body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + sig
            try:
                jwt.decode(tampered, key.key, algorithms=algs, audience="example.org", issuer=issuer)
                check(False, "tampered token refused")
            except jwt.InvalidTokenError:
                check(True, "tampered token refused")
            try:
                jwt.decode(resp["jwt"], jwks_client.get_signing_key_from_jwt(resp["jwt"]).key,
                           algorithms=algs, audience="someone-else", issuer=issuer)
                check(False, "wrong audience refused")
            except jwt.InvalidAudienceError:
                check(True, "wrong audience refused")

            conn = http.client.HTTPSConnection("127.0.0.1", oidc, context=ssl._create_unverified_context())
            conn.request("GET", "/jwks.json", headers={"Host": "evil.example"})
            check(conn.getresponse().status == 403, "Host outside --oidc-allowed-hosts gets 403")
            conn.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    print("all PyJWT checks passed")


if __name__ == "__main__":
    main()
