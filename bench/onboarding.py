"""Onboarding speed: `intraday import` of the Swiss households' real data
(../shared/data/swiss-households: 537 homes, 2.5 M quarter-hour readings,
hourly weather), run as a user runs it, into a fresh data directory:

(a) with the stack down: the command writes the embedded store itself;
(b) into a running stack of its own (no demo fleet; .data/bench-onboarding):
    devices and weather through the gateway, readings through the telemetry
    service, as on a live system;

each twice (the second run must store nothing new). Aim: under a minute for
the 537 households on the 2-core box. Writes bench/results/onboarding.json.

    .venv/bin/python bench/onboarding.py [--heat-pumps-only] [--no-stack]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine  # noqa: E402
from scripts.swiss_households import SOURCE, write_files  # noqa: E402

AIM_S = 60.0


def run_import(files: dict[str, Path], env: dict[str, str]) -> dict:
    started = time.monotonic()
    r = subprocess.run([str(ROOT / ".venv/bin/intraday"), "import", "--devices", str(files["devices"]),
                        "--readings", str(files["readings"]), "--weather", str(files["weather"]),
                        "--shift-to-now", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=900)
    wall = time.monotonic() - started
    if r.returncode not in (0, 3):
        sys.exit(f"intraday import failed ({r.returncode}):\n{r.stderr[-2000:]}")
    summary = json.loads(r.stdout)
    readings = summary["readings"]
    fresh = readings["status"] != "duplicate_batch"
    return {"seconds": round(wall, 2), "exit": r.returncode,
            "devices_added": len(summary["devices"]["added"]),
            "devices_unchanged": summary["devices"]["unchanged"], "readings_rows": readings["rows"],
            "readings_inserted": readings["inserted"], "readings_status": readings["status"],
            "quarantined": readings["reasons"], "weather": summary["weather"],
            "held_back": (summary.get("shift") or {}).get("readings_held_back"),
            "rows_per_second": round(readings["rows"] / wall) if fresh else None}


def stack(action: str, env: dict[str, str]) -> None:
    r = subprocess.run(["bash", "scripts/stack.sh", action], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0:
        sys.exit(f"stack.sh {action} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heat-pumps-only", action="store_true", help="the 90 heat-pump homes, not all 537")
    parser.add_argument("--no-stack", action="store_true", help="only (a): the stack down")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "onboarding.json")
    args = parser.parse_args()
    if not (SOURCE / "load_15min.parquet").exists():
        sys.exit(f"bench/onboarding.py: the Swiss households' data is not at {SOURCE}")
    results: dict = {"machine": machine(), "data": "swiss-households", "aim_seconds": AIM_S, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp) / "files", all_households=not args.heat_pumps_only)
        results["households"] = sum(1 for _ in open(files["devices"])) - 1
        data = Path(tmp) / "data"
        env = {**os.environ, "INTRADAY_DATA_DIR": str(data), "INTRADAY_GATEWAY_URL": "http://127.0.0.1:9",
               "INTRADAY_PG_DSN": "postgresql://nobody@127.0.0.1:9/none"}  # no audit store: said, not fatal
        print(f"(a) the stack down: {results['households']} households into {data}", flush=True)
        results["runs"]["store"] = [run_import(files, env), run_import(files, env)]
        if not args.no_stack:
            data = ROOT / ".data" / "bench-onboarding"
            shutil.rmtree(data, ignore_errors=True)
            env = {**os.environ, "INTRADAY_DATA_DIR": str(data), "INTRADAY_DEMO_FLEET": "off",
                   "INTRADAY_FIRST_MODEL": "off"}
            env.pop("INTRADAY_API_KEY", None)
            print(f"(b) a running stack of its own in {data}", flush=True)
            stack("up", env)
            try:
                results["runs"]["stack"] = [run_import(files, env), run_import(files, env)]
            finally:
                stack("down", env)
    for name, (first, second) in results["runs"].items():
        print(f"{name:>6}: {first['readings_inserted']:,} readings of {first['devices_added']} devices in "
              f"{first['seconds']:.1f} s ({first['rows_per_second']:,} rows/s; aim {AIM_S:.0f} s), again in "
              f"{second['seconds']:.1f} s storing nothing ({second['readings_status']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
