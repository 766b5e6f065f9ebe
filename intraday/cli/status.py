"""`status`: what runs, the served model, the fleet's freshness, live accuracy and the last decisions."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx
import numpy as np

from intraday.cli.common import _console, _fail, _gateway, _http_error, _table
from intraday.config import get_settings


def _local_apps() -> list[tuple[str, int, int]]:
    """(app id, app port, sidecar HTTP port) of the local stack, from dapr.yaml."""
    import yaml

    from intraday.config import REPO_ROOT

    try:
        run = yaml.safe_load((REPO_ROOT / "dapr.yaml").read_text())
        return [(a["appID"], a["appPort"], a["daprHTTPPort"]) for a in run["apps"]]
    except (OSError, KeyError, TypeError):
        return []


def _scrape(url: str) -> dict[str, float]:
    """A Prometheus text page as {'name{labels}': value}; empty when it does not answer."""
    try:
        r = httpx.get(url, timeout=2)
    except httpx.TransportError:
        return {}
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def cmd_status(args: argparse.Namespace) -> None:
    """What runs (each app and its sidecar), the served model, the fleet's
    staleness and the last decisions; exit 1 when the gateway does not answer."""
    apps = []
    for name, port, sidecar in _local_apps():
        checks = {}
        for what, url in (("app_state", f"http://127.0.0.1:{port}/health"),
                          ("sidecar", f"http://127.0.0.1:{sidecar}/v1.0/healthz")):
            try:
                checks[what] = "up" if httpx.get(url, timeout=2).is_success else "unhealthy"
            except httpx.TransportError:
                checks[what] = "down"
        apps.append({"app": name, "port": port, **checks})
    telemetry = next((a for a in apps if a["app"] == "telemetry"), None)
    scraped = _scrape(f"http://127.0.0.1:{telemetry['port']}/metrics") if telemetry else {}
    fleet = {"devices": scraped.get("intraday_fleet_devices"),
             "staleness_p50_s": scraped.get('intraday_telemetry_staleness_seconds{quantile="0.5"}'),
             "staleness_max_s": scraped.get('intraday_telemetry_staleness_seconds{quantile="1"}'),
             "stale_1h": scraped.get('intraday_telemetry_stale_devices{threshold="1h"}')}
    overview = None
    with _gateway() as gw:
        try:
            r = gw.get("/ui/api/overview")
            overview = r.json() if r.status_code == 200 else {"error": f"{r.status_code}: {r.text[:200]}"}
            r = gw.get("/devices/freshness", params={"limit": 5})
            if r.status_code == 200:
                fleet["freshness"] = r.json()
            r = gw.get("/dead-letters", params={"limit": 5})
            dead = r.json() if r.status_code == 200 else {"error": f"{r.status_code}: {r.text[:200]}"}
        except httpx.TransportError as e:
            overview = {"error": f"gateway not reachable at {get_settings().gateway_url}: {e}"}
            dead = {"error": "gateway not reachable"}
    if args.json:
        print(json.dumps({"apps": apps, "fleet": fleet, "overview": overview, "dead_letters": dead},
                         indent=2))
    else:
        _print_status(apps, fleet, overview)
        _print_dead_letters(dead)
    if "error" in (overview or {}):
        raise SystemExit(1)


def _print_status(apps: list[dict[str, Any]], fleet: dict[str, Any], overview: dict[str, Any]) -> None:
    out = _console()
    if apps:
        _table(["app", "port", "health", "sidecar"],
               [[a["app"], a["port"], a["app_state"], a["sidecar"]] for a in apps], title="the local stack")
    if "error" in overview:
        out.print(f"[red]gateway:[/] {overview['error']}")
        return
    m = overview["model"]
    served = m.get("served")
    out.print(f"[bold]model[/] {served['version']}, {served['devices']} devices, data to "
              f"{served['data_end']}" if served
              else "[bold]model[/] none promoted: forecasts come from the seasonal fallback")
    last = (m.get("trainings") or [None])[0]
    if last:
        out.print(f"  last training {last['training_id']} ({last['trigger']}, {last['finished_at'][:16]}): "
                  f"{'promoted' if last['promoted'] else 'kept the champion'}; {last['reason']}")
    if fleet["devices"] is not None:
        median, worst = fleet["staleness_p50_s"], fleet["staleness_max_s"]
        ages = (f"; newest reading {median / 60:.0f} min old at the median, {worst / 60:.0f} min at worst; "
                f"{fleet['stale_1h']:.0f} quiet for over an hour"
                if median is not None and np.isfinite(median) and np.isfinite(worst) else "")
        out.print(f"[bold]fleet[/] {fleet['devices']:.0f} devices{ages}")
    quiet = [d for d in (fleet.get("freshness") or {}).get("stalest", [])
             if d["age_seconds"] is None or d["age_seconds"] > 3600]
    if quiet:
        def quiet_for(d: dict[str, Any]) -> str:
            return "never reported" if d["age_seconds"] is None else f"{d['age_seconds'] / 3600:.1f} h"

        out.print("  no recent readings (the stalest): "
                  + ", ".join(f"{d['device_id']} ({quiet_for(d)})" for d in quiet))
    _print_scores(overview.get("scores") or {})
    pf = overview.get("portfolio")
    out.print(f"[bold]portfolio[/] {pf['forecast_id']} ({pf['devices']} devices, made "
              f"{pf['completed_at'][:16]})" if pf else "[bold]portfolio[/] no fleet forecast yet")
    if overview["decisions"]:
        _table(["decided (UTC)", "price EUR/MWh", "buy MWh", "sell MWh", "quantile", "model"],
               [[d["decided_at"][:19], f"{d['price_eur_mwh']:.2f}", f"{d['buy_mwh']:.3f}",
                 f"{d['sell_mwh']:.3f}", f"P{round(100 * d['target_quantile'])}", d["model_version"]]
                for d in overview["decisions"][:5]],
               title="the last decisions", right=(1, 2, 3))
    else:
        out.print("[bold]decisions[/] none yet")


def _print_dead_letters(dead: dict[str, Any]) -> None:
    """Messages no subscriber could take (GET /dead-letters): how many per
    topic wait to be sent again, and the newest."""
    out = _console()
    if "error" in dead:
        out.print(f"[bold]dead letters[/] not readable ({dead['error']}; the key needs messages:admin)")
        return
    if not dead["topics"]:
        out.print("[bold]dead letters[/] none: every message was taken")
        return
    counts = ", ".join(f"{topic} {c['waiting']} waiting of {c['total']} (last {c['last_at'][:19]})"
                       for topic, c in dead["topics"].items())
    style = "[red]" if dead["waiting"] else "[bold]"
    out.print(f"{style}dead letters[/] {counts}")
    for d in dead["latest"]:
        if d["replayed_at"] is None:
            out.print(f"  {d['topic']} {d['message_id']} from {d['source'] or '?'} at "
                      f"{d['received_at'][:19]}: intraday dead-letters replay {d['topic']} {d['message_id']}")


def _print_scores(scores: dict[str, Any]) -> None:
    """Live accuracy (GET /scores): the last 7 days' scored forecasts
    beside the served model's held-out scores from its training."""
    out, live = _console(), scores.get("live")
    if not live:
        out.print(f"[bold]live accuracy[/] {scores.get('error', 'not available')}")
        return
    if not live["forecasts"]:
        out.print(f"[bold]live accuracy[/] no forecast scored against readings between {live['from']} and "
                  f"{live['to']} yet (a forecast is scored once its last interval is "
                  f"{get_settings().scoring_lag_hours:g} h over)")
        return

    def cells(pf: dict[str, Any] | None, dev: dict[str, Any] | None) -> list[str]:
        pf, dev = pf or {}, dev or {}
        return [_pct(pf.get("wape")), _pct(pf.get("bias"), signed=True),
                "–" if pf.get("pinball") is None else f"{pf['pinball']:.2f}", _pct(pf.get("coverage")),
                _pct(dev.get("wape")), _pct(dev.get("bias"), signed=True), _pct(dev.get("coverage"))]

    rows = []
    if scores.get("training"):
        t = scores["training"]
        rows.append([f"held out at training ({t['days']} days)", *cells(t["portfolio"], t["device"])])
    rows.append(["last 7 days", *cells(live["week"]["portfolio"], live["week"]["device"])])
    rows += [[d["day"], *cells(d.get("portfolio"), d.get("device"))] for d in reversed(live["days"])]
    _table(["", "portfolio WAPE", "bias", "pinball kW", "P10-P90", "device WAPE", "bias", "P10-P90"], rows,
           title=f"live accuracy: {live['forecasts']} forecasts scored against their readings",
           right=tuple(range(1, 8)))
    for alert in live["alerts"]:
        out.print(f"[red]alert:[/] {alert}")


