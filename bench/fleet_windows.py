"""A fleet forecast's windows: one telemetry query for the whole fleet, or
one per shard (what each shard activity makes today)?

Times `TelemetryStore.recent_windows` (the query behind `POST /windows`,
cut to the 8 days the features read) on the store of bench/load.py's stack
(.data/load: 10,000 generated heat pumps; stop that stack first, chDB
holds its store for one process), for the whole fleet at once and shard by
shard, wall and CPU seconds, into bench/results/fleet-windows.json.

    .venv/bin/python bench/fleet_windows.py [--shard 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import machine  # noqa: E402

from intraday.config import get_settings  # noqa: E402
from intraday.forecasting.engine import READ_DAYS  # noqa: E402
from intraday.telemetry.store import TelemetryStore  # noqa: E402
from intraday.timeutil import floor_quarter_hour, isoformat_z  # noqa: E402


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shard", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fleet-windows.json")
    args = ap.parse_args()
    os.environ.setdefault("INTRADAY_DATA_DIR", str(ROOT / ".data" / "load"))
    store = TelemetryStore.from_settings(get_settings())
    ids = sorted(store.known_devices())
    end = floor_quarter_hour(datetime.now(UTC))
    start, cut = end - timedelta(days=get_settings().history_days), end - timedelta(days=READ_DAYS)

    def whole() -> None:
        store.recent_windows(start, cut, end, ids)

    def sharded() -> None:
        for i in range(0, len(ids), args.shard):
            store.recent_windows(start, cut, end, ids[i:i + args.shard])

    def first_shard() -> None:
        store.recent_windows(start, cut, end, ids[:args.shard])

    runs: dict[str, list[tuple[float, float]]] = {"one_query": [], "per_shard": [], "first_shard": []}
    for k in range(args.repeats):
        for name, fn in (("one_query", whole), ("per_shard", sharded), ("first_shard", first_shard)):
            runs[name].append(timed(fn))
        print(f"[fleet-windows] {k + 1}/{args.repeats}", flush=True)
    figures = {name: {"wall_s_median": round(statistics.median(w for w, _ in r), 3),
                      "cpu_s_median": round(statistics.median(c for _, c in r), 3),
                      "wall_s": [round(w, 3) for w, _ in r]} for name, r in runs.items()}
    doc = {"benchmark": "fleet windows", "measured_at": isoformat_z(datetime.now(UTC)), "machine": machine(),
           "devices": len(ids), "shard": args.shard,
           "window": {"start": isoformat_z(start), "cut": isoformat_z(cut), "end": isoformat_z(end)},
           "what": "TelemetryStore.recent_windows for the whole fleet in one query, shard by shard, and the "
                   "first shard alone (how long the first shard would wait for a fleet-wide read)",
           **figures}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    for name, f in figures.items():
        print(f"  {name:12s} wall {f['wall_s_median']:.2f} s, CPU {f['cpu_s_median']:.2f} s "
              f"(median of {args.repeats})")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
