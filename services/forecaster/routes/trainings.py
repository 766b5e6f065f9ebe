"""Training, champion and challenger (workflows/training.py): POST and GET
/trainings, GET /models, and the daily job's trigger."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime

import dapr.ext.workflow as wf
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from clients.audit_pool import audit_pool
from clients.models import catalog
from intraday.audit import db as audit_db
from intraday.config import get_settings
from intraday.errors import InvalidRequest
from intraday.forecasting import baseline
from intraday.timeutil import floor_quarter_hour, isoformat_z
from services.forecaster import instances
from services.forecaster.instances import (
    finished,
    read_state,
    start_once,
    starting_lock,
    status_code,
    view_of,
)
from services.http import FastJSONResponse
from workflows.contracts import TrainingRequest
from workflows.training import TRAINING_WORKFLOW_NAME

log = logging.getLogger("forecaster")
router = APIRouter()


# -- training: champion and challenger (workflows/training.py) ---------------

TRAINING_JOB = "intraday-training"  # the Dapr job that starts the daily training


def training_id(end: datetime, request: TrainingRequest, champion: str) -> str:
    """The same window, settings and champion give the same id, so a
    repeated request finds the training it started."""
    key = "/".join(str(x) for x in (request.days, request.holdout_days, request.train_rows, request.trees,
                                    request.force, champion))
    return f"train-{end:%Y%m%dT%H%MZ}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _training_job(tid: str, end: datetime, request: TrainingRequest, trigger: str) -> dict:
    return {"training_id": tid, "end": isoformat_z(end), "days": request.days,
            "holdout_days": request.holdout_days, "train_rows": request.train_rows, "trees": request.trees,
            "force": request.force, "requested_by": request.requested_by,
            "requested_at": isoformat_z(datetime.now(UTC)), "trigger": trigger}


def _recorded_training(tid: str) -> dict | None:
    with audit_pool().connection() as conn:
        found = audit_db.read_trainings(conn, 1, tid)
    return found[0] if found else None


def _training_view(tid: str, state: wf.WorkflowState | None) -> dict:
    view = view_of(tid, state)
    view["training_id"] = view.pop("forecast_id")
    if view["status"] == "NOT_FOUND":
        view["detail"] = f"no training {tid!r} is running or recorded"
    return view


async def _run_training(tid: str, job: dict, wait: bool, timeout: float) -> FastJSONResponse:
    recorded = await run_in_threadpool(_recorded_training, tid)
    if recorded is not None:
        return FastJSONResponse({"training_id": tid, "status": "COMPLETED", "result": recorded,
                                 "created": False})
    async with starting_lock(tid):
        created = await run_in_threadpool(start_once, tid, job, TRAINING_WORKFLOW_NAME)
    view: dict = {"training_id": tid, "status": "SCHEDULED" if created else "EXISTS"}
    if wait:
        state = await run_in_threadpool(read_state, instances.client.wait_for_workflow_completion, tid,
                                        fetch_payloads=True, timeout_in_seconds=int(timeout))
        await finished(TRAINING_WORKFLOW_NAME, tid, state)
        view = _training_view(tid, state)
    view["created"] = created
    return FastJSONResponse(view, status_code=status_code(view) if wait else 202)


@router.post("/trainings")
async def start_training(
    request: TrainingRequest,
    wait: bool = Query(False, description="return the finished training's decision"),
    timeout: float = Query(900.0, gt=0, le=3600),
) -> FastJSONResponse:
    """Train a candidate on the telemetry window, score it against the
    served model on the same held-out days, promote it if better (or
    `force`), and record the decision."""
    now = datetime.now(UTC)
    end = floor_quarter_hour(now)
    if request.end is not None:
        asked = request.end.astimezone(UTC) if request.end.tzinfo else None
        if asked is None or asked != floor_quarter_hour(asked) or asked > now:
            raise InvalidRequest("end must be a quarter-hour in the past with a time zone "
                                 "(e.g. 2026-01-31T12:00:00Z)")
        end = asked
    champion = await asyncio.to_thread(catalog.store.promoted) or baseline.MODEL_VERSION
    tid = training_id(end, request, champion)
    return await _run_training(tid, _training_job(tid, end, request, "request"), wait, timeout)


@router.get("/trainings/{tid}")
async def get_training(tid: str) -> FastJSONResponse:
    recorded = await run_in_threadpool(_recorded_training, tid)
    if recorded is not None:
        return FastJSONResponse({"training_id": tid, "status": "COMPLETED", "result": recorded})
    view = _training_view(tid, await run_in_threadpool(read_state, instances.client.get_workflow_state, tid,
                                                       fetch_payloads=True))
    return FastJSONResponse(view, status_code=status_code(view))


@router.get("/models")
async def models(limit: int = Query(20, ge=1, le=500)) -> dict:
    """The stored versions (oldest first), the promoted one, and the latest
    trainings' decisions (newest first)."""
    store = catalog.store
    versions, promoted = await asyncio.gather(asyncio.to_thread(store.versions),
                                              asyncio.to_thread(store.promoted))

    def history() -> list[dict]:
        with audit_pool().connection() as conn:
            return audit_db.read_trainings(conn, limit)
    return {"promoted": promoted, "models": versions, "trainings": await run_in_threadpool(history)}


@router.post(f"/job/{TRAINING_JOB}")
async def scheduled_training() -> dict:
    """The daily job's trigger (Dapr's scheduler calls this): one training a
    day, whichever replica it reaches and however often it is delivered."""
    settings = get_settings()
    now = datetime.now(UTC)
    request = TrainingRequest(days=settings.training_days, train_rows=settings.training_rows,
                              requested_by="scheduler")
    tid = f"train-daily-{now:%Y%m%d}"
    async with starting_lock(tid):
        created = await run_in_threadpool(start_once, tid, _training_job(tid, floor_quarter_hour(now),
                                                                          request, "schedule"),
                                          TRAINING_WORKFLOW_NAME)
    log.info("scheduled training %s: %s", tid, "started" if created else "already started")
    return {"training_id": tid, "created": created}
