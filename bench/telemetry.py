"""Telemetry store benchmark: ingest and query at fleet scale on chDB.

  python bench/telemetry.py [--devices 10000] [--days 30] [--queries 500]

1. Generates the fleet (realistic faults) to a Parquet file with
   `intraday fleet generate --out`, cached under .data/bench/.
2. Ingests it into a fresh store through the validated, idempotent path
   (`intraday.telemetry.ingest_files.ingest_file`): rows/s.
3. Ingests the first 2 M rows again under another batch id (every row found
   already stored): the deduplication path's rows/s.
4. Warm 30-day window of one device (random devices): p50/p99, and the
   whole fleet's 30-day window as one matrix: seconds. Measured twice: right
   after the load, while the engine still merges the parts it wrote, and
   once the background merges have settled (no OPTIMIZE).
5. Peak resident memory of this process (ingest + queries).
6. The same insert and query through clickhouse-connect's chDB interface,
   on a 500-device subset, in separate processes (one chDB engine per
   process).
Writes bench/results/telemetry.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import machine, summary  # noqa: E402

from intraday.telemetry.ingest_files import ingest_file  # noqa: E402
from intraday.telemetry.store import DEVICE_COLUMNS, ChdbBackend, TelemetryStore  # noqa: E402

END = datetime(2026, 2, 1, tzinfo=UTC)  # a fixed end keeps the cached file valid


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fleet_file(devices: int, days: int) -> Path:
    out = ROOT / ".data" / "bench" / f"fleet-{devices}x{days}-seed7.parquet"
    if out.exists():
        log(f"using cached {out.relative_to(ROOT)}")
        return out
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "intraday.cli", "fleet", "generate", "--devices", str(devices),
                    "--days", str(days), "--seed", "7", "--end", END.isoformat(), "--out", str(out)],
                   check=True, cwd=ROOT)
    log(f"generated in {time.monotonic() - started:.1f} s")
    return out


WINDOW_SQL = ("SELECT sum(power_sum) / sum(samples) FROM {db}.power_consumption_15min"
              " WHERE device_id = {d:String} GROUP BY interval_start")


def interface_run(path: Path, devices: int, mode: str) -> dict:
    """Insert the first `devices` devices' rows and query one device's
    15-minute series 200 times, through chDB directly (`native`) or through
    clickhouse-connect's chDB interface. One chDB engine per process: the
    caller runs this in a fresh process per mode."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from intraday.telemetry.store import FAST_INSERT, READING_COLUMNS

    t = pq.read_table(path, columns=READING_COLUMNS)
    ids = sorted(pc.unique(t.column("device_id")).to_pylist())[:devices]
    t = t.filter(pc.is_in(t.column("device_id"), value_set=pa.array(ids)))
    where = Path(tempfile.mkdtemp(dir=ROOT / ".data"))
    try:
        store = TelemetryStore(ChdbBackend(where))
        store.migrate()
        if mode == "clickhouse-connect":
            store.close()
            import clickhouse_connect

            client = clickhouse_connect.get_client(interface="chdb", path=str(where))
            a = time.perf_counter()
            client.insert_arrow("power_consumption", t, database="intraday", settings=FAST_INSERT)
            seconds = time.perf_counter() - a

            def query(d: str) -> None:
                client.query_arrow(WINDOW_SQL.replace("{db}", "intraday"), parameters={"d": d})
        else:
            a = time.perf_counter()
            store.insert_readings(t)
            seconds = time.perf_counter() - a

            def query(d: str) -> None:
                store.query(WINDOW_SQL, {"d": d})
        lat = []
        for k in range(220):
            a = time.perf_counter()
            query(ids[k % len(ids)])
            lat.append(time.perf_counter() - a)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    ms = np.array(lat[20:]) * 1000
    return {"rows": t.num_rows, "insert_rows_per_s": round(t.num_rows / seconds),
            "query_p50_ms": round(float(np.percentile(ms, 50)), 2),
            "query_p99_ms": round(float(np.percentile(ms, 99)), 2)}


def windows(store: TelemetryStore, ids: list[str], days: int, queries: int) -> dict:
    """Warm 30-day windows: `queries` random devices one at a time, then
    the whole fleet three times."""
    end = END
    start = end - timedelta(days=days)
    rng = np.random.default_rng(1)
    for d in rng.choice(ids, 20):
        store.window(d, start, end)
    lat = []
    t0 = time.perf_counter()
    for d in rng.choice(ids, queries):
        a = time.perf_counter()
        w = store.window(d, start, end)
        lat.append(time.perf_counter() - a)
    out = {"parts": parts(store), "one_device_window": summary(lat, time.perf_counter() - t0)
           | {"intervals": len(w.values)}}
    times = []
    for _ in range(3):
        a = time.perf_counter()
        fw = store.fleet_window(start, end)
        times.append(time.perf_counter() - a)
    out["fleet_window"] = {"seconds_min": round(min(times), 3), "seconds_median": round(
        float(np.median(times)), 3), "shape": list(fw.values.shape),
        "missing_share": round(float(np.isnan(fw.values).mean()), 4)}
    return out


