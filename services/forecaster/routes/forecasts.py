"""Single-device forecasts: POST /forecasts (batched under load), GET
/forecasts/{fid} (a fleet forecast's too), GET /batching."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from clients import fleet_list, metrics
from clients.models import catalog
from intraday.config import get_settings
from intraday.errors import UnknownDevice
from intraday.forecasting import engine
from intraday.forecasting.request import check_forecast_start, forecast_id, horizon_intervals
from intraday.timeutil import floor_quarter_hour, isoformat_z, next_quarter_hour
from services.forecaster import instances
from services.forecaster.batching import Batcher
from services.forecaster.instances import (
    finished,
    read_recorded,
    read_recorded_fleet,
    read_recorded_many,
    read_state,
    start_once,
    starting_lock,
    status_code,
    view_of,
    wait_seconds,
)
from services.http import FastJSONResponse
from workflows.contracts import ForecastJob, ForecastRequest
from workflows.fleet import BATCH_WORKFLOW_NAME
from workflows.forecast import WORKFLOW_NAME

log = logging.getLogger("forecaster")
router = APIRouter()
batcher: Batcher = None  # type: ignore[assignment]  # set by the app's lifespan


@router.post("/forecasts")
async def start_forecast(
    request: ForecastRequest,
    wait: bool = Query(False, description="return the finished forecast"),
    timeout: float = Query(60.0, gt=0, le=120),
) -> FastJSONResponse:
    settings = get_settings()
    now = datetime.now(UTC)
    start = check_forecast_start(request.forecast_start or next_quarter_hour(now), now)
    horizon = horizon_intervals(request.horizon_hours, settings.max_horizon_hours)
    if not await run_in_threadpool(fleet_list.device_exists, request.device_id):
        raise UnknownDevice(request.device_id, fleet_list.retired_devices.get(request.device_id))

    # The served model is part of the forecast's identity: the same request
    # under a newly promoted model is a new forecast, not a repeat.
    version = engine.model_version(await catalog.current())
    fid = forecast_id(request.device_id, start, horizon, version)
    job = ForecastJob(
        forecast_id=fid,
        device_id=request.device_id,
        forecast_start=isoformat_z(start),
        horizon_intervals=horizon,
        model_version=version,
        requested_by=request.requested_by,
        requested_at=isoformat_z(now),
    )
    recorded = await run_in_threadpool(read_recorded, fid)
    if recorded is not None:  # made before (its workflow instance may be purged)
        return FastJSONResponse({"forecast_id": fid, "status": "COMPLETED", "result": recorded,
                                 "created": False}, status_code=200)
    if wait:  # batched with whatever else is asked for now (a lone request runs at once)
        try:
            view = await asyncio.wait_for(batcher.submit(fid, job.model_dump()), timeout)
        except TimeoutError:
            view = {"forecast_id": fid, "status": "RUNNING", "created": True}
        return FastJSONResponse(view, status_code=status_code(view))
    async with starting_lock(fid):
        created = await run_in_threadpool(start_once, fid, job)
    return FastJSONResponse({"forecast_id": fid, "status": "SCHEDULED" if created else "EXISTS",
                             "created": created}, status_code=202)


async def run_single(fid: str, job: dict) -> dict:
    """One device's forecast workflow (through its DeviceActor), waited for."""
    with metrics.FORECAST_SECONDS.labels("single").time(), metrics.IN_FLIGHT.labels("single") \
            .track_inprogress():
        async with starting_lock(fid):
            created = await run_in_threadpool(start_once, fid, ForecastJob(**job))
        state = await run_in_threadpool(
            read_state, instances.client.wait_for_workflow_completion, fid, fetch_payloads=True,
            timeout_in_seconds=wait_seconds())
    await finished(WORKFLOW_NAME, fid, state)
    view = view_of(fid, state)
    if view["status"] == "NOT_FOUND" and (recorded := await run_in_threadpool(read_recorded, fid)):
        view = {"forecast_id": fid, "status": "COMPLETED", "result": recorded}  # already purged
    return {**view, "created": created}


