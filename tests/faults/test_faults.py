"""Faults injected into the running local stack during a stream of
forecast requests (or, for trading, on a price move), then the books checked
(tests/faults/books.py): nothing accepted is lost, nothing is recorded or
moved twice, nothing is half-written. Each case records its figures."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from intraday import failpoints
from tests.faults.books import Traffic, check_forecast_books, check_trading_books, record_figures
from tests.stack import (
    PG_DSN,
    app_headers,
    dapr_headers,
    eventually,
    healthy,
    kill_sidecar,
    restart_app,
    topic_messages,
)

pytestmark = pytest.mark.timeout(420)


def _forecast_ok(gateway: httpx.Client) -> bool:
    try:
        return gateway.post("/forecast/intraday", params={"wait": "true"},
                            json={"device_id": "hp-0001", "horizon_hours": 1}, timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def devices(gateway) -> list[str]:
    return [d["device_id"] for d in gateway.get("/devices").json()]


def _run_fault(stack, gateway, rds, devices, name: str, offset_days: int, inject) -> dict:
    """Traffic for a few seconds, `inject()` (returns once the fault is
    over), traffic a few seconds more; then the books and the figures."""
    with Traffic(gateway, devices, offset_days) as traffic:
        time.sleep(4)
        accepted_before = len(traffic.accepted)
        injected = time.monotonic()
        inject()
        recovered = eventually(lambda: _forecast_ok(gateway), timeout=120)
        recover_s = time.monotonic() - injected
        assert recovered, f"{name}: no forecast within 120 s of the fault"
        time.sleep(4)
    views = traffic.settle()
    # A connection of its own: a fault may have taken the session's down.
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        figures = check_forecast_books(views, traffic.accepted, conn, rds)
    figures.update(accepted_before_fault=accepted_before, seconds_to_recover=round(recover_s, 1),
                   refused_while_down=len(traffic.refused))
    record_figures(stack, name, figures)
    return figures


def test_forecaster_app_killed_mid_workflow(stack, gateway, rds, devices):
    """kill -9 of the forecaster app while forecasts are running: the
    workflows resume when it is back; each forecast audited once."""
    def inject():
        restart_app(stack, "forecaster", 8001)  # kill -9; back when the supervisor restarted it

    figures = _run_fault(stack, gateway, rds, devices, "forecaster app kill -9", 6, inject)
    assert figures["completed"] >= figures["accepted"] - figures["failed"] > 0


def test_forecaster_killed_after_publish_before_audit(stack, gateway, rds, devices):
    """The forecaster dies between a forecast's publish and its audit (a
    failpoint): the activity runs again, the message is sent again with the
    same numbers, and the audit row is written once."""
    def inject():
        failpoints.arm(stack["failpoints"], failpoints.FORECAST_AFTER_PUBLISH)
        assert eventually(lambda: not (stack["failpoints"] / failpoints.FORECAST_AFTER_PUBLISH).exists(),
                          timeout=30), "no forecast reached the failpoint"
        assert eventually(lambda: healthy(8001), timeout=90)

    figures = _run_fault(stack, gateway, rds, devices, "forecaster kill -9 after publish", 5, inject)
    assert figures["failed"] == 0, figures


def test_forecaster_sidecar_killed(stack, gateway, rds, devices):
    def inject():
        kill_sidecar("forecaster")
        assert eventually(lambda: healthy(8001) and _listening_dapr(3501), timeout=90)

    _run_fault(stack, gateway, rds, devices, "forecaster daprd kill -9", 4, inject)


def _listening_dapr(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1.0/healthz", timeout=2).status_code == 204
    except httpx.HTTPError:
        return False


def test_postgres_down_30_s_during_a_stream(stack, gateway, rds, devices):
    """PostgreSQL stopped for 30 s: audits retry with backoff and land once
    when it is back; the forecasts are not made again."""
    pgdata = stack["data_dir"] / "postgres"
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []

    def inject():
        subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop"],
                       check=True, capture_output=True)
        time.sleep(30)
        subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l",
                        str(stack["data_dir"] / "logs" / "postgres.log"), "-w", "start"],
                       check=True, capture_output=True)

    figures = _run_fault(stack, gateway, rds, devices, "postgresql down 30 s", 3, inject)
    assert figures["completed"] > 0, figures


def test_trading_killed_between_decision_and_acknowledgement(stack, gateway, rds):
    """The trading app dies after recording and publishing a decision but
    before acknowledging the price message (a failpoint): the message is
    redelivered, the rule hands back the pending decision, and the decision
    is recorded and moves the positions once."""
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM trade_decisions").fetchone()[0]
        failpoints.arm(stack["failpoints"], failpoints.TRADING_AFTER_DECISION)
        injected = time.monotonic()
        reference = httpx.get("http://127.0.0.1:8003/rule", headers=app_headers(stack),
                              timeout=5).json().get("reference_price")
        price = (reference or 80.0) + 30.0  # a move past the rule's threshold
        assert gateway.post("/prices", json={"price_eur_mwh": price,
                                             "at": datetime.now(UTC).isoformat()}).status_code == 202
        assert eventually(lambda: not (stack["failpoints"] / failpoints.TRADING_AFTER_DECISION).exists(),
                          timeout=60), "the trading app never reached the failpoint"
        assert eventually(lambda: healthy(8003), timeout=90)
        rule = eventually(lambda: (r := httpx.get("http://127.0.0.1:8003/rule", headers=app_headers(stack),
                                                  timeout=5)).status_code == 200
                          and not r.json()["pending"] and r.json(), timeout=120)
        assert rule, "the pending decision was never completed after the restart"
        after = conn.execute("SELECT count(*) FROM trade_decisions").fetchone()[0]
        assert after == before + 1
        figures = check_trading_books(conn)
    orders = [m for m in _orders(rds) if m.get("price_eur_mwh") == price]
    assert orders and len({m["decision_id"] for m in orders}) == 1, orders
    figures.update(seconds_to_recover=round(time.monotonic() - injected, 1),
                   order_deliveries=len(orders), decisions_added=after - before)
    record_figures(stack, "trading kill -9 between decision and ack", figures)


def _orders(rds) -> list[dict]:
    return topic_messages(rds, "orders")


def test_telemetry_killed_mid_ingest(stack, rds):
    """The telemetry app dies with a batch's readings written and its ledger
    entry not (a failpoint); the batch offered again is counted as already
    stored, not doubled."""
    ingest = "http://127.0.0.1:3500/v1.0/invoke/telemetry/method/ingest"
    csv = "device_id,timestamp,power\n" + "".join(
        f"hp-0003,2026-02-2{d}T0{h}:00:00Z,{1 + h / 10}\n" for d in range(5, 7) for h in range(4))
    failpoints.arm(stack["failpoints"], failpoints.TELEMETRY_MID_INGEST)
    injected = time.monotonic()
    headers = {"content-type": "text/csv", **dapr_headers(stack)}
    try:  # the sidecar retries the call once the app is back (Resiliency); or it fails
        first = httpx.post(ingest, content=csv.encode(), params={"batch_id": "faults-mid-ingest"},
                           headers=headers, timeout=120)
    except httpx.HTTPError:
        first = None
    assert not (stack["failpoints"] / failpoints.TELEMETRY_MID_INGEST).exists(), "failpoint not reached"
    assert eventually(lambda: healthy(8002), timeout=90)
    r = httpx.post(ingest, content=csv.encode(), params={"batch_id": "faults-mid-ingest"},
                   headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    reports = [x.json() for x in (first, r) if x is not None and x.status_code == 200]
    # The readings were written before the kill: no later attempt writes them again.
    assert all(x.get("inserted", 0) == 0 for x in reports), reports
    report = reports[0]
    assert report.get("already_stored") == 8 or report.get("status") == "duplicate_batch", reports
    record_figures(stack, "telemetry kill -9 mid-ingest", {
        "rows": 8, "inserted_on_retry": report["inserted"], "already_stored": report.get("already_stored"),
        "seconds_to_recover": round(time.monotonic() - injected, 1)})
