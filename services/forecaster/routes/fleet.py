"""Fleet forecasts (POST /fleet-forecasts) and warming (POST /warm)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from datetime import UTC, datetime

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from clients import fleet_list, metrics
from clients.audit_pool import audit_pool
from clients.models import catalog
from clients.sidecar import SidecarError, call_actor_async
from intraday.audit import db as audit_db
from intraday.config import get_settings
from intraday.errors import InvalidRequest
from intraday.forecasting import engine
from intraday.forecasting.request import check_forecast_start, horizon_intervals
from intraday.timeutil import floor_quarter_hour, isoformat_z, next_quarter_hour
from services.forecaster import instances
from services.forecaster.instances import (
    finished,
    read_recorded_fleet,
    read_state,
    require_in_fleet,
    start_once,
    starting_lock,
    status_code,
    view_of,
)
from services.http import FastJSONResponse
from workflows.fleet import FLEET_WORKFLOW_NAME

log = logging.getLogger("forecaster")
router = APIRouter()


class WarmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top: int = Field(100, ge=0, le=100_000, description="most-requested devices of the last `days`")
    days: int = Field(7, ge=1, le=365)
    devices: list[str] = Field(default_factory=list, max_length=100_000)


@router.post("/warm")
async def warm(request: WarmRequest) -> dict:
    """Load the served model into memory (and the state store), and activate
    the DeviceActors of the most-requested devices (and any named), so the
    next burst finds them warm."""
    started = time.monotonic()
    # An actor for a device that is not in the fleet would be state about nothing.
    require_in_fleet(request.devices, await run_in_threadpool(fleet_list.fleet_devices))
    model = await catalog.current()
    top = []
    if request.top:
        def ask() -> list[str]:
            with audit_pool().connection() as conn:
                return audit_db.most_requested(conn, request.days, request.top)

        top = await run_in_threadpool(ask)
    devices = list(dict.fromkeys(request.devices + top))
    start = isoformat_z(next_quarter_hour(datetime.now(UTC)))
    gate = asyncio.Semaphore(16)
    failed: dict[str, str] = {}

    async def prepare(device_id: str) -> None:
        async with gate:
            try:
                await call_actor_async("DeviceActor", device_id, "Prepare", {"forecast_start": start})
            except SidecarError as e:
                failed[device_id] = str(e)

    await asyncio.gather(*(prepare(d) for d in devices))
    return {
        "model_version": engine.model_version(model),
        "model_loads": dict(catalog.loads),
        "devices_warmed": len(devices) - len(failed),
        "failed": failed,
        "seconds": round(time.monotonic() - started, 3),
    }


class FleetForecastRequest(BaseModel):
    """Body of POST /forecast/fleet (gateway) and POST /fleet-forecasts."""

    model_config = ConfigDict(extra="forbid")

    devices: list[str] | None = Field(None, min_length=1, max_length=100_000,
                                      description="default: the whole fleet")
    forecast_start: datetime | None = Field(None, description="UTC quarter-hour; default: the next one")
    horizon_hours: float = Field(24.0, description="multiple of 0.25, at most 48")
    requested_by: str = Field("api", max_length=64)


def fleet_forecast_id(devices: list[str], start: datetime, horizon: int, version: str) -> str:
    """Like a device forecast's: the same devices, start, horizon and model
    give the same id, so a repeated request finds the existing forecast."""
    digest = hashlib.sha256("\n".join(sorted(devices)).encode()).hexdigest()[:16]
    return f"fl-{start:%Y%m%dT%H%MZ}-{horizon}-{version}-{digest}"


@router.post("/fleet-forecasts")
async def start_fleet_forecast(
    request: FleetForecastRequest,
    wait: bool = Query(False, description="return the finished forecast"),
    timeout: float = Query(60.0, gt=0, le=300),
    table: bool = Query(False, description="include the portfolio's full quantile table"),
) -> FastJSONResponse:
    settings = get_settings()
    now = datetime.now(UTC)
    start = check_forecast_start(request.forecast_start or next_quarter_hour(now), now)
    horizon = horizon_intervals(request.horizon_hours, settings.max_horizon_hours)
    known = await run_in_threadpool(fleet_list.fleet_devices)
    devices = sorted(set(request.devices)) if request.devices else sorted(known)
    require_in_fleet(devices, known)
    if not devices:
        raise InvalidRequest("the fleet has no devices")
    version = engine.model_version(await catalog.current())
    fid = fleet_forecast_id(devices, start, horizon, version)
    recorded = await run_in_threadpool(read_recorded_fleet, fid, table)
    if recorded is not None:
        return FastJSONResponse({"forecast_id": fid, "status": "COMPLETED", "result": recorded,
                                 "created": False}, status_code=200)
    job = {"fleet_forecast_id": fid, "device_ids": devices, "forecast_start": isoformat_z(start),
           "horizon_intervals": horizon, "model_version": version,
           "data_end": isoformat_z(min(start, floor_quarter_hour(now))),
           "requested_by": request.requested_by, "requested_at": isoformat_z(now),
           "shard_size": settings.fleet_shard_size, "parallel_shards": settings.fleet_parallel_shards}
    async with starting_lock(fid):
        created = await run_in_threadpool(start_once, fid, job, FLEET_WORKFLOW_NAME)
    view: dict = {"forecast_id": fid, "status": "SCHEDULED" if created else "EXISTS"}
    metrics.BATCH_DEVICES.labels("fleet").observe(len(devices))
    if wait:
        with metrics.FORECAST_SECONDS.labels("fleet").time(), metrics.IN_FLIGHT.labels("fleet") \
                .track_inprogress():
            state = await run_in_threadpool(
                read_state, instances.client.wait_for_workflow_completion, fid, fetch_payloads=True,
                timeout_in_seconds=int(timeout))
        await finished(FLEET_WORKFLOW_NAME, fid, state)
        view = view_of(fid, state)
        run = view.pop("result", None)  # the workflow's summary: shards and seconds per step
        if view["status"] in ("COMPLETED", "NOT_FOUND") and (found := await run_in_threadpool(
                read_recorded_fleet, fid, table)):
            view = {"forecast_id": fid, "status": "COMPLETED", "result": found}
            if run is not None:
                view["run"] = run
    view["created"] = created
    return FastJSONResponse(view, status_code=status_code(view) if wait else 202)


