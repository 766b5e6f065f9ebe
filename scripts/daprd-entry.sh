#!/bin/sh
# The sidecar's entry in the daprd image (Dockerfile): daprd takes Sentry's
# trust anchors from DAPR_TRUST_ANCHORS only, so read them from the file
# Sentry wrote (DAPR_TRUST_ANCHORS_FILE), then run daprd with the arguments.
set -eu
if [ -n "${DAPR_TRUST_ANCHORS_FILE:-}" ]; then
  i=0
  until [ -s "$DAPR_TRUST_ANCHORS_FILE" ]; do
    i=$((i + 1)); [ "$i" -le 120 ] || { echo "no trust anchors in $DAPR_TRUST_ANCHORS_FILE" >&2; exit 1; }
    sleep 0.5
  done
  DAPR_TRUST_ANCHORS="$(cat "$DAPR_TRUST_ANCHORS_FILE")"
  export DAPR_TRUST_ANCHORS
fi
exec /usr/local/bin/daprd "$@"