def parts(store: TelemetryStore) -> dict:
    t = store.query("SELECT table, count() AS n FROM system.parts WHERE active AND database = '{db}'"
                    " AND table LIKE 'power_consumption%' GROUP BY table")
    return dict(zip(t.column("table").to_pylist(), t.column("n").to_pylist(), strict=True))


def settle(store: TelemetryStore, quiet: float = 10.0, limit: float = 600.0) -> dict:
    """Wait until the engine's background merges have stopped (no merge
    running and the part counts unchanged for `quiet` seconds). No OPTIMIZE:
    this is the state a store reaches on its own after a bulk load."""
    started = time.perf_counter()
    last, since = None, time.perf_counter()
    while time.perf_counter() - started < limit:
        running = store.query("SELECT count() FROM system.merges").column(0)[0].as_py()
        now = parts(store)
        if running or now != last:
            last, since = now, time.perf_counter()
        elif time.perf_counter() - since >= quiet:
            break
        time.sleep(1.0)
    return {"seconds": round(since - started, 1), "parts": last}


def connect_compare(path: Path, devices: int, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--interface", mode, "--file", str(path), "--devices", str(devices)],
        capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--interface", choices=["native", "clickhouse-connect"], help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.interface:
        print(json.dumps(interface_run(Path(args.file), args.devices, args.interface)))
        return

    path = fleet_file(args.devices, args.days)
    rows = pq.ParquetFile(path).metadata.num_rows
    devices = pq.read_table(path.with_name(path.stem + ".devices.parquet")).to_pandas()
    workdir = Path(tempfile.mkdtemp(prefix="bench-telemetry-", dir=ROOT / ".data"))
    results: dict = {"machine": machine(), "devices": args.devices, "days": args.days, "rows": rows,
                     "backend": "chdb"}
    try:
        store = TelemetryStore(ChdbBackend(workdir / "chdb"))
        store.migrate()
        store.upsert_devices(devices[DEVICE_COLUMNS])

        log(f"ingesting {rows:,} rows ...")
        started = time.perf_counter()
        report = ingest_file(store, path, progress=lambda r: log(
            f"  {r.rows:>12,} rows  {r.rows / (time.perf_counter() - started):>12,.0f} rows/s"))
        wall = time.perf_counter() - started
        results["ingest"] = {"seconds": round(wall, 2), "rows_per_s": round(rows / wall),
                             "inserted": report.inserted, "duplicates_dropped": report.duplicates,
                             "quarantined": report.quarantined, "status": report.status}

        log("re-ingesting the first 2 M rows under another batch id ...")
        first = pq.ParquetFile(path).read_row_groups([0, 1]).to_pandas().head(2_000_000)
        subset = workdir / "subset.parquet"
        first.to_parquet(subset)
        started = time.perf_counter()
        again = ingest_file(store, subset, batch_id="bench-reingest")
        wall = time.perf_counter() - started
        results["reingest_dedup"] = {"rows": again.rows, "seconds": round(wall, 2),
                                     "rows_per_s": round(again.rows / wall),
                                     "already_stored": again.already_stored, "inserted": again.inserted}

        ids = devices.device_id.tolist()
        log("windows right after the load (parts not merged, merges running) ...")
        results["after_load"] = windows(store, ids, args.days, args.queries)
        log("waiting for background merges to settle ...")
        results["merges"] = settle(store)
        log(f"  settled in {results['merges']['seconds']} s")
        log("windows on the settled store ...")
        results["settled"] = windows(store, ids, args.days, args.queries)
        store.close()
        results["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

        log("chDB native vs clickhouse-connect's chDB interface (500 devices) ...")
        results["chdb_interfaces"] = {m: connect_compare(path, 500, m)
                                      for m in ("native", "clickhouse-connect")}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    out = ROOT / "bench" / "results" / "telemetry.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    i = results["ingest"]
    print(f"telemetry, {args.devices:,} devices x {args.days} days = {rows:,} rows "
          f"({results['machine']['cores']} cores)")
    print(f"  ingest             {i['rows_per_s']:>12,} rows/s   ({i['seconds']} s)")
    print(f"  re-ingest (dedup)  {results['reingest_dedup']['rows_per_s']:>12,} rows/s")
    print(f"  merges settle in   {results['merges']['seconds']} s")
    for state in ("after_load", "settled"):
        o, f = results[state]["one_device_window"], results[state]["fleet_window"]
        print(f"  {state:<10} one-device window p50 {o['p50_ms']} ms  p99 {o['p99_ms']} ms;"
              f"  fleet window {f['seconds_median']} s  {f['shape']}")
    print(f"  peak memory        {results['peak_rss_mib']} MiB")
    for m, r in results["chdb_interfaces"].items():
        print(f"  {m:<19}insert {r['insert_rows_per_s']:>10,} rows/s  query p50 {r['query_p50_ms']} ms")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
