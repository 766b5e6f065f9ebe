"""Every message counted: numbered price ticks and telemetry batches are
published while the trading or the telemetry app is killed, SIGTERMed,
paused (SIGSTOP 20 s and 60 s: longer than the stream's 30 s processing
timeout), or fails every message for 15 s, and in a burst past the old
stream trim length. Each id must end taken (its tick row, its batch in the
ingest ledger) or dead-lettered (kept by the gateway), never neither, and
taken at most once in effect. A redelivery that arrives while the first
delivery still decides must not trade twice."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from intraday import failpoints
from tests.faults.books import (
    PUBLISH,
    Numbered,
    account_messages,
    check_trading_books,
    decision_id,
    record_figures,
    settle_trading,
)
from tests.stack import PG_DSN, app_headers, app_pid, dapr_headers, eventually, healthy

pytestmark = pytest.mark.timeout(600)
PORTS = {"trading": 8003, "telemetry": 8002}


def _case(stack, gateway, name: str, day: int, inject: Callable[[], None]) -> dict:
    with Numbered(stack, gateway, day) as traffic:
        time.sleep(5)
        injected = time.monotonic()
        inject()
        fault_s = time.monotonic() - injected
        time.sleep(5)
    books = account_messages(stack, traffic.ticks, traffic.batches, traffic.base)
    mine = books.pop("readings_stored")
    assert not books["ticks_lost"], f"{name}: price ticks neither taken nor dead-lettered: {books}"
    assert not books["batches_lost"], f"{name}: telemetry batches neither taken nor dead-lettered: {books}"
    # Taken once in effect: one reading per batch taken, however often it came.
    assert len(mine) == books["batches_taken"], f"{name}: {len(mine)} readings for {books} batches"
    assert books["ticks"] > 10 and books["batches"] > 10, books
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        check_trading_books(conn)
    figures = {**books, "ticks_lost": len(books["ticks_lost"]), "batches_lost": len(books["batches_lost"]),
               "fault_seconds": round(fault_s, 1), "refused_while_down": traffic.refused}
    record_figures(stack, f"messages: {name}", figures)
    return figures


def _signal(app: str, sig: int) -> Callable[[], None]:
    def inject() -> None:
        os.kill(app_pid(app), sig)
        time.sleep(1)
        assert eventually(lambda: healthy(PORTS[app]), timeout=90), f"{app} did not come back"
    return inject


def _pause(app: str, seconds: float) -> Callable[[], None]:
    def inject() -> None:
        pid = app_pid(app)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
    return inject


def _failing(stack: dict, app: str, seconds: float) -> Callable[[], None]:
    point = failpoints.TRADING_ON_PRICE if app == "trading" else failpoints.TELEMETRY_ON_BATCH

    def inject() -> None:
        armed = failpoints.arm(stack["failpoints"], point, fail=seconds)
        time.sleep(seconds + 1)
        armed.unlink(missing_ok=True)
    return inject


CASES = [(f"{app} {what}", app, what) for app in ("trading", "telemetry")
         for what in ("kill -9", "SIGTERM", "SIGSTOP 20 s", "SIGSTOP 60 s", "fails 15 s")]


@pytest.mark.parametrize(("name", "app", "what"), CASES, ids=[c[0] for c in CASES])
def test_every_message_is_taken_or_dead_lettered(stack, gateway, name, app, what):
    if what == "kill -9":
        inject = _signal(app, signal.SIGKILL)
    elif what == "SIGTERM":
        inject = _signal(app, signal.SIGTERM)
    elif what.startswith("SIGSTOP"):
        inject = _pause(app, float(what.split()[1]))
    else:
        inject = _failing(stack, app, 15)
    figures = _case(stack, gateway, name, CASES.index((name, app, what)), inject)
    if what != "fails 15 s":  # a crash or a pause is waited out: nothing needs an operator
        assert figures["ticks_dead_lettered"] == 0 and figures["batches_dead_lettered"] == 0, figures


def test_a_burst_past_the_old_trim_length_loses_nothing(stack):
    """12,000 ticks published while trading is paused: more than the 10,000
    a count-trimmed stream kept (the oldest unread were dropped); trimmed by
    age, every one is taken once trading resumes."""
    run, count = uuid.uuid4().hex[:6], 12_000
    ids = [f"tick-{run}-b{n}" for n in range(count)]
    pid = app_pid("trading")
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        def publish(chunk: list[str]) -> int:
            with httpx.Client(headers=dapr_headers(stack), timeout=30) as c:
                return sum(c.post(f"{PUBLISH}/prices", json={"price_eur_mwh": 50.0},
                                  params={"metadata.cloudevent.id": i}).status_code == 204 for i in chunk)
        with ThreadPoolExecutor(8) as pool:
            published = sum(pool.map(publish, [ids[k::8] for k in range(8)]))
    finally:
        os.kill(pid, signal.SIGCONT)
    publish_s = time.monotonic() - t0
    assert published == count
    books = account_messages(stack, ids, [], timeout=420)
    books.pop("readings_stored")
    assert not books["ticks_lost"], f"ticks lost in the burst: {books}"
    record_figures(stack, "messages: trading paused, burst of 12,000 ticks", {
        "ticks": count, "ticks_taken": books["ticks_taken"],
        "ticks_dead_lettered": books["ticks_dead_lettered"],
        "ticks_lost": len(books["ticks_lost"]), "seconds_to_publish": round(publish_s, 1),
        "seconds_to_close_books": books["seconds_to_close_books"]})


def test_a_redelivery_while_the_first_delivery_decides_does_not_trade_twice(stack, gateway, rds):
    """The first delivery of a price move hangs 45 s before deciding (a
    failpoint): past the 30 s processing timeout the stream hands the
    message out again while it still runs. Both decide; one decision is
    recorded, the positions move once, and `orders` carries it under one id."""
    reference = httpx.get("http://127.0.0.1:8003/rule", headers=app_headers(stack),
                          timeout=10).json().get("reference_price") or 80.0
    tick = f"race-{uuid.uuid4().hex[:6]}"
    decided_as = decision_id(f"tick-{tick}")
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        failpoints.arm(stack["failpoints"], failpoints.TRADING_BEFORE_DECISION, hang=45)
        t0 = time.monotonic()
        r = gateway.post("/prices", json={"price_eur_mwh": reference + 40.0, "tick_id": tick})
        assert r.status_code == 202, r.text
        rule = settle_trading(lambda: httpx.get("http://127.0.0.1:8003/rule", headers=app_headers(stack),
                                                timeout=10).json(), timeout=240)
        assert rule and not rule["pending"], rule
        assert eventually(lambda: not (stack["failpoints"] / failpoints.TRADING_BEFORE_DECISION).exists(), 5)
        time.sleep(50 - min(50, time.monotonic() - t0))  # the hung first delivery has finished too
        rows = conn.execute("SELECT count(*) FROM trade_decisions WHERE decision_id = %s",
                            (decided_as,)).fetchone()[0]
        assert rows == 1, f"{rows} decisions for one price move"
        check_trading_books(conn)
    orders = [(entry[b"data"]) for _, entry in rds.xrange("orders")]
    mine = [o for o in orders if decided_as.encode() in o]
    ids = {json.loads(o)["id"] for o in mine}
    # Two messages: both deliveries decided (the race happened), under one id.
    assert len(mine) >= 2, f"{len(mine)} orders message(s): the message was not handed out twice"
    assert ids == {decided_as}, ids
    record_figures(stack, "messages: redelivery while the first delivery decides", {
        "decisions": rows, "orders_messages": len(mine), "distinct_message_ids": len(ids),
        "seconds": round(time.monotonic() - t0, 1)})
