"""End-to-end forecast latency through the gateway, with warm DeviceActors.

Every measured request is a *new* forecast (a distinct forecast_start), so
it runs the whole workflow: validate -> fetch -> forecast (actor) -> publish
-> audit. A separate series measures the repeat path (same request again:
the existing forecast is returned, nothing recomputed).

The cost of observability: when no stack runs, the benchmark starts its
own, alternately with tracing and metrics on (the default: every sidecar
and app traces at sampling 1, sidecars and apps expose metrics) and off
(INTRADAY_OBSERVABILITY=off: no trace sampled, no span exported, no
sidecar metrics), --rounds times each, and compares the sequential
single-request latency of the two. Against a running stack it measures
that stack as it is, without the comparison. Writes
bench/results/e2e_latency.json.

    .venv/bin/python bench/e2e_latency.py [--sequential 200] [--concurrent 400] [--workers 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import gateway_headers, machine, summary  # noqa: E402

from intraday.timeutil import floor_quarter_hour, isoformat_z  # noqa: E402

GATEWAY = os.environ.get("INTRADAY_GATEWAY_URL", "http://127.0.0.1:8000")


def gateway_up() -> bool:
    try:
        return httpx.get(f"{GATEWAY}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Workload:
    """Distinct (device, forecast_start) pairs: quarter-hours of the coming days."""

    _after: datetime | None = None  # the last start any workload of this run asked for

    def __init__(self, devices: list[str]):
        self.devices = devices
        # A random offset within the accepted week, so a second run in the
        # same quarter-hour does not ask for the first run's forecasts again
        # (those would be repeats; `timed_forecast` checks it); the workloads
        # of one run (its rounds) follow each other.
        offset = timedelta(minutes=15) * random.SystemRandom().randrange(0, 3 * 96)
        self.base = floor_quarter_hour(datetime.now(UTC)) + timedelta(minutes=15) + offset
        if Workload._after is not None:
            self.base = max(self.base, Workload._after)
        self.n = 0

    def next_body(self) -> dict:
        i = self.n
        self.n += 1
        device = self.devices[i % len(self.devices)]
        start = self.base + timedelta(minutes=15) * (1 + i // len(self.devices))
        Workload._after = max(start, Workload._after or start)
        return {"device_id": device, "forecast_start": isoformat_z(start), "requested_by": "bench"}


def timed_forecast(client: httpx.Client, body: dict, new: bool) -> float:
    t0 = time.perf_counter()
    r = client.post("/forecast/intraday", params={"wait": "true"}, json=body)
    elapsed = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"{body} -> {r.status_code} {r.text[:300]}")
    if new and not r.json()["created"]:
        raise RuntimeError(f"{body} existed already: this series must measure new forecasts")
    return elapsed


def run_series(name: str, bodies: list[dict], workers: int, new: bool = True,
               raw: list[float] | None = None) -> dict:
    print(f"{name}: {len(bodies)} forecasts, {workers} client(s) ...", flush=True)
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    with httpx.Client(base_url=GATEWAY, timeout=90, limits=limits, headers=gateway_headers()) as client:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            latencies = list(pool.map(lambda b: timed_forecast(client, b, new), bodies))
        wall = time.perf_counter() - t0
    if raw is not None:
        raw += latencies
    s = summary(latencies, wall)
    print(f"  p50 {s['p50_ms']} ms  p95 {s['p95_ms']} ms  p99 {s['p99_ms']} ms  "
          f"{s['throughput_rps']} forecasts/s", flush=True)
    return s


def stack(command: str, observability: str) -> None:
    # On the seasonal baseline, as the recorded figures are.
    env = {**os.environ, "INTRADAY_OBSERVABILITY": observability, "INTRADAY_FIRST_MODEL": "off"}
    subprocess.run(["bash", "scripts/stack.sh", command], cwd=ROOT, check=command == "up", env=env,
                   stdout=subprocess.DEVNULL)


def measure(args, sequential: list[float], full: bool) -> tuple[int, dict]:
    """Warm every device's actor, then the sequential series (its latencies
    added to `sequential`) and, if `full`, the concurrent and repeat ones."""
    devices = [d["device_id"] for d in httpx.get(f"{GATEWAY}/devices", timeout=30,
                                                 headers=gateway_headers()).json()]
    work = Workload(devices)
    run_series("warm-up (actor activation)", [work.next_body() for _ in devices], 4)
    results = {"sequential": run_series("sequential", [work.next_body() for _ in range(args.sequential)], 1,
                                        raw=sequential)}
    if full:
        results["concurrent"] = run_series("concurrent", [work.next_body() for _ in range(args.concurrent)],
                                           args.workers)
        repeat = [work.next_body() for _ in range(20)]
        run_series("repeat: first time", repeat, 1)
        results["repeat_existing"] = run_series("repeat: existing forecast", repeat * 5, 1, new=False)
        results["concurrent"]["workers"] = args.workers
    return len(devices), results


def cost(on: list[float], off: list[float]) -> dict:
    """What tracing and metrics add to the single-request path."""
    a, b = summary(on, sum(on)), summary(off, sum(off))
    return {"on": a, "off": b, "aim_added_pct": 5,
            **{f"added_{k[:-3]}_pct": round(100 * (a[k] / b[k] - 1), 1)
               for k in ("p50_ms", "p99_ms", "mean_ms")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequential", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=400)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2, help="stacks started per mode (on, off)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "e2e_latency.json")
    args = ap.parse_args()

    latencies: dict[str, list[float]] = {"on": [], "off": []}
    if gateway_up():  # a stack someone runs: measured as it is
        print("measuring the running stack (no on/off comparison: it needs a stack of its own)", flush=True)
        devices, results = measure(args, latencies["on"], full=True)
    else:
        rounds = [mode for _ in range(args.rounds) for mode in ("on", "off")]
        results = {}
        for k, mode in enumerate(rounds):
            print(f"-- round {k + 1}/{len(rounds)}: observability {mode}; starting the stack ...", flush=True)
            stack("up", mode)
            try:
                devices, found = measure(args, latencies[mode], full=k == 0)
            finally:
                stack("down", mode)
            results = results or found
        results["observability_cost"] = cost(latencies["on"], latencies["off"])
        c = results["observability_cost"]
        print(f"observability on vs off, {len(latencies['on'])} sequential requests each: "
              f"p50 {c['on']['p50_ms']} vs {c['off']['p50_ms']} ms ({c['added_p50_pct']:+} %), "
              f"p99 {c['on']['p99_ms']} vs {c['off']['p99_ms']} ms ({c['added_p99_pct']:+} %); aim +5 %")

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    report = {
        "benchmark": "e2e_latency",
        "measured_at": isoformat_z(datetime.now(UTC)),
        "commit": commit,
        "machine": machine(),
        "devices": devices,
        "path": "gateway -> forecaster (service invocation) -> workflow: validate, fetch (actor), "
                "forecast (actor), publish (pub/sub), audit (PostgreSQL)",
        "aim": {"p50_ms": 100, "p99_ms": 300},
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
