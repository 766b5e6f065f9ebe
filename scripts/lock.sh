#!/usr/bin/env bash
# The Python lock files, resolved by uv from pyproject.toml, every package
# pinned with its hashes:
#   requirements.lock      what the services need (pyproject's dependencies
#                          and the `compiled` extra): the images install it
#   requirements-dev.lock  that and the `dev` extra (tests, benchmarks,
#                          docs, type checker): `make setup` installs it;
#                          resolved within requirements.lock, so both agree
#
#   bash scripts/lock.sh           after editing pyproject.toml: the locks
#                                  follow it, every other pin kept (make lock)
#   bash scripts/lock.sh upgrade   every package to its newest allowed release
#                                  (make upgrade)
#   bash scripts/lock.sh upgrade NAME...   those packages only
#   bash scripts/lock.sh check     fails when pyproject.toml and the locks
#                                  disagree; changes nothing (make test)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
uv="${UV:-.venv/bin/uv}"
mode="${1:-sync}"
common=(--quiet --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes
        --no-header --annotation-style line)

uv="$(realpath "$uv")"
compile() {  # compile [uv args...]: both locks, in the working directory
  "$uv" pip compile pyproject.toml --extra compiled "${common[@]}" "$@" -o requirements.lock
  "$uv" pip compile pyproject.toml --all-extras -c requirements.lock "${common[@]}" "$@" \
    -o requirements-dev.lock
}

case "$mode" in
  sync) compile ;;
  upgrade)
    shift
    if (($#)); then compile $(printf -- '--upgrade-package %s ' "$@"); else compile --upgrade; fi ;;
  check)
    # Resolved again from the committed locks as preferences (uv keeps a
    # pin that still satisfies pyproject.toml): any difference means a
    # dependency was added, removed or re-bounded without `make lock`.
    tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
    cp pyproject.toml requirements.lock requirements-dev.lock "$tmp/"
    (cd "$tmp" && compile)
    for f in requirements.lock requirements-dev.lock; do
      if ! diff -u "$f" "$tmp/$f" >"$tmp/diff"; then
        echo "lock: $f does not match pyproject.toml; run 'make lock' and commit both locks:" >&2
        grep -E '^[-+][a-z0-9]' "$tmp/diff" >&2 || true
        exit 1
      fi
    done
    echo "lock: requirements.lock and requirements-dev.lock match pyproject.toml" ;;
  *) echo "usage: scripts/lock.sh [sync|upgrade|check]" >&2; exit 2 ;;
esac
