"""Trading service: subscribes to `prices`; asks its TradingRuleActor whether
a price is a move to act on; if so, asks the forecaster (service invocation)
for one fleet forecast of the portfolio, orders the gap between the
portfolio's cost-optimal quantile and the current position, records the
decision in PostgreSQL and publishes it on `orders`.

The rule's memory lives in the actor (Redis), not in this process: a restart
does not forget the reference price, and replicas share it. A decision's id
comes from the price message's id, so a redelivered message records and
moves positions once."""

from __future__ import annotations

import hashlib
import logging
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import numpy as np
from dapr.ext.fastapi import DaprActor
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import ConnectionPool

from actors.state import StateSerializer
from actors.trading_rule import ACTOR_TYPE, TradingRuleActor
from clients import metrics, sidecar, tracing
from intraday import failpoints
from intraday.audit import db
from intraday.config import get_settings
from intraday.forecasting.types import PortfolioForecast
from intraday.timeutil import QUARTER_HOUR, isoformat_z, next_quarter_hour, to_utc
from intraday.trading.rules import check_tick_time, decide
from services.http import install_common

log = logging.getLogger("trading")
RULE_ID = "portfolio"  # one rule (one actor) for the portfolio this service trades
FLEET_TIMEOUT_SECONDS = 120
pool: ConnectionPool


@asynccontextmanager
async def lifespan(_: FastAPI):
    global pool
    settings = get_settings()
    pool = ConnectionPool(settings.pg_dsn, min_size=1, max_size=4, open=True,
                          kwargs={"autocommit": True})
    await actor.register_actor(TradingRuleActor, message_serializer=StateSerializer(),
                               state_serializer=StateSerializer())
    yield
    pool.close()


app = FastAPI(title="intraday trading", lifespan=lifespan)
actor = DaprActor(app)
install_common(app, "trading")


@app.get("/dapr/subscribe")
async def subscriptions() -> list[dict]:
    # A message this handler refuses (DROP) or fails until the sidecar's
    # retries run out goes to `dead-letter` (services/gateway/dead_letters.py).
    return [{"pubsubname": sidecar.PUBSUB, "topic": "prices", "route": "/prices",
             "deadLetterTopic": sidecar.DEAD_LETTER_TOPIC}]


def _portfolio_devices() -> list[str] | None:
    """The devices this service trades (None: the whole fleet)."""
    configured = get_settings().portfolio
    if configured == "all":
        return None
    return sorted({d.strip() for d in configured.split(",") if d.strip()})


async def _fleet_forecast(start: datetime) -> dict:
    """The portfolio's forecast from `start`: one fleet forecast (one
    workflow), with the full quantile table the target quantile is read from."""
    body: dict = {"forecast_start": isoformat_z(start), "requested_by": "trading"}
    if (devices := _portfolio_devices()) is not None:
        body["devices"] = devices
    r = await sidecar.invoke(
        "forecaster", "POST", "fleet-forecasts",
        params={"wait": "true", "table": "true", "timeout": FLEET_TIMEOUT_SECONDS},
        json=body, timeout=FLEET_TIMEOUT_SECONDS + 10,
    )
    if r.status_code != 200:
        raise RuntimeError(f"fleet forecast from {isoformat_z(start)} failed: {r.status_code} {r.text[:300]}")
    return r.json()["result"]