def batch_group(job: dict) -> tuple:
    """Requests batched together share these (a batch is one shard)."""
    return job["forecast_start"], job["horizon_intervals"], job["model_version"], job["requested_by"]


async def run_batch(take: list[tuple[str, dict]]) -> dict[str, dict]:
    """Many devices' forecasts as one batch workflow instance (a fleet shard
    without the portfolio), waited for; each result read from the audit
    store. The instance id comes from the forecast ids it makes."""
    began = time.monotonic()
    first = take[0][1]
    fids = sorted(fid for fid, _ in take)
    bid = "bt-" + hashlib.sha256("\n".join(fids).encode()).hexdigest()[:16]
    start = datetime.fromisoformat(first["forecast_start"])
    now = datetime.now(UTC)
    payload = {**{k: first[k] for k in ("forecast_start", "horizon_intervals", "model_version",
                                        "requested_by")},
               "device_ids": [job["device_id"] for _, job in take],
               "requested_at": min(job["requested_at"] for _, job in take),
               "data_end": isoformat_z(min(start, floor_quarter_hour(now))), "shard": 0}
    with metrics.FORECAST_SECONDS.labels("batch").time(), metrics.IN_FLIGHT.labels("batch") \
            .track_inprogress():
        async with starting_lock(bid):
            await run_in_threadpool(start_once, bid, payload, BATCH_WORKFLOW_NAME)
        state = await run_in_threadpool(
            read_state, instances.client.wait_for_workflow_completion, bid, fetch_payloads=True,
            timeout_in_seconds=wait_seconds())
    await finished(BATCH_WORKFLOW_NAME, bid, state)
    view = view_of(bid, state)
    outcome = view.get("result") or {}
    log.info("batch %s of %d: %s in %.3f s; shard steps %s", bid, len(take), view["status"],
             time.monotonic() - began, outcome.get("seconds"))
    new, failed = set(outcome.get("new", ())), outcome.get("failed", {})
    recorded = await run_in_threadpool(read_recorded_many, fids)
    views = {}
    for fid, job in take:
        if fid in recorded:
            views[fid] = {"forecast_id": fid, "status": "COMPLETED", "result": recorded[fid],
                          "created": fid in new}
        elif job["device_id"] in failed:
            views[fid] = {"forecast_id": fid, "status": "FAILED", "error": failed[job["device_id"]],
                          "detail": failed[job["device_id"]], "created": False}
        else:  # the batch did not finish (or failed as a whole): say so per request
            error = view.get("error", f"batch {bid}: {view['status']}")
            views[fid] = {"forecast_id": fid, "status": view["status"] if view["status"] != "COMPLETED"
                          else "FAILED", "error": error, "detail": error, "created": False}
    return views


@router.get("/forecasts/{fid}")
async def get_forecast(
    fid: str,
    table: bool = Query(False, description="a fleet forecast's full quantile table"),
) -> FastJSONResponse:
    """A finished forecast from the audit store; one still running (or
    failed, kept a day) from its workflow instance."""
    recorded = await run_in_threadpool(read_recorded_fleet, fid, table) if fid.startswith("fl-") \
        else await run_in_threadpool(read_recorded, fid)
    if recorded is not None:
        return FastJSONResponse({"forecast_id": fid, "status": "COMPLETED", "result": recorded})
    state = await run_in_threadpool(read_state, instances.client.get_workflow_state, fid,
                                    fetch_payloads=True)
    view = view_of(fid, state)
    return FastJSONResponse(view, status_code=status_code(view))


@router.get("/batching")
async def batching() -> dict:
    """What the dynamic batcher has done: requests, batches and their sizes."""
    return {**batcher.stats.to_dict(), "queued": batcher.queued()}


