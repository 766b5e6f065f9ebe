#!/usr/bin/env bash
# `make up-swiss`: the stack on real heat pumps instead of the demo fleet.
# The 90 heat-pump homes of ../shared/data/swiss-households (real smart-meter
# load, 15 min, seven winter weeks of 2018) are imported into a data
# directory of their own (.data/swiss) as a replay, moved by whole weeks to
# end now (`intraday import --shift-to-now`); then a model is trained and
# promoted on them by the stack's training workflow, and a first fleet
# forecast is made. `make down-swiss` stops it; the data stays.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export INTRADAY_DATA_DIR="${INTRADAY_DATA_DIR:-$root/.data/swiss}"
export INTRADAY_DEMO_FLEET=off INTRADAY_FIRST_MODEL=off
say() { printf '[swiss] %s\n' "$*"; }
source_dir="${INTRADAY_SWISS_DATA:-$root/../shared/data/swiss-households}"
[[ -f "$source_dir/load_15min.parquet" ]] || { say "no data set at $source_dir (read its README)"; exit 1; }

bash scripts/stack.sh up
files="$INTRADAY_DATA_DIR/files"
if [[ ! -s "$files/readings.parquet" ]]; then
  say "the three files from $source_dir into $files"
  .venv/bin/python scripts/swiss_households.py "$files" --source "$source_dir"
fi
say "importing (replayed to end now) ..."
rc=0
.venv/bin/intraday import --devices "$files/devices.csv" --readings "$files/readings.parquet" \
  --weather "$files/weather.csv" --shift-to-now || rc=$?
# 3: stored, with rows quarantined (the real meters have a few negative readings).
[[ $rc -eq 0 || $rc -eq 3 ]] || { say "import failed (exit $rc)"; exit "$rc"; }
if .venv/bin/intraday models list --json | .venv/bin/python -c \
    'import json, sys; sys.exit(0 if json.load(sys.stdin)["promoted"] else 1)'; then
  say "a model is served already; \`intraday train\` trains a challenger"
else
  say "training the first model on them (the stack's training workflow, the last 7 days held out) ..."
  .venv/bin/intraday train --holdout-days 7 || say "no model promoted: forecasts come from the seasonal fallback"
fi
.venv/bin/intraday forecast --fleet | tail -n 4
say "up: the Swiss heat pumps on http://127.0.0.1:8000/ui (key: $INTRADAY_DATA_DIR/api-key)"
say "for the command line: export INTRADAY_DATA_DIR=$INTRADAY_DATA_DIR"
