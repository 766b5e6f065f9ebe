#!/usr/bin/env bash
# `make images`: every target of the Dockerfile built with podman, as a real
# user builds it with Docker (`docker build --target app .`), plus the images
# the compose override (deploy/podman/compose.local.yml) runs in place of
# those that cannot be pulled on a machine without an image registry.
#
#   1. Base images made here, once (cached in podman's storage; a version
#      stamp in a label says when to remake them): Debian bookworm from
#      Debian's packages (mmdebstrap), tagged as the names the Dockerfile's
#      FROM lines use (debian:bookworm-slim; python:3.11-slim-bookworm with
#      Debian's Python 3.11), and Dapr's release images from the binaries
#      `make setup` built (FROM scratch + the binary, as Dapr's own are).
#      `--pull=never` makes the Dockerfile resolve to them.
#   2. The Dockerfile's targets: intraday (app), intraday-forecaster,
#      intraday-telemetry-chdb, intraday-dapr.
#   3. The infrastructure of the compose override: Redis, PostgreSQL,
#      Prometheus from Debian's packages, Zipkin from its jar.
#
# The host's CA bundle reaches pip inside the build as a build secret (never
# a layer). Figures (seconds and sizes per image) in .data/images.json.
#
#   bash scripts/images.sh [--no-cache] [target ...]   # default: all
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CONTAINERS_CONF="$root/deploy/podman/containers.conf"
say() { printf '[images] %s\n' "$*"; }

no_cache=()
targets=()
for arg in "$@"; do
  case "$arg" in
    --no-cache) no_cache=(--no-cache) ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) targets+=("$arg") ;;
  esac
done
all=(app forecaster telemetry-chdb dapr redis postgres prometheus zipkin)
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "unknown image $t (one of: ${all[*]})" >&2; exit 2; }
done

command -v podman >/dev/null || { echo "podman not found: run make setup" >&2; exit 1; }
dapr_bin="${DAPR_HOME:-$HOME/.dapr}/bin"
dapr_version="$(sed -n 's/^require github.com\/dapr\/dapr v//p' scripts/dapr/runtime/go.mod)"
python_version="$(sed -n 's/^ARG PYTHON_VERSION=//p' Dockerfile)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/intraday"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
report="$root/.data/images.json"
mkdir -p "$root/.data"
declare -A seconds=()

# ---- 1. base images ---------------------------------------------------------
# Debian's slim images leave out manuals, docs and translations; so do these
# (and merge /usr by the hook rather than the usrmerge package, which pulls
# in the whole of Perl). Like Debian's images, apt keeps no package cache in
# them: without that, every `apt-get install` layer carried 77 MB of it.
mkdir -p "$work/apt.conf.d"
cat >"$work/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
slim=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
      --customize-hook="copy-in $work/apt.conf.d/docker-clean /etc/apt/apt.conf.d"
      --customize-hook='rm -f "$1"/var/cache/apt/*.bin'
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*'
      --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
      --dpkgopt='path-exclude=/usr/share/info/*')
base_stamp="bookworm-minbase-4"

