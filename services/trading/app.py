"""Trading service: subscribes to `prices`; when a move warrants it, asks the
forecaster (service invocation) for the portfolio's forecasts, decides the
orders against the current position, records the decision in PostgreSQL and
publishes it on `orders`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import ConnectionPool

from intraday.audit import db
from intraday.config import get_settings
from intraday.timeutil import isoformat_z, next_quarter_hour, to_utc
from intraday.trading.rules import PriceMoveRule, decide
from services import sidecar
from services.http import install_common

log = logging.getLogger("trading")
FORECAST_CONCURRENCY = 16
pool: ConnectionPool
rule: PriceMoveRule
_decide_lock = asyncio.Lock()


@asynccontextmanager
async def lifespan(_: FastAPI):
    global pool, rule
    settings = get_settings()
    pool = ConnectionPool(settings.pg_dsn, min_size=1, max_size=4, open=True,
                          kwargs={"autocommit": True})
    rule = PriceMoveRule(settings.price_move_threshold_eur_mwh,
                         timedelta(seconds=settings.price_debounce_seconds))
    yield
    pool.close()


app = FastAPI(title="intraday trading", lifespan=lifespan)
install_common(app, "trading")


@app.get("/dapr/subscribe")
async def subscriptions() -> list[dict]:
    return [{"pubsubname": sidecar.PUBSUB, "topic": "prices", "route": "/prices"}]


async def _portfolio() -> list[str]:
    configured = get_settings().portfolio
    if configured != "all":
        return [d.strip() for d in configured.split(",") if d.strip()]
    r = await sidecar.invoke("telemetry", "GET", "devices")
    r.raise_for_status()
    return [d["device_id"] for d in r.json()]


async def _forecast(device_id: str, start: datetime, sem: asyncio.Semaphore) -> dict:
    async with sem:
        r = await sidecar.invoke(
            "forecaster", "POST", "forecasts",
            params={"wait": "true"},
            json={"device_id": device_id, "forecast_start": isoformat_z(start),
                  "requested_by": "trading"},
            timeout=70,
        )
    if r.status_code != 200:
        raise RuntimeError(f"forecast for {device_id} failed: {r.status_code} {r.text[:300]}")
    return r.json()["result"]


@app.post("/prices")
async def on_price(request: Request) -> dict:
    event = await request.json()
    data = event.get("data", event)
    try:
        price = float(data["price_eur_mwh"])
        at = to_utc(datetime.fromisoformat(data["at"])) if data.get("at") else datetime.now(UTC)
        if not np.isfinite(price):
            raise ValueError("price is not finite")
    except (KeyError, TypeError, ValueError) as e:
        log.warning("dropping malformed price message %s: %s", event.get("id"), e)
        return {"status": "DROP"}  # redelivery cannot fix a malformed message
    reference = rule.reference_price
    if not rule.observe(price, at):
        return {"status": "SUCCESS"}
    # Decide before acknowledging: if this process dies mid-way, the message is
    # redelivered, and the decision id (from the message id) keeps it single.
    decision_id = "td-" + hashlib.sha256(str(event.get("id", at.isoformat())).encode()).hexdigest()[:16]
    async with _decide_lock:
        await _decide(decision_id, price, reference, at)
    return {"status": "SUCCESS"}


async def _decide(decision_id: str, price: float, reference: float | None, at: datetime) -> None:
    start = next_quarter_hour(at)
    devices = await _portfolio()
    sem = asyncio.Semaphore(FORECAST_CONCURRENCY)
    forecasts = await asyncio.gather(*(_forecast(d, start, sem) for d in devices))
    fleet_p50_kw = np.sum([[i["p50"] for i in f["intervals"]] for f in forecasts], axis=0)
    starts = [datetime.fromisoformat(i["interval_start"]) for i in forecasts[0]["intervals"]]

    def record() -> tuple[bool, dict]:
        with pool.connection() as conn:
            decision = decide(start, fleet_p50_kw, np.array(db.positions(conn, starts)))
            inserted = db.record_decision(
                conn, decision_id, decision, at, price, reference,
                [f["forecast_id"] for f in forecasts],
            )
        return inserted, {
            "decision_id": decision_id,
            "decided_at": isoformat_z(at),
            "price_eur_mwh": price,
            "reference_price": reference,
            "forecast_start": isoformat_z(start),
            "buy_mwh": decision.buy_mwh,
            "sell_mwh": decision.sell_mwh,
            "orders": decision.orders(),
        }

    inserted, message = await run_in_threadpool(record)
    await sidecar.publish_async("orders", message)
    log.info("decision %s (new=%s): buy %.4f MWh, sell %.4f MWh", decision_id, inserted,
             message["buy_mwh"], message["sell_mwh"])


@app.get("/decisions")
async def decisions(limit: int = 20) -> list[dict]:
    def query() -> list[dict]:
        with pool.connection() as conn:
            rows = conn.execute(
                "SELECT decision_id, decided_at, price_eur_mwh, buy_mwh, sell_mwh"
                " FROM trade_decisions ORDER BY decided_at DESC LIMIT %s", (limit,),
            ).fetchall()
        return [dict(zip(("decision_id", "decided_at", "price_eur_mwh", "buy_mwh", "sell_mwh"),
                         r, strict=True)) for r in rows]

    return await run_in_threadpool(query)
