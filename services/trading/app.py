"""Trading service: subscribes to `prices`; when a move warrants it, asks the
forecaster (service invocation) for the portfolio's device forecasts, builds
the portfolio forecast from them (the sum of the device means, the band of
the total from the model's portfolio calibration), orders the gap between its
cost-optimal quantile and the current position, records the decision in
PostgreSQL and publishes it on `orders`."""

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
from intraday.forecasting import baseline, engine, modelstore
from intraday.forecasting.model import QuantileModel
from intraday.forecasting.types import Forecast
from intraday.timeutil import QUARTER_HOUR, isoformat_z, next_quarter_hour, to_utc
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


_models: dict[str, QuantileModel] = {}


async def _portfolio() -> dict[str, str]:
    """The portfolio's devices and their locations (their forecast errors
    move together, so the band of the total depends on where they are)."""
    r = await sidecar.invoke("telemetry", "GET", "devices")
    r.raise_for_status()
    fleet = {d["device_id"]: d.get("location") or "" for d in r.json()}
    configured = get_settings().portfolio
    if configured == "all":
        return fleet
    return {d.strip(): fleet.get(d.strip(), "") for d in configured.split(",") if d.strip()}


async def _model(version: str) -> QuantileModel | None:
    """The model whose portfolio calibration bands the total (None for the
    seasonal fallback), from the object store, kept by version."""
    if version == baseline.MODEL_VERSION:
        return None
    if version not in _models:
        artifact = await asyncio.to_thread(modelstore.default_store().artifact, version)
        _models[version] = await asyncio.to_thread(QuantileModel.from_bytes, artifact)
    return _models[version]


def portfolio_forecast_id(forecast_ids: list[str]) -> str:
    """Derived from the device forecasts it sums, like theirs from their inputs."""
    return "pf-" + hashlib.sha256("\n".join(sorted(forecast_ids)).encode()).hexdigest()[:16]


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
    results = await asyncio.gather(*(_forecast(d, start, sem) for d in devices))
    forecasts = [Forecast.from_dict(r) for r in results]
    forecast_ids = [r["forecast_id"] for r in results]
    # One model's calibration bands the total: the version most devices used.
    versions = [f.model_version for f in forecasts]
    model = await _model(max(set(versions), key=versions.count))
    total = engine.forecast_portfolio(model, forecasts, [devices[f.device_id] for f in forecasts])
    portfolio_id = portfolio_forecast_id(forecast_ids)
    quantile = get_settings().target_quantile
    starts = [start + i * QUARTER_HOUR for i in range(total.horizon_intervals)]

    def record() -> tuple[bool, dict]:
        with pool.connection() as conn:
            decision = decide(total, np.array(db.positions(conn, starts)), quantile)
            inserted = db.record_decision(
                conn, decision_id, decision, at, price, reference, forecast_ids,
                portfolio_id, {"portfolio_forecast_id": portfolio_id, **total.to_dict()},
            )
        return inserted, {
            "decision_id": decision_id,
            "decided_at": isoformat_z(at),
            "price_eur_mwh": price,
            "reference_price": reference,
            "forecast_start": isoformat_z(start),
            "portfolio_forecast_id": portfolio_id,
            "model_version": total.model_version,
            "target_quantile": quantile,
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
                "SELECT decision_id, decided_at, price_eur_mwh, buy_mwh, sell_mwh, target_quantile,"
                " portfolio_forecast_id FROM trade_decisions ORDER BY decided_at DESC LIMIT %s", (limit,),
            ).fetchall()
        return [dict(zip(("decision_id", "decided_at", "price_eur_mwh", "buy_mwh", "sell_mwh",
                          "target_quantile", "portfolio_forecast_id"), r, strict=True)) for r in rows]

    return await run_in_threadpool(query)
