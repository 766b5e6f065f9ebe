"""Every panel of every dashboard shows data: after traffic on every path
(single and fleet forecasts, a price move, an ingest batch), each panel's
queries return series from the running Prometheus."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from intraday.timeutil import floor_quarter_hour, isoformat_z
from observability.dashboards import DASHBOARDS, OUT, panel_queries
from tests.stack import app_headers, eventually, train_and_promote

PROMETHEUS = "http://127.0.0.1:9090"


def series(expr: str) -> list[dict]:
    # Grafana picks $__rate_interval from the time range (at least four
    # scrapes); 5 minutes holds the test's traffic whatever the order.
    r = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr.replace("$__rate_interval", "5m")},
                  timeout=10)
    assert r.status_code == 200, f"{expr}: {r.text}"
    return [s for s in r.json()["data"]["result"] if s["value"][1] not in ("NaN",)]


@pytest.fixture(scope="module")
def traffic(stack, gateway, tmp_path_factory):
    """One of everything the dashboards draw, under a promoted model (its
    version, age and cache tiers have panels)."""
    version = train_and_promote(stack["env"], tmp_path_factory.mktemp("model"))
    try:
        time.sleep(1.5)  # the forecasters of the test stack re-read the pointer every second
        # Twice, a few scrapes apart: a series' first sample (a sidecar
        # creates it at its first observation) shows no rate; its next does.
        for n in range(2):
            _drive(gateway, version, n, app_headers(stack))
            time.sleep(6)
        # A fleet forecast whose day is over, scored: the live accuracy panels.
        start = floor_quarter_hour(datetime.now(UTC)) - timedelta(days=2)
        assert gateway.post("/forecast/fleet", params={"wait": "true"}, json={
            "devices": ["hp-0007", "hp-0008", "hp-0009"], "forecast_start": isoformat_z(start),
            "horizon_hours": 24}).status_code == 200
        r = gateway.post("/scores/run")
        assert r.status_code == 200, r.text
        yield
    finally:
        (stack["data_dir"] / "models" / "PROMOTED").unlink()


def _drive(gateway, version: str, n: int, headers: dict) -> None:
    """New forecasts (a horizon per round), a fleet forecast, an ingest
    batch with a bad row, a price move to a decision."""
    horizon = {"horizon_hours": 20 + n}
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "hp-0007", **horizon})
    assert r.status_code == 200 and r.json()["result"]["model_version"] == version, r.text
    assert gateway.post("/forecast/fleet", params={"wait": "true"},
                        json={"devices": ["hp-0007", "hp-0008"], **horizon}).status_code == 200
    now = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    r = httpx.post("http://127.0.0.1:8002/ingest", timeout=30, headers=headers, json={
        "batch_id": f"dashboards-{now:%H%M}-{n}",
        "readings": [{"device_id": "hp-0007", "timestamp": now.isoformat(), "power": 1.5},
                     {"device_id": "hp-0007", "timestamp": now.isoformat(), "power": -1}]})
    assert r.status_code == 200, r.text
    before = eventually(lambda: series("sum(intraday_trade_decisions_total)"), timeout=30)
    time.sleep(1.1)  # the test stack's debounce between moves
    assert gateway.post("/prices", json={"price_eur_mwh": 2000.0 + 50 * n}).status_code == 202
    decided = eventually(lambda: (after := series("sum(intraday_trade_decisions_total)"))
                         and float(after[0]["value"][1]) > float(before[0]["value"][1]), timeout=90)
    assert decided, "the price move led to no decision"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_panel_shows_data(name, traffic):
    dashboard = json.loads((OUT / f"{name}.json").read_text())
    queries = panel_queries(dashboard)
    assert queries
    # A rate needs two scrapes after the traffic; the recording rules an
    # evaluation (every 15 s).
    def empty() -> list[tuple[str, str]]:
        return [(title, expr) for title, expr in queries if not series(expr)]

    eventually(lambda: not empty(), timeout=60)
    empty = empty()
    assert not empty, "panels without data:\n" + "\n".join(f"  {t}: {e}" for t, e in empty)
