"""Live accuracy, the forecaster's part: published forecasts scored against
the readings that came after them (intraday/forecasting/live.py).

A run (the Dapr job `intraday-scoring`, hourly; `POST /scores/run`) takes
the forecasts whose last interval ended `scoring_lag_hours` ago or more and
that are not scored, oldest first, reads their numbers from the audit store
and their devices' readings from the telemetry service (the same
`POST /windows` a fleet forecast reads), and records the scores once per
forecast (sql/postgres/010_forecast_scores.sql). A run is bounded (at most
`LIMIT` fleet forecasts and as many device forecasts); the next continues.
Readings that come later than the lag are not waited for: cells without
one are counted as missing, not scored.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from clients import metrics, sidecar
from clients.audit_pool import audit_pool
from intraday.audit import db, scores
from intraday.config import get_settings
from intraday.forecasting import fallback, live, recalibration

SCORING_JOB = "intraday-scoring"
LIMIT = 200  # forecasts of each kind per run
WINDOW_CHUNK = 1000  # devices per telemetry read, as a fleet shard reads them

_running = threading.Lock()


def run(now: datetime | None = None) -> dict:
    """Score what is due at `now`; one run at a time in this process (two
    replicas' runs write each forecast once: `scores.record`)."""
    settings = get_settings()
    now = now or datetime.now(UTC)
    if not _running.acquire(blocking=False):
        return {"running": True, "scored": 0}
    try:
        started = time.perf_counter()
        with audit_pool().connection() as conn:
            items = scores.due(conn, until=now - timedelta(hours=settings.scoring_lag_hours),
                               since=now - timedelta(days=settings.scoring_lookback_days), limit=LIMIT)
        scored = {"fleet": 0, "device": 0}
        cells = 0
        for item in items:
            sums, missing, day = score(item)
            with audit_pool().connection() as conn:
                if scores.record(conn, item, missing, sums, day):
                    scored[item.kind] += 1
                    metrics.FORECASTS_SCORED.labels(item.kind).inc()
                    cells += sum(s.cells for s in sums.get("device", {}).values())
        refresh(now)
        return {"running": False, "due": len(items), "scored": sum(scored.values()), "by_kind": scored,
                "device_cells": cells, "seconds": round(time.perf_counter() - started, 3)}
    finally:
        _running.release()


def score(item: scores.Due) -> tuple[dict, int, recalibration.Day | None]:
    """A forecast's sums per level, its cells with a forecast but no
    reading, and, for a fleet forecast of a model made after its training
    data, its scores for that model's rolling recalibration."""
    with audit_pool().connection() as conn:
        recorded = db.read_forecasts(conn, item.forecast_ids)
    shape = (len(item.forecast_ids), item.horizon)
    p10, p50, p90, mean = (np.full(shape, np.nan) for _ in range(4))
    for k, fid in enumerate(item.forecast_ids):
        f = recorded.get(fid)
        if f is not None:
            n = min(len(f.p50), item.horizon)
            p10[k, :n], p50[k, :n], p90[k, :n], mean[k, :n] = f.p10[:n], f.p50[:n], f.p90[:n], f.mean[:n]
    actual = np.vstack([sidecar.fetch_windows(item.device_ids[i:i + WINDOW_CHUNK], item.forecast_start,
                                              item.end).values
                        for i in range(0, len(item.device_ids), WINDOW_CHUNK)])
    sums = {"device": live.score(item.forecast_start, actual, p10, p50, p90, mean)}
    day = None
    if item.portfolio is not None and item.portfolio["mean"]:
        total = live.portfolio_actual(actual, mean)
        totals = scores.as_arrays(item.portfolio)
        sums["portfolio"] = live.score(item.forecast_start, total, *totals)
        scaled = item.recalibration
        if scaled and item.forecast_start >= datetime.fromisoformat(scaled["trained_to"]):
            # The model's own bands only: a fallback forecast's band is not one.
            own = np.array([f is not None and not fallback.made_by_fallback(f.notes)
                            for f in (recorded.get(fid) for fid in item.forecast_ids)])
            day = recalibration.published_day(
                item.forecast_start.date().isoformat(), scaled, np.where(own[:, None], actual, np.nan),
                p10, p50, p90, total, (totals[0], totals[1], totals[2]), len(item.device_ids))
    missing = int(np.sum(~np.isnan(mean) & np.isnan(actual)))
    return sums, missing, day


def refresh(now: datetime | None = None) -> dict:
    """Set the live gauges from the audit store: the last week's live
    scores (`scores.summary`)."""
    with audit_pool().connection() as conn:
        out = scores.summary(conn, (now or datetime.now(UTC)).date())
    metrics.set_live(out)
    return out
