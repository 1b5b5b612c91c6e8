#!/usr/bin/env bash
# Builds daprd for the conformance tests: Dapr's sidecar (github.com/dapr/dapr/cmd/daprd/app, at
# the version go.mod pins) without component build tags, plus the SQLite name resolver (main.go).
#
# Dapr's cmd/daprd refuses to run without the stablecomponents or allcomponents tag: an init in
# cmd/daprd/components/zz_notag.go panics. Those tags pull in every component's SDK, and some
# of those modules are not served by the module proxy this project uses. So the build uses the
# pinned Dapr module from the module cache, copied next to the output with that one guard file
# replaced by zz_notag.go.overlay, through a replace line in a copy of go.mod (-modfile). The
# repository's go.mod and go.sum are not touched. Usage: build.sh OUTPUT_BINARY
set -euo pipefail
out=${1:?usage: build.sh OUTPUT_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
mod="$here/../.."
cd "$mod"
go mod download github.com/dapr/dapr
dapr_dir=$(go list -m -f '{{.Dir}}' github.com/dapr/dapr)
version=$(go list -m -f '{{.Version}}' github.com/dapr/dapr)
guard=cmd/daprd/components/zz_notag.go
[ -f "$dapr_dir/$guard" ] || { echo "build.sh: $dapr_dir/$guard not found (Dapr version changed?)" >&2; exit 1; }

# A stable place (so the Go build cache is reused between builds), beside the output.
mkdir -p "$(dirname "$out")"
work="$(cd "$(dirname "$out")" && pwd)/.daprd-build"
src="$work/dapr-$version"
if [ ! -f "$src/.complete" ]; then
  rm -rf "$src"
  mkdir -p "$work"
  cp -R "$dapr_dir" "$src"
  chmod -R u+w "$src"
  cp "$here/zz_notag.go.overlay" "$src/$guard"
  touch "$src/.complete"
fi
cp go.mod "$work/go.mod"
cp go.sum "$work/go.sum"
printf '\nreplace github.com/dapr/dapr => %s\n' "$src" >> "$work/go.mod"
go build -modfile="$work/go.mod" -o "$out" ./cmd/daprd
