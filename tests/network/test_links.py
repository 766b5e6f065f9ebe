"""Networks that fail while every process lives (Toxiproxy on the stack's
links, tests/network/toxics.py): daprd to placement, to the scheduler and
to Redis, the apps to PostgreSQL, and the forecaster's daprd to its app;
each blackholed, reset and slowed by 2 s while forecasts and price moves
stream in. Then the books (tests/faults/books.py): every accepted forecast
COMPLETED or FAILED with a reason, audited once; each decision once. And
the ambiguous commit: PostgreSQL's COMMIT of an audit row taken and its
answer lost, the audit neither doubled nor lost."""

from __future__ import annotations

import glob
import time
from datetime import UTC, datetime

import httpx
import psycopg
import pytest

from intraday import failpoints
from tests.faults.books import (
    Traffic,
    check_forecast_books,
    check_trading_books,
    forecast_ok,
    record_figures,
)
from tests.network import toxics
from tests.stack import PG_DSN, ROOT, eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

FAULT_SECONDS = 10


@pytest.fixture(scope="module")
def devices(gateway) -> list[str]:
    return [d["device_id"] for d in gateway.get("/devices").json()]


CASES = [(link, kind) for link in toxics.LINKS for kind in toxics.FAULTS]


@pytest.mark.parametrize(("link", "kind"), CASES, ids=[f"{link}-{kind}" for link, kind in CASES])
def test_forecasts_and_trades_survive_a_network_fault(stack, gateway, rds, devices, link, kind):
    name = f"network: {link} {kind} {FAULT_SECONDS} s"
    # Each case its own forecast ids: starts from `offset` hours back, ten
    # hours apart (a case asks for about two hours of starts; a week back at most).
    offset = 160 - 10 * CASES.index((link, kind))
    with Traffic(gateway, devices, offset) as traffic:
        time.sleep(4)
        injected = time.monotonic()
        with toxics.fault(link, kind):
            assert toxics.active(toxics.LINKS[link]), "the fault is not on"
            time.sleep(FAULT_SECONDS)
        healed = time.monotonic()
        recovered = eventually(lambda: forecast_ok(gateway), timeout=120)
        recover_s = time.monotonic() - healed
        assert recovered, f"{name}: no forecast within 120 s of the link healing"
        time.sleep(4)
    views = traffic.settle()
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        figures = check_forecast_books(views, traffic.accepted, conn, rds)
        check_trading_books(conn)
        decided = conn.execute("SELECT count(*) FROM trade_decisions WHERE price_eur_mwh = ANY(%s)",
                               (traffic.prices,)).fetchone()[0]
        figures["redriven_by_watchdog"] = conn.execute(
            "SELECT count(*) FROM workflow_runs WHERE instance_id = ANY(%s) AND redriven > 0",
            (sorted(traffic.accepted),)).fetchone()[0]
    assert figures["completed"] >= figures["accepted"] - figures["failed"] > 0, figures
    figures.update(seconds_to_recover=round(recover_s, 1), fault_seconds=round(healed - injected, 1),
                   refused_while_down=len(traffic.refused), price_ticks=len(traffic.prices),
                   decisions=decided)
    record_figures(stack, name, figures)


def _owed_audit_logged(forecast_id: str) -> bool:
    """The forecaster logged that the forecast's audit failed after its publish (and is owed)."""
    for path in (*glob.glob(str(ROOT / ".dapr" / "logs" / "forecaster_app_*.log")),
                 *glob.glob(str(ROOT / ".data" / "test-stack" / "logs" / "forecaster*.log"))):
        with open(path, errors="replace") as f:
            if any(forecast_id in line and "audit failed" in line for line in f):
                return True
    return False


def test_an_audit_commit_whose_answer_is_lost_is_recorded_once(stack, gateway, pg):
    """The COMMIT reaches PostgreSQL and commits; its answer never comes
    back and the connection drops: the forecaster cannot know whether the
    row is in. It owes the audit and writes it again; the row is keyed by
    the forecast id, so it is there once, with its numbers once."""
    held = failpoints.arm(stack["failpoints"], failpoints.AUDIT_BEFORE_COMMIT, hang=3)
    r = gateway.post("/forecast/intraday", json={"device_id": "hp-0011", "horizon_hours": 3})
    assert r.status_code in (200, 202), r.text
    fid = r.json()["forecast_id"]
    assert eventually(lambda: not held.exists(), timeout=60), "the audit never got to its COMMIT"
    # Answers from PostgreSQL dropped from now; the connections closed 6 s
    # on, after the COMMIT (sent once the 3 s hold ends) has gone through.
    name = toxics.add("postgres", "timeout", "downstream", {"timeout": 6000})
    try:
        time.sleep(8)
    finally:
        toxics.remove("postgres", name)
    view = eventually(lambda: (v := gateway.get(f"/forecast/{fid}").json()).get("status")
                      in ("COMPLETED", "FAILED") and v, timeout=120)
    assert view and view["status"] == "COMPLETED", view
    assert _owed_audit_logged(fid), "the commit's answer was not lost: the case did not happen"
    rows = pg.execute("SELECT count(*) FROM forecast_requests WHERE request_id = %s", (fid,)).fetchone()[0]
    assert rows == 1, rows
    series = pg.execute("SELECT count(*), max(cardinality(p50)) FROM forecast_series WHERE request_id = %s",
                        (fid,)).fetchone()
    assert series == (1, 12), series
    record_figures(stack, "network: audit COMMIT answer lost", {
        "audit_rows": 1, "status": view["status"], "at": datetime.now(UTC).isoformat(timespec="seconds")})
    assert httpx.get("http://127.0.0.1:8001/health", timeout=5).status_code == 200
