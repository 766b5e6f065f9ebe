#!/usr/bin/env bash
# Installs the Dapr runtime (daprd, placement, scheduler, sentry; the sidecar
# injector for tests/kubernetes) and the dapr CLI
# where the CLI expects them: $DAPR_HOME/bin (default ~/.dapr/bin) and
# $DAPR_HOME/config.yaml. Idempotent: a second run checks versions and exits.
#
# DAPR_INSTALL_METHOD chooses the route (a setting, never a network probe):
#   build  build from the Dapr Go modules through the Go module proxy
#          (default when `go` is installed)
#   slim   the official `dapr init --slim` with release downloads
#          (for machines with internet access but no Go toolchain)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DAPR_HOME="${DAPR_HOME:-$HOME/.dapr}"
bin="$DAPR_HOME/bin"
# The versions are the ones pinned by the wrapper modules' go.mod files.
runtime_version="$(sed -n 's/^require github.com\/dapr\/dapr v//p' "$here/dapr/runtime/go.mod")"
cli_version="$(sed -n 's/^require github.com\/dapr\/cli v//p' "$here/dapr/cli/go.mod")"
method="${DAPR_INSTALL_METHOD:-}"
if [[ -z "$method" ]]; then
  if command -v go >/dev/null 2>&1; then method=build; else method=slim; fi
fi

say() { printf '[install-dapr] %s\n' "$*"; }

installed_version() {  # prints the version a binary reports, or nothing
  "$1" --version 2>/dev/null | head -n 1 || true
}

write_default_config() {
  # The file `dapr init --slim` writes; dapr.yaml points at the project's own
  # configuration, this one only keeps the CLI's expectations satisfied.
  mkdir -p "$DAPR_HOME/components"
  [[ -f "$DAPR_HOME/config.yaml" ]] && return 0
  cat >"$DAPR_HOME/config.yaml" <<'EOF'
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: daprConfig
spec: {}
EOF
}

runtime_ok() {
  local b
  for b in daprd placement scheduler sentry injector; do [[ -x "$bin/$b" ]] || return 1; done
  [[ "$(installed_version "$bin/daprd")" == "$runtime_version" ]]
}

cli_ok() {
  [[ -x "$bin/dapr" ]] && "$bin/dapr" --version 2>/dev/null | grep -q "CLI version: $cli_version"
}

build_runtime() {
  say "building daprd, placement, scheduler, sentry, injector $runtime_version from Go modules (first: ~5-10 min)"
  local ldflags="-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$runtime_version"
  ldflags+=" -X github.com/dapr/kit/logger.DaprVersion=$runtime_version"
  # Without the version ldflags daprd reports "edge", and `dapr run` then
  # passes it no scheduler address.
  (cd "$here/dapr/runtime" && GOFLAGS=-mod=readonly go build -tags stablecomponents -trimpath \
    -ldflags "$ldflags" -o "$bin/" \
    github.com/dapr/dapr/cmd/daprd github.com/dapr/dapr/cmd/placement github.com/dapr/dapr/cmd/scheduler \
    github.com/dapr/dapr/cmd/sentry github.com/dapr/dapr/cmd/injector)
}

build_cli() {
  say "building the dapr CLI $cli_version from Go modules"
  # The CLI's go.mod is not tidy-able here (a test-only dependency is not
  # served), so the build may complete the module graph; every checksum it
  # needs is pinned in go.sum, so nothing is fetched unverified.
  (cd "$here/dapr/cli" && GOFLAGS=-mod=mod go build -trimpath \
    -ldflags "-s -w -X main.version=$cli_version -X main.apiVersion=1.0" \
    -o "$bin/dapr" github.com/dapr/cli)
}

install_slim() {
  say "installing with the official release downloads (dapr init --slim)"
  if ! cli_ok; then
    curl -fsSL https://raw.githubusercontent.com/dapr/cli/master/install/install.sh \
      | DAPR_INSTALL_DIR="$bin" bash -s "$cli_version"
  fi
  "$bin/dapr" init --slim --runtime-version "$runtime_version"
}

mkdir -p "$bin"
if runtime_ok && cli_ok; then
  say "Dapr runtime $runtime_version and CLI $cli_version already installed in $bin"
else
  case "$method" in
    build)
      command -v go >/dev/null 2>&1 || { say "DAPR_INSTALL_METHOD=build needs Go on PATH"; exit 1; }
      runtime_ok || build_runtime
      cli_ok || build_cli
      ;;
    slim) install_slim ;;
    *) say "unknown DAPR_INSTALL_METHOD '$method' (expected build or slim)"; exit 1 ;;
  esac
fi
write_default_config
runtime_ok || { say "daprd in $bin does not report $runtime_version"; exit 1; }
cli_ok || { say "dapr CLI in $bin does not report $cli_version"; exit 1; }
say "ok: $("$bin/dapr" --version | tr '\n' ' ')"
