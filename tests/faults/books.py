"""What the fault suite injects faults into and how it checks the books
afterwards: a stream of single-device forecast requests through the
gateway (each a new forecast id) and price ticks, and the invariants every
fault must leave intact.

Figures per fault (requests accepted before it, lost, duplicated, time to
recover) go to the test stack's faults.json; `make bench-faults` copies
them to bench/results/faults.json.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import redis

from intraday.timeutil import floor_quarter_hour, isoformat_z
from tests.stack import PG_DSN, dapr_headers, topic_messages

TERMINAL = ("COMPLETED", "FAILED")
PUBLISH = "http://127.0.0.1:3500/v1.0/publish/pubsub"  # the gateway's sidecar
TELEMETRY = "http://127.0.0.1:3500/v1.0/invoke/telemetry/method"
DEVICE = "hp-0005"  # the device the numbered telemetry batches are readings of


def forecast_ok(client: httpx.Client, device: str = "hp-0001") -> bool:
    """A one-hour forecast served (wait=true) now."""
    try:
        return client.post("/forecast/intraday", params={"wait": "true"},
                           json={"device_id": device, "horizon_hours": 1}, timeout=30).status_code == 200
    except httpx.HTTPError:
        return False


class Traffic:
    """Forecast requests (wait=false: accepted, then followed to the end) at
    about `rate` a second from a background thread, each a forecast id of
    its own: devices in turn, starts `offset_hours` back, stepping by 15 min
    (each fault its own hours, so no two share a forecast id)."""

    def __init__(self, client: httpx.Client, devices: list[str], offset_hours: int, rate: float = 4.0,
                 price_every: float = 3.0):
        self.client, self.devices, self.rate, self.price_every = client, devices, rate, price_every
        self.price_base = 100.005 + offset_hours  # each fault's ticks their own prices
        self.base = floor_quarter_hour(datetime.now(UTC)) - timedelta(hours=offset_hours)
        self.accepted: dict[str, dict] = {}  # forecast_id -> body
        self.refused: list[tuple[int, str]] = []  # answers other than 202/200 while the fault lasts
        self.prices: list[float] = []  # price ticks the gateway accepted
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True),
                         threading.Thread(target=self._tick, daemon=True)]
        self._n = 0

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _tick(self) -> None:
        """Price ticks, each a move past the rule's threshold (the price
        swings by 40 EUR/MWh): each one a fleet forecast and a decision."""
        n = 0
        while not self._stop.wait(self.price_every):
            price = round(self.price_base + 40.0 * (n % 2) + n * 0.01, 3)  # each decision names its tick
            n += 1
            try:
                r = self.client.post("/prices", json={"price_eur_mwh": price,
                                                      "at": datetime.now(UTC).isoformat()}, timeout=30)
            except httpx.HTTPError as e:
                self.refused.append((0, str(e)[:200]))
                continue
            if r.status_code == 202:
                self.prices.append(price)
            else:
                self.refused.append((r.status_code, r.text[:200]))

    def _run(self) -> None:
        while not self._stop.is_set():
            device = self.devices[self._n % len(self.devices)]
            start = self.base + timedelta(minutes=15 * (self._n // len(self.devices)))
            self._n += 1
            body = {"device_id": device, "forecast_start": isoformat_z(start), "horizon_hours": 4,
                    "requested_by": "faults"}
            self.submit(body)
            self._stop.wait(1.0 / self.rate)

    def submit(self, body: dict) -> None:
        try:
            r = self.client.post("/forecast/intraday", json=body, timeout=30)
        except httpx.HTTPError as e:
            self.refused.append((0, str(e)[:200]))
        else:
            if r.status_code in (200, 202):
                self.accepted[r.json()["forecast_id"]] = body
            else:
                self.refused.append((r.status_code, r.text[:200]))

    def settle(self, timeout: float = 180.0, lost: bool = False) -> dict[str, dict]:
        """Every accepted forecast's final view, waiting until each one is
        COMPLETED or FAILED (or the timeout: those stay as last seen). With
        `lost`, NOT_FOUND is final too (its workflow state is gone)."""
        final = TERMINAL + (("NOT_FOUND",) if lost else ())
        views: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        pending = set(self.accepted)
        while pending and time.monotonic() < deadline:
            for fid in sorted(pending):
                try:
                    r = self.client.get(f"/forecast/{fid}", timeout=10)
                except httpx.HTTPError:
                    continue
                if r.status_code in (200, 404, 500) and r.json().get("status") in final:
                    views[fid] = r.json()
                    pending.discard(fid)
                elif r.status_code in (200, 202, 404, 500):
                    views[fid] = r.json()
            if pending:
                time.sleep(1.0)
        return views


def check_forecast_books(views: dict[str, dict], accepted: dict[str, dict], pg: psycopg.Connection,
                         rds: redis.Redis, streams_rolled_back: bool = False) -> dict:
    """The invariants of the forecast path, whatever the fault:
    every accepted request ended COMPLETED or FAILED with a reason; each
    completed forecast has exactly one audit row with all its intervals and
    is on `forecasts` (a repeat delivery carries the same numbers, so a
    consumer deduplicating on forecast_id processes it once); a failed one
    has no audit row and no half-written results. Returns the counts."""
    ids = sorted(accepted)
    unfinished = {fid: views.get(fid, {}).get("status") for fid in ids
                  if views.get(fid, {}).get("status") not in TERMINAL}
    assert not unfinished, f"accepted forecasts that never finished: {unfinished}"
    failed = {fid: views[fid] for fid in ids if views[fid]["status"] == "FAILED"}
    for fid, view in failed.items():
        assert view.get("error"), f"{fid} FAILED without a reason: {view}"
    completed = [fid for fid in ids if views[fid]["status"] == "COMPLETED"]

    rows = dict(pg.execute(
        "SELECT r.request_id, coalesce(cardinality(s.p50), 0) FROM forecast_requests r "
        "LEFT JOIN forecast_series s USING (request_id) WHERE r.request_id = ANY(%s)", (ids,)).fetchall())
    for fid in completed:
        expected = round(accepted[fid]["horizon_hours"] * 4)
        assert rows.get(fid) == expected, f"{fid}: {rows.get(fid)} audited intervals, not {expected}"
    audited_failures = sorted(set(failed) & set(rows))
    assert not audited_failures, f"FAILED forecasts with an audit row: {audited_failures}"

    messages = [m for m in topic_messages(rds, "forecasts") if m.get("forecast_id") in accepted]
    by_id: dict[str, list[dict]] = {}
    for m in messages:
        by_id.setdefault(m["forecast_id"], []).append(m)
    missing = [fid for fid in completed if fid not in by_id]
    # Locally the streams live in the state store's Redis: rolled back to an
    # older snapshot, they lose what was published since (in production
    # pub/sub is another service, and a snapshot of the state store keeps it).
    assert streams_rolled_back or not missing, f"completed forecasts never published: {missing}"
    for fid, copies in by_id.items():
        numbers = {json.dumps([c[k] for k in ("mean", "p10", "p50", "p90")]) for c in copies}
        assert len(numbers) == 1, f"{fid} published twice with different numbers"
    repeats = Counter({fid: len(c) - 1 for fid, c in by_id.items() if len(c) > 1})
    audit_rows = pg.execute("SELECT count(*) FROM forecast_requests WHERE request_id = ANY(%s)",
                            (ids,)).fetchone()[0]
    return {"accepted": len(ids), "completed": len(completed), "failed": len(failed),
            "lost": len(ids) - len(completed) - len(failed),
            "duplicated_audit_rows": audit_rows - len(rows), "repeat_deliveries": sum(repeats.values()),
            "messages_rolled_back": len(missing),
            "failure_reasons": sorted({v["error"][:120] for v in failed.values()})}


def settle_trading(rule: Callable[[], dict | None], timeout: float = 180.0) -> dict:
    """The trading rule once no decision is pending (every price tick taken
    is decided or was not a move), or as last seen at the timeout."""
    deadline, state = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        state = rule()
        if state is not None and not state["pending"]:
            return state
        time.sleep(1.0)
    return state or {}


def check_trading_books(pg: psycopg.Connection) -> dict:
    """Each decision one row, and the positions exactly the sum of every
    decision's orders (a decision recorded twice, or its orders applied
    twice, breaks the sum)."""
    decisions = pg.execute("SELECT count(*), count(DISTINCT decision_id) FROM trade_decisions").fetchone()
    assert decisions[0] == decisions[1]
    drift = pg.execute(
        """WITH ordered AS (
               SELECT (o->>'interval_start')::timestamptz AS interval_start,
                      sum((o->>'order_mw')::float8) AS total
               FROM trade_decisions, jsonb_array_elements(orders) o GROUP BY 1)
           SELECT count(*) FROM ordered FULL JOIN positions p USING (interval_start)
           WHERE abs(coalesce(ordered.total, 0) - coalesce(p.position_mw, 0)) > 1e-4""").fetchone()[0]
    assert drift == 0, f"{drift} delivery intervals whose position is not the sum of the decisions' orders"
    return {"decisions": decisions[0]}


def record_figures(stack: dict, fault: str, figures: dict) -> None:
    """Add one fault's figures to the test stack's faults.json."""
    path: Path = stack["data_dir"] / "faults.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    table[fault] = figures
    path.write_text(json.dumps(table, indent=2, sort_keys=True))


def decision_id(message_id: str) -> str:
    return "td-" + hashlib.sha256(message_id.encode()).hexdigest()[:16]


class Numbered:
    """Price ticks (through the gateway, each with its tick id) and
    telemetry batches (on the gateway's sidecar, each with its batch id),
    `rate` of each a second from a background thread, numbered from 0."""

    def __init__(self, stack: dict, gateway: httpx.Client, day: int, rate: float = 2.0):
        self.stack, self.gateway, self.rate = stack, gateway, rate
        self.run = uuid.uuid4().hex[:6]
        self.base = datetime(2026, 1, 10, tzinfo=UTC) + timedelta(days=day)  # a day of readings per case
        self.ticks: list[str] = []  # message ids the gateway accepted
        self.batches: list[str] = []  # batch ids the sidecar accepted
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._n = 0

    def __enter__(self) -> Numbered:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        with httpx.Client(headers=dapr_headers(self.stack), timeout=30) as sidecar:
            while not self._stop.wait(1.0 / self.rate):
                n, self._n = self._n, self._n + 1
                tick = f"{self.run}-p{n}"
                try:
                    r = self.gateway.post("/prices", json={"price_eur_mwh": 50.0 + (n % 7) * 0.01,
                                                           "tick_id": tick}, timeout=30)
                    if r.status_code == 202:
                        self.ticks.append(f"tick-{tick}")
                    else:
                        self.refused += 1
                    batch = f"{self.run}-t{n}"
                    at = self.base + timedelta(minutes=n)
                    r = sidecar.post(f"{PUBLISH}/telemetry", json={"batch_id": batch, "readings": [
                        {"device_id": DEVICE, "timestamp": at.isoformat(), "power": 1.0 + n / 1000}]})
                    if r.status_code == 204:
                        self.batches.append(batch)
                    else:
                        self.refused += 1
                except httpx.HTTPError:
                    self.refused += 1


def _dead(conn: psycopg.Connection, topic: str, ids: list[str]) -> set[str]:
    return {r[0] for r in conn.execute("SELECT message_id FROM dead_letters WHERE topic = %s"
                                       " AND message_id = ANY(%s)", (topic, ids)).fetchall()}


def _ticks_taken(conn: psycopg.Connection, ids: list[str]) -> set[str]:
    by_decision = {decision_id(i): i for i in ids}
    rows = conn.execute("SELECT tick_id FROM price_ticks WHERE tick_id = ANY(%s)",
                        (list(by_decision),)).fetchall()
    return {by_decision[r[0]] for r in rows}


def _batches_taken(sidecar: httpx.Client, ids: list[str], known: set[str]) -> set[str]:
    for batch in ids:
        if batch not in known:
            try:
                if sidecar.get(f"{TELEMETRY}/ingest/{batch}", timeout=10).status_code == 200:
                    known.add(batch)
            except httpx.HTTPError:
                pass
    return known


def account_messages(stack: dict, ticks: list[str], batches: list[str], day: datetime | None = None,
             timeout: float = 240.0) -> dict:
    """Wait until every id is taken or dead-lettered (or the timeout);
    the counts, and how long the books took to close."""
    t0, taken_batches = time.monotonic(), set()
    with psycopg.connect(PG_DSN, autocommit=True) as conn, \
            httpx.Client(headers=dapr_headers(stack)) as sidecar:
        while True:
            ticks_taken, ticks_dead = _ticks_taken(conn, ticks), _dead(conn, "prices", ticks)
            _batches_taken(sidecar, batches, taken_batches)
            batches_dead = _dead(conn, "telemetry", batches)
            open_ticks = set(ticks) - ticks_taken - ticks_dead
            open_batches = set(batches) - taken_batches - batches_dead
            if not (open_ticks or open_batches) or time.monotonic() - t0 > timeout:
                break
            time.sleep(2.0)
        readings = [] if day is None else sidecar.get(f"{TELEMETRY}/devices/{DEVICE}/readings", params={
            "start": day.isoformat(), "end": (day + timedelta(hours=23, minutes=59)).isoformat()}).json()
    return {"ticks": len(ticks), "ticks_taken": len(ticks_taken), "ticks_dead_lettered": len(ticks_dead),
            "ticks_both": len(ticks_taken & ticks_dead), "ticks_lost": sorted(open_ticks)[:10],
            "batches": len(batches), "batches_taken": len(taken_batches),
            "batches_dead_lettered": len(batches_dead), "batches_lost": sorted(open_batches)[:10],
            "readings_stored": readings, "seconds_to_close_books": round(time.monotonic() - t0, 1)}
