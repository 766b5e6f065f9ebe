"""`forecast`, `prices` and `warm`: what a trader asks the running system for."""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from intraday.cli.common import _fail, _gateway, _http_error, _table
from intraday.config import get_settings


def cmd_forecast(args: argparse.Namespace) -> None:
    if args.fleet == (args.device_id is not None):
        _fail("name one DEVICE_ID, or --fleet [--devices ...] for a portfolio")
    body: dict[str, Any] = {"horizon_hours": args.horizon_hours}
    if args.fleet:
        if args.devices:
            body["devices"] = [d.strip() for d in args.devices.split(",") if d.strip()]
        path = "/forecast/fleet"
    else:
        body["device_id"] = args.device_id
        path = "/forecast/intraday"
    if args.start:
        body["forecast_start"] = args.start
    with _gateway() as gw:
        try:
            r = gw.post(path, params={"wait": str(not args.no_wait).lower()}, json=body,
                        timeout=310 if args.fleet else httpx.USE_CLIENT_DEFAULT)
        except httpx.ConnectError:
            _fail(f"gateway not reachable at {get_settings().gateway_url} (is `make up` running?)")
    if r.status_code >= 400:
        _http_error(r)
    view = r.json()
    if args.json or "result" not in view:
        print(json.dumps(view, indent=2))
        return
    if args.fleet:
        print_fleet_forecast(view["result"])
    else:
        print_forecast(view["result"])


def print_fleet_forecast(result: dict[str, Any]) -> None:
    pf = result["portfolio"]
    print(f"fleet forecast {result['forecast_id']}")
    print(f"  {pf['devices']} devices  model {result['model_version']}  data to {result['data_end']}"
          + (f"  ({len(result['failed'])} not forecast: see --json)" if result["failed"] else ""))
    for note in pf.get("notes", []):
        print(f"  note: {note}")
    _table(["interval (UTC)", "P10 kW", "P50 kW", "P90 kW", "mean kW"],
           [[i["interval_start"][:16], f"{i['p10']:.1f}", f"{i['p50']:.1f}", f"{i['p90']:.1f}",
             f"{i['mean']:.1f}"] for i in pf["intervals"][::4]],  # hourly rows; every interval is in --json
           title="the portfolio's total, hourly", right=(1, 2, 3, 4))


def print_forecast(result: dict[str, Any]) -> None:
    intervals = result["intervals"]
    p90_max = max(i["p90"] for i in intervals) or 1.0
    print(f"forecast {result['forecast_id']}")
    print(f"  device {result['device_id']}  model {result['model_version']}  "
          f"data {result['data_window']['start']} .. {result['data_window']['end']}"
          + (f"  ({result['history_days']:.1f} days of history)" if result.get("history_days") else ""))
    for note in result.get("notes", []):
        print(f"  note: {note}")
    width = 40
    rows = []
    for i in intervals[::4]:  # hourly rows; the full 96 intervals are in --json
        lo, mid, hi = (int(round(i[q] / p90_max * width)) for q in ("p10", "p50", "p90"))
        bar = " " * lo + "-" * max(mid - lo, 0) + "|" + "-" * max(hi - mid - 1, 0)
        rows.append([i["interval_start"][:16], f"{i['p10']:.3f}", f"{i['p50']:.3f}", f"{i['p90']:.3f}",
                     f"{i['mean']:.3f}", bar])
    _table(["interval (UTC)", "P10 kW", "P50 kW", "P90 kW", "mean kW", "P10 - P50 | - P90"], rows,
           right=(1, 2, 3, 4))


def cmd_prices(args: argparse.Namespace) -> None:
    """A random-walk price feed with occasional jumps, published via the gateway."""
    rng = np.random.default_rng(args.seed)
    price = args.price
    with _gateway() as gw:
        for n in range(args.count):
            if n:
                price += rng.normal(0, args.step) + (rng.random() < 0.1) * rng.normal(0, 4 * args.step)
            at = datetime.now(UTC).isoformat()
            tick = {"price_eur_mwh": round(float(price), 2), "at": at}
            try:
                r = gw.post("/prices", json=tick)
            except httpx.ConnectError:
                _fail(f"gateway not reachable at {get_settings().gateway_url} (is `make up` running?)")
            if r.status_code >= 400:
                _http_error(r)
            print(f"[{n + 1}/{args.count}] {at[:19]}  {tick['price_eur_mwh']:8.2f} EUR/MWh",
                  flush=True)
            if n + 1 < args.count:
                time.sleep(args.interval)


def cmd_warm(args: argparse.Namespace) -> None:
    body = {"top": args.top, "days": args.days, "devices": args.device or []}
    with _gateway() as gw:
        try:
            r = gw.post("/warm", json=body, timeout=300)
        except httpx.ConnectError:
            _fail(f"gateway not reachable at {get_settings().gateway_url} (is `make up` running?)")
    if r.status_code >= 400:
        _http_error(r)
    out = r.json()
    print(f"model {out['model_version']} in memory ({out['model_loads']}); "
          f"{out['devices_warmed']} device actors warm in {out['seconds']:.1f} s")
    for device, error in out["failed"].items():
        print(f"  {device}: {error}")
    if out["failed"]:
        raise SystemExit(1)
