"""Retraining while the system serves, at fleet size: the training workflow
on the 10,000-device stack of bench/load.py, with single forecasts arriving
at a steady rate throughout.

    (a) lone forecasts before the training: the undisturbed latency
    (b) the training (POST /models/train): its duration, and the forecasts
        served meanwhile (latency, errors, the model versions they name)
    (c) its decision: champion and challenger on the held-out days

Starts the stack of its own in .data/load when no gateway answers; writes
bench/results/training.json and prints a summary.

    .venv/bin/python bench/training.py [--train-rows 300000] [--rate-per-min 120]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import load  # noqa: E402
from common import gateway_headers, machine, summary  # noqa: E402

from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, isoformat_z  # noqa: E402

GATEWAY = load.GATEWAY


def log(msg: str) -> None:
    print(f"[training {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Requests(threading.Thread):
    """Single-device forecasts at `rate` a second (each a new one: a random
    device and start), until stopped; each answer's latency, error or model."""

    def __init__(self, headers: dict, fleet: list[str], rate: float) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=GATEWAY, headers=headers, timeout=90)
        self.fleet, self.rate = fleet, rate
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.versions: dict[str, int] = {}
        self._halt = threading.Event()
        self._rng = random.SystemRandom()

    def run(self) -> None:
        self.began = time.perf_counter()
        while not self._halt.is_set():
            began = time.perf_counter()
            start = floor_quarter_hour(datetime.now(UTC)) + QUARTER_HOUR * self._rng.randrange(4, 4 * 48)
            try:
                r = self.client.post("/forecast/intraday", params={"wait": "true"},
                                     json={"device_id": self._rng.choice(self.fleet),
                                           "forecast_start": isoformat_z(start)})
                if r.status_code == 200:
                    self.latencies.append(time.perf_counter() - began)
                    version = r.json()["result"]["model_version"]
                    self.versions[version] = self.versions.get(version, 0) + 1
                else:
                    self.errors.append(f"{r.status_code}: {r.text[:200]}")
            except httpx.HTTPError as e:
                self.errors.append(repr(e))
            self._halt.wait(max(0.0, 1 / self.rate - (time.perf_counter() - began)))

    def stop(self) -> dict:
        self._halt.set()
        self.join(timeout=120)
        wall = time.perf_counter() - self.began  # paced: throughput is the rate it kept
        return {**(summary(self.latencies, wall) if self.latencies else {"requests": 0}),
                "errors": len(self.errors), "first_errors": self.errors[:3], "model_versions": self.versions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000, help="fleet size of a stack this tool starts")
    ap.add_argument("--train-rows", type=int, default=300_000)
    ap.add_argument("--trees", type=int, default=60)
    ap.add_argument("--rate-per-min", type=float, default=120, help="single forecasts a minute throughout")
    ap.add_argument("--before-seconds", type=float, default=60)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training.json")
    args = ap.parse_args()
    env = None if load.gateway_up() else load.prepare_and_start(args.devices)
    data_dir = Path(env["INTRADAY_DATA_DIR"]) if env else None
    headers = gateway_headers(data_dir)
    load.HEADERS.update(headers)
    results: dict = {"machine": machine(), "measured_at": isoformat_z(datetime.now(UTC)),
                     "train_rows": args.train_rows, "trees": args.trees, "rate_per_min": args.rate_per_min}
    try:
        gw = httpx.Client(base_url=GATEWAY, headers=headers, timeout=120)
        fleet = [d["device_id"] for d in gw.get("/devices").json()]
        results["devices"] = len(fleet)
        load.settle()
        gw.post("/warm", json={"top": 0}, timeout=300).raise_for_status()
        log(f"(a) {args.rate_per_min:.0f} forecasts a minute for {args.before_seconds:.0f} s, "
            "undisturbed ...")
        before = Requests(headers, fleet, args.rate_per_min / 60)
        before.start()
        time.sleep(args.before_seconds)
        results["before"] = before.stop()
        log(f"    p50 {results['before'].get('p50_ms')} ms, p99 {results['before'].get('p99_ms')} ms")

        log(f"(b) the training workflow ({args.train_rows:,} rows) with the forecasts going on ...")
        during = Requests(headers, fleet, args.rate_per_min / 60)
        during.start()
        t0 = time.perf_counter()
        r = gw.post("/models/train", json={"train_rows": args.train_rows, "trees": args.trees})
        r.raise_for_status()
        tid = r.json()["training_id"]
        view = r.json()
        while view["status"] not in ("COMPLETED", "FAILED", "TERMINATED", "NOT_FOUND"):
            time.sleep(5)
            view = gw.get(f"/models/trainings/{tid}").json()
            log(f"    {view['status'].lower()} after {time.perf_counter() - t0:.0f} s")
        results["training_seconds"] = round(time.perf_counter() - t0, 1)
        time.sleep(10)  # past the forecasters' refresh of the promoted version
        results["during"] = during.stop()
        results["status"] = view["status"]
        if view["status"] == "COMPLETED":
            d = view["result"]
            keep = ("training_id", "candidate_version", "champion_version", "promoted", "reason", "devices",
                    "data_start", "data_end")
            results["decision"] = {k: d[k] for k in keep}
            results["decision"]["portfolio"] = {role: d["evaluation"][role]["portfolio"]
                                                for role in ("candidate", "champion")}
        else:
            results["error"] = view.get("detail")
    finally:
        if env is not None:
            log("stopping the stack ...")
            subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, check=False,
                           capture_output=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    b, d = results["before"], results["during"]
    print(f"retraining on {results['devices']:,} devices ({results['machine']['cpu']}, "
          f"{results['machine']['cores']} cores): {results['status']} in {results['training_seconds']} s")
    print(f"  forecasts before: p50 {b.get('p50_ms')} ms, p99 {b.get('p99_ms')} ms, {b['errors']} errors; "
          f"during: p50 {d.get('p50_ms')} ms, p99 {d.get('p99_ms')} ms, {d['errors']} errors, "
          f"models {d['model_versions']}")
    if "decision" in results:
        print(f"  {results['decision']['reason']}")
    print(f"  (figures: {args.out})")


if __name__ == "__main__":
    main()
