#!/usr/bin/env bash
# `make setup`: from a fresh machine to everything the project needs —
# Redis, PostgreSQL, Prometheus, Chromium, podman and etcd (Debian packages), the Python
# environment in .venv/ with the `intraday` console script, the Dapr runtime and CLI, the
# Zipkin server, helm, Toxiproxy, and a Kubernetes API server with kubectl.
# Idempotent: each step checks what is there and a second run takes seconds.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
say() { printf '[setup] %s\n' "$*"; }
started=$(date +%s)

# 1. Servers from Debian's packages (Prometheus with promtool), Chromium
#    with its WebDriver for the dashboard's browser tests, and podman (with
#    runc, netavark and mmdebstrap: make images, tests/compose), and etcd
#    for the Kubernetes API server of tests/kubernetes.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
for pkg in podman runc mmdebstrap netavark aardvark-dns iptables etcd-server; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]} (apt)"
  sudo_cmd=(); [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The packages may start system-wide servers; the project runs its own.
  "${sudo_cmd[@]}" service redis-server stop >/dev/null 2>&1 || true
  "${sudo_cmd[@]}" service postgresql stop >/dev/null 2>&1 || true
  "${sudo_cmd[@]}" service prometheus stop >/dev/null 2>&1 || true
  "${sudo_cmd[@]}" service etcd stop >/dev/null 2>&1 || true
else
  say "redis-server, postgresql, prometheus, chromium and podman already installed"
fi

# 2. Python environment: exactly the locked set (requirements-dev.lock, every
#    package pinned with its hashes; scripts/lock.sh makes it), installed by
#    uv at the version the lock names; then the project itself, editable.
python="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || { say "creating .venv"; "$python" -m venv .venv; }
uv_version="$(sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements-dev.lock)"
if [[ "$(.venv/bin/uv --version 2>/dev/null)" != "uv $uv_version"* ]]; then
  say "installing uv $uv_version"
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$uv_version"
fi
stamp=.venv/.intraday-lock
want="$(cat requirements-dev.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  say "installing the locked Python packages into .venv (uv)"
  .venv/bin/uv pip sync -q --python .venv/bin/python --require-hashes requirements-dev.lock
  .venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
  echo "$want" >"$stamp"
else
  say "Python packages match requirements-dev.lock"
fi

# 3. Dapr runtime and CLI.
bash scripts/install_dapr.sh
# `dapr` on the venv's PATH, beside `intraday`.
ln -sf "${DAPR_HOME:-$HOME/.dapr}/bin/dapr" .venv/bin/dapr

# 4. A GCS emulator for the model store's bucket tests, built from its Go
#    module (kept outside the repo; seconds when already built).
gcs_version=v1.52.2
gcs_bin="${XDG_CACHE_HOME:-$HOME/.cache}/intraday/bin"
if ! command -v go >/dev/null 2>&1; then
  say "Go not found: fake-gcs-server not built (the GCS model-store test needs it)"
elif ! [[ -x "$gcs_bin/fake-gcs-server" && -f "$gcs_bin/.fake-gcs-server-$gcs_version" ]]; then
  say "building fake-gcs-server $gcs_version (Go module)"
  mkdir -p "$gcs_bin"
  GOBIN="$gcs_bin" go install "github.com/fsouza/fake-gcs-server@$gcs_version"
  touch "$gcs_bin/.fake-gcs-server-$gcs_version"
else
  say "fake-gcs-server $gcs_version present"
fi
ln -sf "$gcs_bin/fake-gcs-server" .venv/bin/fake-gcs-server

# 5. Zipkin (traces, locally): the server's `slim` jar from Maven Central,
#    fetched by Maven into the cache (outside the repo); Java runs it.
zipkin_version=3.5.1
zipkin_dir="${XDG_CACHE_HOME:-$HOME/.cache}/intraday/zipkin"
zipkin_jar="$zipkin_dir/zipkin-server-$zipkin_version-slim.jar"
if [[ -s "$zipkin_jar" ]]; then
  say "zipkin $zipkin_version present"
elif ! command -v mvn >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
  say "Maven or Java not found: Zipkin not installed (make up needs it)"; exit 1
else
  say "fetching the Zipkin server $zipkin_version (Maven)"
  mvn -q dependency:copy "-Dartifact=io.zipkin:zipkin-server:$zipkin_version:jar:slim" \
    "-DoutputDirectory=$zipkin_dir"
fi

# 6. Helm (the chart's lint and render tests), built from its Go module into
#    the same cache; and the module sources whose CRDs the rendered
#    manifests are validated against (Dapr's, KEDA's), in Go's module cache.
helm_version=v4.3.2
keda_version=v2.17.2
if ! command -v go >/dev/null 2>&1; then
  say "Go not found: helm not built (the chart tests need it)"; exit 1
elif ! [[ -x "$gcs_bin/helm" && -f "$gcs_bin/.helm-$helm_version" ]]; then
  say "building helm $helm_version (Go module, about 2 minutes)"
  (cd /tmp && GOBIN="$gcs_bin" go install "helm.sh/helm/v4/cmd/helm@$helm_version")
  touch "$gcs_bin/.helm-$helm_version"
else
  say "helm $helm_version present"
fi
ln -sf "$gcs_bin/helm" .venv/bin/helm
(cd /tmp && go mod download "github.com/kedacore/keda/v2@$keda_version")

# 7. Toxiproxy (network faults between the stack's processes, tests/network),
#    built from its Go module into the same cache.
toxiproxy_version=v2.5.0
if ! [[ -x "$gcs_bin/toxiproxy-server" && -f "$gcs_bin/.toxiproxy-$toxiproxy_version" ]]; then
  say "building toxiproxy $toxiproxy_version (Go module)"
  (cd /tmp && GOBIN="$gcs_bin" go install "github.com/Shopify/toxiproxy/v2/cmd/server@$toxiproxy_version")
  mv -f "$gcs_bin/server" "$gcs_bin/toxiproxy-server"
  touch "$gcs_bin/.toxiproxy-$toxiproxy_version"
else
  say "toxiproxy $toxiproxy_version present"
fi
ln -sf "$gcs_bin/toxiproxy-server" .venv/bin/toxiproxy-server

# 8. A real Kubernetes API server and kubectl (tests/kubernetes: the chart
#    applied to it), built from the k8s.io/kubernetes Go module through the
#    wrapper module scripts/kubernetes (about 5 minutes the first time).
k8s_version="$(sed -n 's/^require k8s.io\/kubernetes v//p' scripts/kubernetes/go.mod)"
if ! [[ -x "$gcs_bin/kube-apiserver" && -x "$gcs_bin/kubectl" && -f "$gcs_bin/.kubernetes-$k8s_version" ]]; then
  say "building kube-apiserver and kubectl v$k8s_version (Go modules, about 5 minutes)"
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=v$k8s_version -X $pkg.gitMajor=${k8s_version%%.*}"
  ldflags+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$k8s_version") -X $pkg.gitTreeState=clean"
  (cd scripts/kubernetes && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "$ldflags" \
    -o "$gcs_bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
  touch "$gcs_bin/.kubernetes-$k8s_version"
else
  say "kube-apiserver and kubectl v$k8s_version present"
fi
ln -sf "$gcs_bin/kube-apiserver" .venv/bin/kube-apiserver
ln -sf "$gcs_bin/kubectl" .venv/bin/kubectl

say "done in $(($(date +%s) - started)) s"
