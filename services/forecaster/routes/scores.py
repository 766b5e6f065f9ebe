"""Live accuracy: published forecasts scored (services/forecaster/scoring.py)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from clients.audit_pool import audit_pool
from clients.models import catalog
from intraday.audit import scores as audit_scores
from intraday.forecasting import baseline
from services.forecaster import scoring

log = logging.getLogger("forecaster")
router = APIRouter()


# -- live accuracy: published forecasts scored (services/forecaster/scoring.py)

# Every replica re-reads the live scores for its gauges, and its models'
# scored days for their bands, this often.
LIVE_GAUGES_SECONDS = 300


async def live_gauges_loop() -> None:
    while True:
        try:
            await catalog.rescore()
            await run_in_threadpool(scoring.refresh)
        except Exception:  # the audit store away for a while: the gauges keep their values
            log.warning("reading the live scores failed", exc_info=True)
        await asyncio.sleep(LIVE_GAUGES_SECONDS)


@router.post("/scores/run")
async def run_scoring() -> dict:
    """Score the published forecasts that are due now (what the hourly
    Dapr job does): how many were due and scored, and how long it took."""
    out = await run_in_threadpool(scoring.run)
    await catalog.rescore()
    return out


@router.post(f"/job/{scoring.SCORING_JOB}")
async def scheduled_scoring() -> dict:
    """The scoring job's trigger (Dapr's scheduler calls it); a failure is
    logged and the next run takes up what is left."""
    try:
        out = await run_in_threadpool(scoring.run)
        await catalog.rescore()
    except Exception as e:  # acknowledged either way: the next run retries what is due
        log.exception("scoring published forecasts failed")
        return {"error": str(e)}
    log.info("scored %s of %s published forecasts due", out.get("scored"), out.get("due"))
    return out


@router.get("/scores")
async def live_scores() -> dict:
    """The last 7 delivery days' live scores (per day, the week per level
    and horizon block, alerts) and the served model's held-out scores from
    its training, in the same measures."""
    promoted = await asyncio.to_thread(catalog.store.promoted) or baseline.MODEL_VERSION

    def read() -> dict:
        with audit_pool().connection() as conn:
            return {"model_version": promoted, "live": audit_scores.summary(conn, datetime.now(UTC).date()),
                    "training": audit_scores.training_scores(conn, promoted)}
    return await run_in_threadpool(read)


