"""How a fleet forecast's device forecasts go into the audit store, by measurement.

  python bench/audit_write.py [--devices 10000] [--horizon 96]

Needs the local PostgreSQL (`make up`). Works in a scratch schema
(`bench_audit`, dropped afterwards) and writes, for the same generated
forecasts (request row + every number), three ways:

- `arrays_copy`: one row per device forecast with its intervals as arrays,
  binary COPY into a staging table, then INSERT .. ON CONFLICT DO NOTHING (what
  `intraday.audit.db.record_forecasts` does);
- `rows_copy`: one row per interval (the original forecast_results layout),
  binary COPY into staging the same way;
- `rows_executemany`: one row per interval by executemany, as the single
  path wrote before (on a tenth of the devices, it is slow).

Writes bench/results/audit_write.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import machine  # noqa: E402

from intraday.audit import db  # noqa: E402
from intraday.config import get_settings  # noqa: E402
from intraday.forecasting.types import Forecast  # noqa: E402
from intraday.timeutil import QUARTER_HOUR  # noqa: E402

SCHEMA = "bench_audit"


def forecasts(n: int, horizon: int, start: datetime) -> list[db.ForecastRecord]:
    rng = np.random.default_rng(7)
    now = datetime.now(UTC)
    out = []
    for d in range(n):
        mean = rng.gamma(2.0, 0.6, horizon)
        p10, p50, p90 = mean * 0.3, mean * 0.8, mean * 2.0
        f = Forecast(f"hp-{d:05d}", start, "bench", p10, p50, p90, mean,
                     start - timedelta(days=8), start, 28.0, ())
        out.append(db.ForecastRecord(f"fc-hp-{d:05d}-{start:%Y%m%dT%H%MZ}-{horizon}-bench", f, 12,
                                     "bench", now, None, "fl-bench"))
    return out


def rows_copy(conn: psycopg.Connection, records: list[db.ForecastRecord]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE stage (LIKE forecast_results) ON COMMIT DROP")
        with cur.copy("COPY stage (request_id, interval_start, interval_end, p10, p50, p90, mean)"
                      " FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(("text", "timestamptz", "timestamptz", "float8", "float8", "float8", "float8"))
            for r in records:
                f = r.forecast
                for i in range(f.horizon_intervals):
                    s = f.forecast_start + i * QUARTER_HOUR
                    copy.write_row((r.request_id, s, s + QUARTER_HOUR, float(f.p10[i]), float(f.p50[i]),
                                    float(f.p90[i]), float(f.mean[i])))
        _requests(cur, records)
        cur.execute("INSERT INTO forecast_results SELECT * FROM stage ON CONFLICT DO NOTHING")


def rows_executemany(conn: psycopg.Connection, records: list[db.ForecastRecord]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        _requests(cur, records)
        for r in records:
            f = r.forecast
            cur.executemany(
                "INSERT INTO forecast_results (request_id, interval_start, interval_end, p10, p50, p90,"
                " mean) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [(r.request_id, f.forecast_start + i * QUARTER_HOUR,
                  f.forecast_start + (i + 1) * QUARTER_HOUR, f.p10[i], f.p50[i], f.p90[i], f.mean[i])
                 for i in range(f.horizon_intervals)])


def _requests(cur: psycopg.Cursor, records: list[db.ForecastRecord]) -> None:
    with cur.copy("COPY forecast_requests (request_id, device_id, forecast_start, horizon_intervals,"
                  " model_version, data_window_start, data_window_end, requested_by, requested_at)"
                  " FROM STDIN") as copy:
        for r in records:
            f = r.forecast
            copy.write_row((r.request_id, f.device_id, f.forecast_start, f.horizon_intervals,
                            f.model_version, f.data_window_start, f.data_window_end, r.requested_by,
                            r.requested_at))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--horizon", type=int, default=96)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "audit_write.json"))
    args = ap.parse_args()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    records = forecasts(args.devices, args.horizon, start)
    results: dict = {"machine": machine(), "devices": args.devices, "horizon": args.horizon, "methods": {}}
    ways = {"arrays_copy": (lambda c, r: db.record_forecasts(c, r), records),
            "rows_copy": (rows_copy, records),
            "rows_executemany": (rows_executemany, records[: max(args.devices // 10, 1)])}
    with psycopg.connect(get_settings().pg_dsn, autocommit=True) as conn:
        for name, (write, batch) in ways.items():
            conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            conn.execute(f"CREATE SCHEMA {SCHEMA}")
            conn.execute(f"SET search_path TO {SCHEMA}")
            db.migrate(conn)
            t0 = time.perf_counter()
            write(conn, batch)
            seconds = time.perf_counter() - t0
            size = conn.execute("SELECT pg_total_relation_size('forecast_requests') + "
                                "pg_total_relation_size('forecast_results') + "
                                "pg_total_relation_size('forecast_series')").fetchone()[0]
            results["methods"][name] = {
                "devices": len(batch), "seconds": round(seconds, 3),
                "devices_per_s": round(len(batch) / seconds), "bytes_per_device": round(size / len(batch)),
            }
            print(f"{name:18s} {len(batch):6d} devices {seconds:7.2f} s {len(batch) / seconds:9.0f} "
                  f"devices/s {size / len(batch) / 1024:6.1f} KiB/device", flush=True)
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
