"""The composed system's figures (`make bench-compose`): the images built
with podman (cold with --cold: every layer rebuilt, base images kept), their
sizes, the time from `up` to every service healthy, and the first
forecasts through the gateway: a fleet imported, the first device forecast
(a cold forecaster), then warm ones; then down. Figures in
bench/results/compose.json.

    .venv/bin/python bench/compose.py [--cold] [--forecasts 30]

Needs the ports of the compose file free (`make down`); uses
tests/compose/harness.py, as tests/compose does."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import machine, summary  # noqa: E402

from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, isoformat_z  # noqa: E402
from tests.compose import harness  # noqa: E402

DEVICES = 8


def log(msg: str) -> None:
    print(f"[compose {datetime.now():%H:%M:%S}] {msg}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cold", action="store_true", help="rebuild every layer (podman build --no-cache)")
    ap.add_argument("--no-build", action="store_true",
                    help="use the images as they are; keep the build figures of the last run's file")
    ap.add_argument("--forecasts", type=int, default=30, help="forecasts after the first, each a new one")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compose.json")
    args = ap.parse_args()

    if args.no_build:
        build = json.loads(args.out.read_text())["build"] if args.out.exists() else None
    else:
        log("building the images (scripts/images.sh)" + (" from scratch" if args.cold else ""))
        t0 = time.monotonic()
        subprocess.run(["bash", str(ROOT / "scripts" / "images.sh"), *(["--no-cache"] if args.cold else [])],
                       cwd=ROOT, check=True)
        build = {"cold": args.cold, "seconds": round(time.monotonic() - t0, 1),
                 "images": json.loads((ROOT / ".data" / "images.json").read_text())["images"],
                 "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}

    harness.down()
    log("up")
    t0 = time.monotonic()
    harness.compose("up", "-d", timeout=900)
    up_s = time.monotonic() - t0
    healthy = harness.wait_healthy(timeout=600, progress=log)
    all_healthy_s = time.monotonic() - t0
    log(f"all healthy after {all_healthy_s:.0f} s")
    try:
        key = harness.make_key("bench-compose")
        env = {**harness.ENV, "INTRADAY_GATEWAY_URL": harness.GATEWAY, "INTRADAY_API_KEY": key}
        with tempfile.TemporaryDirectory() as tmp:
            cli = str(ROOT / ".venv" / "bin" / "intraday")
            subprocess.run([cli, "fleet", "generate", "--devices", str(DEVICES), "--days", "28", "--out",
                            f"{tmp}/fleet.parquet"], cwd=ROOT, check=True, capture_output=True)
            t0 = time.monotonic()
            r = subprocess.run([cli, "import", "--devices", f"{tmp}/fleet.devices.parquet", "--readings",
                                f"{tmp}/fleet.parquet", "--weather", f"{tmp}/fleet.weather.parquet"],
                               cwd=ROOT, env=env, capture_output=True, text=True)
            assert r.returncode in (0, 3), r.stderr
            import_s = time.monotonic() - t0
        latencies = []
        with httpx.Client(base_url=harness.GATEWAY, headers={"authorization": f"Bearer {key}"},
                          timeout=120) as gw:
            # Each a forecast never made before (a repeat answers from the audit store).
            start = floor_quarter_hour(datetime.now(UTC)) - QUARTER_HOUR * (args.forecasts + 8)
            for i in range(args.forecasts + 1):
                t0 = time.monotonic()
                r = gw.post("/forecast/intraday", params={"wait": "true"},
                            json={"device_id": f"hp-{i % DEVICES + 1:04d}",
                                  "forecast_start": isoformat_z(start + QUARTER_HOUR * i)})
                assert r.status_code == 200 and r.json().get("created") is not False, r.text
                latencies.append(time.monotonic() - t0)
        log(f"first forecast {latencies[0] * 1000:.0f} ms; then p50 "
            f"{statistics.median(latencies[1:]) * 1000:.0f} ms")
    finally:
        t0 = time.monotonic()
        harness.down()
        down_s = time.monotonic() - t0
    result = {
        "machine": machine(), "engine": harness.podman("--version").stdout.strip(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build": build,
        "up": {"compose_up_s": round(up_s, 1), "all_healthy_s": round(all_healthy_s, 1),
               "healthy_at_s": {k: round(v, 1) for k, v in sorted(healthy.items(), key=lambda kv: kv[1])}},
        "import_s": round(import_s, 1),
        "first_forecast_ms": round(latencies[0] * 1000, 1),
        "warm_forecasts": summary(latencies[1:], sum(latencies[1:])),
        "down_s": round(down_s, 1), "left_after_down": harness.leftovers(),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"figures in {args.out}")


if __name__ == "__main__":
    main()