@app.post("/prices")
async def on_price(request: Request) -> dict:
    failpoints.reach(failpoints.TRADING_ON_PRICE)
    event = await request.json()
    data = event.get("data", event)
    try:
        price = float(data["price_eur_mwh"])
        at = to_utc(datetime.fromisoformat(data["at"])) if data.get("at") else datetime.now(UTC)
        if not np.isfinite(price):
            raise ValueError("price is not finite")
        check_tick_time(at, datetime.now(UTC))
    except (KeyError, TypeError, ValueError) as e:
        log.warning("dropping malformed price message %s: %s", event.get("id"), e)
        metrics.PRICE_TICKS.labels("malformed").inc()
        return {"status": "DROP"}  # redelivery cannot fix a malformed message
    decision_id = "td-" + hashlib.sha256(str(event.get("id", at.isoformat())).encode()).hexdigest()[:16]
    verdict = await sidecar.call_actor_async(ACTOR_TYPE, RULE_ID, "Observe", {
        "decision_id": decision_id, "price_eur_mwh": price, "at": isoformat_z(at)})
    outcome = "move" if verdict["trade"] else verdict.get("state", "no_move")
    metrics.PRICE_TICKS.labels(outcome).inc()
    await run_in_threadpool(_record_tick, decision_id, at, price, str(data.get("market") or "DE-intraday"),
                            outcome)
    if not verdict["trade"]:
        return {"status": "SUCCESS"}
    # Decide before acknowledging: if this process dies mid-way, the message is
    # redelivered, the actor hands back the pending decision, and its id keeps
    # the recorded decision single. So does it for a redelivery that arrives
    # while this delivery still runs (the broker's processing timeout passed):
    # both decide, one records, the other finds it recorded.
    await run_in_threadpool(failpoints.reach, failpoints.TRADING_BEFORE_DECISION)
    with metrics.DECISION_SECONDS.time():
        await _decide(decision_id, price, verdict.get("reference_price"), at)
    failpoints.reach(failpoints.TRADING_AFTER_DECISION)
    await sidecar.call_actor_async(ACTOR_TYPE, RULE_ID, "Decided", {"decision_id": decision_id})
    return {"status": "SUCCESS"}


def _record_tick(tick_id: str, at: datetime, price: float, market: str, verdict: str) -> None:
    """The feed as it came, for the dashboard and the audit: a failure here
    fails the message, which is redelivered (the row is written once)."""
    with pool.connection() as conn:
        db.record_tick(conn, tick_id, at, price, market[:64], verdict)


async def _decide(decision_id: str, price: float, reference: float | None, at: datetime) -> None:
    start = next_quarter_hour(at)
    fleet = await _fleet_forecast(start)
    total = PortfolioForecast.from_dict(fleet["portfolio"],
                                        tuple(d["device_id"] for d in fleet["device_forecasts"]))
    forecast_ids = [d["forecast_id"] for d in fleet["device_forecasts"]]
    quantile = get_settings().target_quantile
    starts = [start + i * QUARTER_HOUR for i in range(total.horizon_intervals)]
    trace_id = tracing.current_trace_id()  # the price message's trace, from the gateway to `orders`

    def record() -> tuple[bool, dict]:
        with pool.connection() as conn, conn.transaction():
            # One decision at a time across replicas: each reads the position
            # the one before it left.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('trade_decisions'))")
            decision = decide(total, np.array(db.positions(conn, starts)), quantile)
            inserted = db.record_decision(
                conn, decision_id, decision, at, price, reference, forecast_ids,
                fleet["forecast_id"], {"portfolio_forecast_id": fleet["forecast_id"], **total.to_dict()},
                trace_id,
            )
            recorded = db.read_decision(conn, decision_id)
            assert recorded is not None  # written above, in this transaction
            return inserted, recorded

    inserted, message = await run_in_threadpool(record)
    # Under the decision's id: a decision published again (its price message
    # redelivered) is one message to the consumers, who deduplicate on it.
    await sidecar.publish_async("orders", message, message_id=decision_id)
    metrics.TRADE_DECISIONS.labels("new" if inserted else "repeat").inc()
    if inserted:
        metrics.ORDER_MWH.labels("buy").inc(message["buy_mwh"])
        metrics.ORDER_MWH.labels("sell").inc(message["sell_mwh"])
    log.info("decision %s (new=%s) on %s: buy %.4f MWh, sell %.4f MWh", decision_id, inserted,
             fleet["forecast_id"], message["buy_mwh"], message["sell_mwh"])


@app.get("/rule")
async def rule_state() -> dict:
    """The rule's memory: reference price, last trigger, recent decisions."""
    return await sidecar.call_actor_async(ACTOR_TYPE, RULE_ID, "GetState", {})


@app.get("/decisions")
async def decisions(limit: int = 20) -> list[dict]:
    def query() -> list[dict]:
        with pool.connection() as conn:
            rows = conn.execute(
                "SELECT decision_id, decided_at, price_eur_mwh, buy_mwh, sell_mwh, target_quantile,"
                " portfolio_forecast_id FROM trade_decisions ORDER BY decided_at DESC LIMIT %s", (limit,),
            ).fetchall()
        return [dict(zip(("decision_id", "decided_at", "price_eur_mwh", "buy_mwh", "sell_mwh",
                          "target_quantile", "portfolio_forecast_id"), r, strict=True)) for r in rows]

    return await run_in_threadpool(query)
