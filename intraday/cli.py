"""`intraday`: the operator's command line.

  intraday forecast DEVICE_ID [--start ISO] [--horizon-hours H] [--no-wait] [--json]
  intraday prices [--count N] [--interval S] [--price P] [--step S] [--seed N]
  intraday devices
  intraday db migrate
  intraday fleet generate [--devices N] [--days D] [--seed S] [--end ISO] [--faults realistic|none]
                          [--out FILE.parquet] [--if-empty]
  intraday fleet demo [...]                 the 24-device fleet `make up` loads
  intraday ingest FILE [--batch-id ID] [--url URL] [--json]
                          exit 0 all stored, 2 rejected, 3 stored with rows quarantined

Commands that reach the running system go through the gateway
(INTRADAY_GATEWAY_URL); `db` and `fleet` work on the stores directly and are
what `make up` runs before the services start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from intraday.config import get_settings


def _fail(message: str, code: int = 1) -> None:
    print(f"intraday: {message}", file=sys.stderr)
    raise SystemExit(code)


def _gateway() -> httpx.Client:
    return httpx.Client(base_url=get_settings().gateway_url, timeout=90)


def _http_error(r: httpx.Response) -> None:
    try:
        detail = r.json().get("detail") or r.json().get("error") or r.text
    except ValueError:
        detail = r.text
    _fail(f"{r.request.method} {r.request.url.path} -> {r.status_code}: {detail}")


def cmd_forecast(args: argparse.Namespace) -> None:
    body: dict = {"device_id": args.device_id, "horizon_hours": args.horizon_hours}
    if args.start:
        body["forecast_start"] = args.start
    with _gateway() as gw:
        try:
            r = gw.post("/forecast/intraday", params={"wait": str(not args.no_wait).lower()},
                        json=body)
        except httpx.ConnectError:
            _fail(f"gateway not reachable at {get_settings().gateway_url} (is `make up` running?)")
    if r.status_code >= 400:
        _http_error(r)
    view = r.json()
    if args.json or "result" not in view:
        print(json.dumps(view, indent=2))
        return
    print_forecast(view["result"])


def print_forecast(result: dict) -> None:
    intervals = result["intervals"]
    p90_max = max(i["p90"] for i in intervals) or 1.0
    print(f"forecast {result['forecast_id']}")
    print(f"  device {result['device_id']}  model {result['model_version']}  "
          f"data {result['data_window']['start']} .. {result['data_window']['end']}")
    print(f"  {'interval (UTC)':<17} {'P10':>7} {'P50':>7} {'P90':>7}  kW")
    width = 40
    for i in intervals[::4]:  # hourly rows; the full 96 intervals are in --json
        lo, mid, hi = (int(round(i[q] / p90_max * width)) for q in ("p10", "p50", "p90"))
        bar = " " * lo + "-" * max(mid - lo, 0) + "|" + "-" * max(hi - mid - 1, 0)
        print(f"  {i['interval_start'][:16]:<17} {i['p10']:7.3f} {i['p50']:7.3f} {i['p90']:7.3f}  {bar}")


def cmd_prices(args: argparse.Namespace) -> None:
    """A random-walk price feed with occasional jumps, published via the gateway."""
    rng = np.random.default_rng(args.seed)
    price = args.price
    with _gateway() as gw:
        for n in range(args.count):
            if n:
                price += rng.normal(0, args.step) + (rng.random() < 0.1) * rng.normal(0, 4 * args.step)
            tick = {"price_eur_mwh": round(float(price), 2), "at": datetime.now(UTC).isoformat()}
            try:
                r = gw.post("/prices", json=tick)
            except httpx.ConnectError:
                _fail(f"gateway not reachable at {get_settings().gateway_url} (is `make up` running?)")
            if r.status_code >= 400:
                _http_error(r)
            print(f"[{n + 1}/{args.count}] {tick['at'][:19]}  {tick['price_eur_mwh']:8.2f} EUR/MWh",
                  flush=True)
            if n + 1 < args.count:
                time.sleep(args.interval)


def cmd_devices(_: argparse.Namespace) -> None:
    with _gateway() as gw:
        r = gw.get("/devices")
    if r.status_code >= 400:
        _http_error(r)
    for d in r.json():
        print(f"{d['device_id']}  {d['location']:<12} {d['building_type']:<34} "
              f"{d['rated_power_kw']:5.1f} kW")


def cmd_db_migrate(_: argparse.Namespace) -> None:
    from intraday.audit import db

    with db.connect(get_settings().pg_dsn) as conn:
        db.migrate(conn)
    print("audit schema up to date")


def _open_store(required: bool = True):
    """The telemetry store, or None when the telemetry service holds it."""
    from intraday.errors import StoreInUse
    from intraday.telemetry.store import TelemetryStore

    try:
        store = TelemetryStore.from_settings(get_settings())
    except StoreInUse as e:
        if required:
            _fail(f"{e}; stop it with `make down`, or use the running service")
        return None
    store.migrate()
    return store


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _fleet_args(args: argparse.Namespace):
    from intraday.telemetry import fleet
    from intraday.timeutil import floor_quarter_hour

    if args.devices < 1 or args.days < 1:
        _fail("--devices and --days must be at least 1")
    end = args.end or datetime.now(UTC)
    end = floor_quarter_hour(end)
    start = end - timedelta(days=args.days)
    faults = fleet.NO_FAULTS if args.faults == "none" else fleet.FaultRates()
    return start, end, faults


def cmd_fleet_generate(args: argparse.Namespace) -> None:
    from intraday.telemetry.loader import load_fleet, write_fleet

    start, end, faults = _fleet_args(args)
    _stderr(f"generating {args.devices:,} heat pumps x {args.days} days "
            f"({start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC), seed {args.seed}, "
            f"faults {args.faults}")
    if args.out:
        summary = write_fleet(Path(args.out), args.devices, start, end, args.seed, faults, _stderr)
        print(f"wrote {summary.readings:,} readings of {summary.devices:,} devices in "
              f"{summary.seconds:.1f} s: {', '.join(summary.files)}")
    else:
        store = _open_store()
        try:
            if args.if_empty and store.device_count() > 0:
                print(f"telemetry store has {store.device_count()} devices; fleet not loaded")
                return
            summary = load_fleet(store, args.devices, start, end, args.seed, faults, _stderr)
        finally:
            store.close()
        r = summary.ingest
        print(f"loaded {summary.devices:,} devices in {summary.seconds:.1f} s: "
              f"{r.inserted:,} readings stored, {r.duplicates:,} duplicate messages dropped, "
              f"{r.already_stored:,} already stored, {r.quarantined:,} quarantined; "
              f"{summary.weather_rows:,} weather rows")
    print("faults: " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in summary.faults.items()))


def cmd_ingest(args: argparse.Namespace) -> None:
    from intraday.errors import BatchConflict, InvalidRequest
    from intraday.telemetry.ingest import ingest_file

    path = Path(args.file)
    if not path.is_file():
        _fail(f"{path}: no such file")

    def progress(report) -> None:
        _stderr(f"  {report.rows:>12,} rows  inserted {report.inserted:,}  "
                f"quarantined {report.quarantined:,}")

    store = None if args.url else _open_store(required=False)
    try:
        if store is not None:
            report = ingest_file(store, path, batch_id=args.batch_id, progress=progress).to_dict()
        else:
            report = _ingest_via_service(path, args, progress)
    except (InvalidRequest, BatchConflict) as e:
        _fail(str(e), 2)
    finally:
        if store is not None:
            store.close()
    report.pop("touched", None)
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["status"] == "duplicate_batch":
        print(f"{path}: already ingested as batch {report['batch_id']}; nothing written")
    else:
        print(f"{path}: {report['status']}: {report['rows']:,} rows, {report['inserted']:,} inserted, "
              f"{report['duplicates']:,} duplicates dropped, {report['already_stored']:,} already stored, "
              f"{report['quarantined']:,} quarantined")
        for reason, n in report["reasons"].items():
            print(f"  quarantined {n:,} x {reason}")
        for e in report["errors"]:
            print(f"  rejected: {e}")
    if report["status"] == "rejected":
        raise SystemExit(2)
    if report["quarantined"]:
        raise SystemExit(3)


def _ingest_via_service(path: Path, args: argparse.Namespace, progress) -> dict:
    """Send the file chunk by chunk to the telemetry service (which owns the
    embedded store while it runs)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from intraday.telemetry.ingest import IngestReport, file_batch_id, read_chunks

    url = args.url or get_settings().telemetry_url
    batch_id = args.batch_id or file_batch_id(path)
    total = IngestReport(batch_id=batch_id, source="file", status="duplicate_batch")
    offset = 0
    with httpx.Client(base_url=url, timeout=300) as client:
        for n, chunk in enumerate(read_chunks(path)):
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(chunk, preserve_index=False), buf)
            try:
                r = client.post("/ingest", content=buf.getvalue(),
                                params={"batch_id": f"{batch_id}/{n:05d}", "row_offset": offset},
                                headers={"content-type": "application/vnd.apache.parquet"})
            except httpx.ConnectError:
                _fail(f"telemetry service not reachable at {url}")
            # 422 with a report: the chunk was rejected as a batch; other errors stop.
            rejected = r.json().get("detail") if r.status_code == 422 else None
            if r.status_code >= 400 and not isinstance(rejected, dict):
                _http_error(r)
            total.add(IngestReport(**(rejected or r.json())))
            offset += len(chunk)
            progress(total)
    return total.to_dict()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intraday", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("forecast", help="forecast one device through the gateway")
    f.add_argument("device_id")
    f.add_argument("--start", help="forecast start, UTC quarter-hour (default: next quarter-hour)")
    f.add_argument("--horizon-hours", type=float, default=24.0)
    f.add_argument("--no-wait", action="store_true", help="return the forecast id at once")
    f.add_argument("--json", action="store_true", help="print the full JSON")
    f.set_defaults(func=cmd_forecast)

    pr = sub.add_parser("prices", help="publish a simulated price feed")
    pr.add_argument("--count", type=int, default=20)
    pr.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    pr.add_argument("--price", type=float, default=90.0, help="starting price, EUR/MWh")
    pr.add_argument("--step", type=float, default=3.0, help="random-walk step, EUR/MWh")
    pr.add_argument("--seed", type=int, default=None)
    pr.set_defaults(func=cmd_prices)

    d = sub.add_parser("devices", help="list the fleet")
    d.set_defaults(func=cmd_devices)

    dbp = sub.add_parser("db", help="audit database").add_subparsers(dest="db_command", required=True)
    dbp.add_parser("migrate", help="create or update the audit schema").set_defaults(func=cmd_db_migrate)

    fl = sub.add_parser("fleet", help="fleet data").add_subparsers(dest="fleet_command", required=True)
    for name, help_text, devices, days in (
        ("generate", "generate a realistic heat-pump fleet into the store or a Parquet file", 100, 30),
        ("demo", "the small demo fleet `make up` loads (24 devices, 35 days)", 24, 35),
    ):
        g = fl.add_parser(name, help=help_text)
        g.add_argument("--devices", type=int, default=devices)
        g.add_argument("--days", type=int, default=days)
        g.add_argument("--seed", type=int, default=7)
        g.add_argument("--end", type=datetime.fromisoformat,
                       help="end of the data, ISO time (default: now, to the quarter-hour)")
        g.add_argument("--faults", choices=["realistic", "none"], default="realistic",
                       help="telemetry faults: gaps, stuck sensors, duplicates, late arrivals")
        g.add_argument("--out", help="write FILE.parquet (backtest input format) instead of the store")
        g.add_argument("--if-empty", action="store_true", help="only when the store has no devices")
        g.set_defaults(func=cmd_fleet_generate)

    ing = sub.add_parser("ingest", help="ingest a CSV or Parquet file of readings")
    ing.add_argument("file")
    ing.add_argument("--batch-id", help="batch id (default: derived from the file's content)")
    ing.add_argument("--url", help="send to this telemetry service instead of opening the store")
    ing.add_argument("--json", action="store_true", help="print the full report as JSON")
    ing.set_defaults(func=cmd_ingest)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