def _pct(value: float | None, signed: bool = False) -> str:
    return "–" if value is None else f"{100 * value:{'+' if signed else ''}.1f} %"


def cmd_dead_letters(args: argparse.Namespace) -> None:
    """The dead letters (GET /dead-letters): per topic and the newest."""
    with _gateway() as gw:
        try:
            r = gw.get("/dead-letters", params={"limit": args.limit})
        except httpx.TransportError as e:
            _fail(f"gateway not reachable at {get_settings().gateway_url}: {e}")
    if r.status_code != 200:
        _http_error(r)
    if args.json:
        print(json.dumps(r.json(), indent=2))
        return
    dead = r.json()
    _print_dead_letters(dead)
    if dead["latest"]:
        _table(["topic", "message", "from", "received (UTC)", "sent again (UTC)"],
               [[d["topic"], d["message_id"], d["source"], d["received_at"][:19],
                 (d["replayed_at"] or "")[:19]] for d in dead["latest"]], title="the newest dead letters")


def cmd_dead_letters_replay(args: argparse.Namespace) -> None:
    """Publish a dead letter again on its topic, under its own id."""
    with _gateway() as gw:
        try:
            r = gw.post(f"/dead-letters/{args.topic}/{args.message_id}/replay")
        except httpx.TransportError as e:
            _fail(f"gateway not reachable at {get_settings().gateway_url}: {e}")
    if r.status_code != 200:
        _http_error(r, code=2 if r.status_code in (404, 422) else 1)
    print(f"sent {args.message_id} again on {args.topic}")
