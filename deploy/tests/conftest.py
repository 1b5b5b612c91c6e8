"""Shared fixtures: render the chart with Helm and parse the result."""

import os
import pathlib
import subprocess

import pytest
import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent.parent
REPO = DEPLOY.parent
CHART = DEPLOY / "helm" / "sigil"
MANIFEST = DEPLOY / "manifests" / "sigil.yaml"


def load_docs(text: str) -> list:
    return [d for d in yaml.safe_load_all(text) if d]


def helm_binary() -> str:
    helm = os.environ.get("HELM") or str(REPO / ".venv-deploy" / "bin" / "helm")
    if not os.path.exists(helm):
        pytest.fail(f"no Helm at {helm}: run deploy/validate.sh (or set HELM)")
    return helm


def helm_template(namespace: str = "dapr-system", release: str = "sigil",
                  values: dict | None = None, sets: list | None = None,
                  check: bool = True) -> subprocess.CompletedProcess:
    cmd = [helm_binary(), "template", release, str(CHART), "--namespace", namespace]
    if values is not None:
        cmd += ["--values", "-"]
    for s in sets or []:
        cmd += ["--set", s]
    return subprocess.run(cmd, input=yaml.safe_dump(values) if values is not None else "",
                          capture_output=True, text=True, check=check)


@pytest.fixture
def render():
    """render(namespace=..., values={...}, sets=[...]) -> list of objects."""

    def _render(**kwargs) -> list:
        return load_docs(helm_template(**kwargs).stdout)

    return _render


@pytest.fixture(scope="session")
def shipped() -> list:
    """The checked-in manifests for kubectl users."""
    return load_docs(MANIFEST.read_text())


@pytest.fixture(scope="session")
def shipped_pod_certificates() -> list:
    """The checked-in manifests with the PodCertificateRequest signer on."""
    return load_docs((MANIFEST.parent / "sigil-pod-certificates.yaml").read_text())


def find(docs: list, kind: str, name: str | None = None) -> list:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list, kind: str, name: str | None = None) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