base_image() {  # name, packages (comma separated, may be empty), command
  local name="$1" include="$2" cmd="$3"
  if [[ "$(podman image inspect --format '{{index .Labels "org.intraday.base"}}' "$name" 2>/dev/null)" == "$base_stamp" ]]; then
    say "$name: present (made here from Debian's packages)"
    return
  fi
  say "$name: making it from Debian's packages (mmdebstrap)"
  local t0=$SECONDS args=(--variant=minbase --quiet "${slim[@]}")
  [[ -n "$include" ]] && args+=("--include=$include")
  mmdebstrap "${args[@]}" bookworm "$work/base.tar" >"$work/mmdebstrap.log" 2>&1 || {
    tail -n 30 "$work/mmdebstrap.log" >&2; echo "[images] $name: mmdebstrap failed" >&2; exit 1; }
  podman import --quiet \
    --change "LABEL org.intraday.base=$base_stamp" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8" \
    --change "CMD [\"$cmd\"]" \
    "$work/base.tar" "$name" >/dev/null
  rm -f "$work/base.tar"
  seconds[$name]=$((SECONDS - t0))
}

dapr_release_image() {  # binary name
  local name="docker.io/daprio/$1:$dapr_version"
  if [[ "$(podman image inspect --format '{{index .Labels "org.intraday.binary"}}' "$name" 2>/dev/null)" \
        == "$(sha256sum <"$dapr_bin/$1" | cut -c1-16)" ]]; then
    return
  fi
  say "$name: from $dapr_bin/$1"
  mkdir -p "$work/$1"
  cp "$dapr_bin/$1" "$work/$1/$1"
  printf 'FROM scratch\nLABEL org.intraday.binary=%s\nCOPY %s /%s\nENTRYPOINT ["/%s"]\n' \
    "$(sha256sum <"$dapr_bin/$1" | cut -c1-16)" "$1" "$1" "$1" >"$work/$1/Containerfile"
  podman build --quiet --pull=never -t "$name" -f "$work/$1/Containerfile" "$work/$1" >/dev/null
}

base_image docker.io/library/debian:bookworm-slim "" bash
base_image "docker.io/library/python:$python_version-slim-bookworm" "python3,python3-venv,python-is-python3" python3
for b in daprd sentry placement scheduler; do dapr_release_image "$b"; done

# ---- 2. and 3. the images ---------------------------------------------------
ca_bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
secret=()
[[ -s "$ca_bundle" ]] && secret=(--secret "id=ca-bundle,src=$ca_bundle")

replaced=()
build() {  # target, tag, containerfile, context
  local target="$1" tag="$2" file="$3" context="$4" t0=$SECONDS before
  before="$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
  say "$tag: building (target $target)"
  podman build --pull=never "${no_cache[@]}" "${secret[@]}" --target "$target" -t "$tag" \
    -f "$file" --layers "$context" >"$work/$target.log" 2>&1 || {
      tail -n 40 "$work/$target.log" >&2; echo "[images] $tag: build failed" >&2; exit 1; }
  seconds[$tag]=$((SECONDS - t0))
  [[ -n "$before" && "$before" != "$(podman image inspect --format '{{.Id}}' "$tag")" ]] && replaced+=("$before")
  return 0
}

# One context for the infrastructure: deploy/podman and the Zipkin jar.
infra_context() {
  [[ -d "$work/infra" ]] && return
  local jar
  jar="$(ls "$cache"/zipkin/zipkin-server-*-slim.jar 2>/dev/null | sort -V | tail -n 1 || true)"
  [[ -n "$jar" ]] || { echo "no Zipkin jar in $cache/zipkin: run make setup" >&2; exit 1; }
  mkdir -p "$work/infra" && cp deploy/podman/* "$work/infra/" && cp "$jar" "$work/infra/zipkin.jar"
}
tag_of() {  # target -> the image's name
  case "$1" in
    app) echo intraday:latest ;; dapr) echo "intraday-dapr:$dapr_version" ;;
    forecaster | telemetry-chdb) echo "intraday-$1:latest" ;; *) echo "intraday-local/$1:latest" ;;
  esac
}
for t in "${targets[@]}"; do
  case "$t" in
    app | forecaster | telemetry-chdb | dapr) build "$t" "$(tag_of "$t")" Dockerfile . ;;
    *) infra_context; build "$t" "$(tag_of "$t")" "$work/infra/Containerfile" "$work/infra" ;;
  esac
done

# ---- figures ------------------------------------------------------------------
{
  printf '{"built_at": "%s", "engine": "%s", "images": {' "$(date -u +%FT%TZ)" "$(podman --version)"
  sep=""
  for t in "${targets[@]}"; do
    tag="$(tag_of "$t")"
    size=$(podman image inspect --format '{{.Size}}' "$tag")
    printf '%s"%s": {"bytes": %s, "build_seconds": %s}' "$sep" "$tag" "$size" "${seconds[$tag]:-null}"
    sep=", "
  done
  printf '}}\n'
} >"$report"
# The images these builds replaced go (not the build cache), children first;
# one a container still runs stays.
for ((i = ${#replaced[@]} - 1; i >= 0; i--)); do podman rmi "${replaced[i]}" >/dev/null 2>&1 || true; done
podman image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E 'intraday' | sort | sed 's/^/[images]   /'
say "figures in $report"
