"""`intraday`: the operator's command line.

  intraday forecast DEVICE_ID [--start ISO] [--horizon-hours H] [--no-wait] [--json]
  intraday prices [--count N] [--interval S] [--price P] [--step S] [--seed N]
  intraday devices
  intraday db migrate
  intraday fleet demo [--devices N] [--days D] [--if-empty]

Commands that reach the running system go through the gateway
(INTRADAY_GATEWAY_URL); `db` and `fleet` work on the stores directly and are
what `make up` runs before the services start.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

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


def cmd_fleet_demo(args: argparse.Namespace) -> None:
    from intraday.telemetry.fleet import demo_fleet
    from intraday.telemetry.store import TelemetryStore

    store = TelemetryStore.from_settings(get_settings())
    try:
        store.migrate()
        if args.if_empty and store.device_count() > 0:
            print(f"telemetry store has {store.device_count()} devices; demo fleet not loaded")
            return
        print(f"building demo fleet: {args.devices} heat pumps x {args.days} days ...", flush=True)
        devices, readings = demo_fleet(args.devices, datetime.now(UTC), args.days, args.seed)
        store.upsert_devices(devices)
        store.insert_readings(readings)
        print(f"loaded {len(devices)} devices, {len(readings):,} readings")
    finally:
        store.close()


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
    demo = fl.add_parser("demo", help="load the demo fleet into the telemetry store")
    demo.add_argument("--devices", type=int, default=24)
    demo.add_argument("--days", type=int, default=35)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--if-empty", action="store_true", help="only when the store has no devices")
    demo.set_defaults(func=cmd_fleet_demo)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
