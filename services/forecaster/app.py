"""Forecaster service: hosts the DeviceActors and the forecast workflow, and
starts/queries workflow instances for the gateway and the trading service."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import dapr.ext.workflow as wf
from dapr.actor.runtime.config import ActorRuntimeConfig
from dapr.actor.runtime.runtime import ActorRuntime
from dapr.ext.fastapi import DaprActor
from dapr.ext.workflow.logger import LoggerOptions
from fastapi import FastAPI, Query
from fastapi.concurrency import run_in_threadpool
from grpc import RpcError, StatusCode
from pydantic import BaseModel, ConfigDict, Field

from actors.device_actor import DeviceActor
from actors.state import StateSerializer
from clients import fleet_list, metrics, sidecar, tracing, weather
from clients.audit_pool import audit_pool
from clients.models import catalog
from clients.sidecar import SidecarError, call_actor_async
from intraday.audit import db as audit_db
from intraday.audit import scores as audit_scores
from intraday.config import get_settings
from intraday.errors import InvalidRequest, UnknownDevice
from intraday.forecasting import baseline, engine
from intraday.forecasting.request import check_forecast_start, forecast_id, horizon_intervals
from intraday.timeutil import floor_quarter_hour, isoformat_z, next_quarter_hour
from services.forecaster import scoring
from services.forecaster.batching import Batcher
from services.http import FastJSONResponse, install_common
from workflows import fleet_activities as fleet
from workflows.contracts import ForecastJob, ForecastRequest, TrainingRequest
from workflows.fleet import BATCH_WORKFLOW_NAME, FLEET_WORKFLOW_NAME
from workflows.fleet import register as register_fleet
from workflows.forecast import WORKFLOW_NAME, register
from workflows.training import TRAINING_WORKFLOW_NAME
from workflows.training import register as register_training

log = logging.getLogger("forecaster")
TERMINAL_RERUN = {wf.WorkflowStatus.FAILED, wf.WorkflowStatus.TERMINATED}
runtime: wf.WorkflowRuntime
client: wf.DaprWorkflowClient
batcher: Batcher


@asynccontextmanager
async def lifespan(app: FastAPI):
    global runtime, client, batcher
    settings = get_settings()
    ActorRuntime.set_actor_config(
        ActorRuntimeConfig(
            actor_idle_timeout=timedelta(seconds=settings.actor_idle_timeout_seconds),
            actor_scan_interval=timedelta(seconds=30),
        )
    )
    await actor.register_actor(
        DeviceActor, message_serializer=StateSerializer(), state_serializer=StateSerializer()
    )
    fleet.bind(asyncio.get_running_loop())
    tracing.instrument_workflow_client()  # before the runtime and client open their channels
    # Their records go to the root's JSON handler (clients/tracing.py), not a handler of their own.
    quiet = LoggerOptions(log_level=logging.WARNING, log_handler=logging.NullHandler())
    runtime = wf.WorkflowRuntime(maximum_thread_pool_workers=16, logger_options=quiet)
    register(runtime)
    register_fleet(runtime)
    register_training(runtime)
    runtime.start()
    client = wf.DaprWorkflowClient(logger_options=quiet)
    batcher = Batcher(_run_single, _run_batch, _batch_group, max_size=settings.batch_max_size,
                      max_in_flight=settings.batch_max_in_flight,
                      max_wait=settings.batch_max_wait_ms / 1000)
    metrics.QUEUE_DEPTH.set_function(batcher.queued)
    scheduling = asyncio.gather(
        sidecar.schedule_job(TRAINING_JOB, settings.training_schedule, {"workflow": TRAINING_WORKFLOW_NAME}),
        sidecar.schedule_job(scoring.SCORING_JOB, settings.scoring_schedule, {"score": "published"}))
    live_gauges = asyncio.create_task(_live_gauges_loop())
    warm_weather = asyncio.create_task(weather.keep_warm(_fleet_locations))
    yield
    warm_weather.cancel()
    live_gauges.cancel()
    scheduling.cancel()
    runtime.shutdown()


async def _fleet_locations() -> set[str]:
    devices = await run_in_threadpool(fleet_list.fleet_devices)
    return {d["location"] for d in devices.values() if d.get("location")}


app = FastAPI(title="intraday forecaster", lifespan=lifespan)
actor = DaprActor(app)
install_common(app, "forecaster")
_starting: dict[str, asyncio.Lock] = {}


@asynccontextmanager
async def _starting_lock(fid: str):
    """One scheduling attempt per instance id at a time in this process
    (across processes, the workflow's "already exists" answer decides)."""
    lock = _starting.setdefault(fid, asyncio.Lock())
    try:
        async with lock:
            yield
    finally:
        if not lock.locked() and _starting.get(fid) is lock:
            del _starting[fid]


def _view(fid: str, state: wf.WorkflowState | None) -> dict:
    if state is None:
        # Never requested, or the state store lost its workflow before it was
        # recorded: the same request again has the same id and is made once.
        return {"forecast_id": fid, "status": "NOT_FOUND",
                "detail": f"no forecast {fid!r} is running or recorded; if it was accepted, its "
                          "workflow state was lost before it finished: request it again"}
    status = state.runtime_status.name
    body: dict = {"forecast_id": fid, "status": status}
    if state.runtime_status == wf.WorkflowStatus.COMPLETED and state.serialized_output:
        import json

        body["result"] = json.loads(state.serialized_output)
    if state.failure_details is not None:
        # `detail`, as every error answer has it; `error`, as results have it.
        body["error"] = body["detail"] = state.failure_details.message
    return body


def _status_code(view: dict) -> int:
    status = view["status"]
    if status == "COMPLETED":
        return 200
    if status == "NOT_FOUND":
        return 404
    if status == "FAILED":
        error = view.get("error", "")
        if "unknown_device" in error:
            return 404
        if "insufficient_history" in error or "invalid_request" in error:
            return 422
        return 500
    return 202  # still running


@app.post("/forecasts")
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
    recorded = await run_in_threadpool(_recorded, fid)
    if recorded is not None:  # made before (its workflow instance may be purged)
        return FastJSONResponse({"forecast_id": fid, "status": "COMPLETED", "result": recorded,
                             "created": False}, status_code=200)
    if wait:  # batched with whatever else is asked for now (a lone request runs at once)
        try:
            view = await asyncio.wait_for(batcher.submit(fid, job.model_dump()), timeout)
        except TimeoutError:
            view = {"forecast_id": fid, "status": "RUNNING", "created": True}
        return FastJSONResponse(view, status_code=_status_code(view))
    async with _starting_lock(fid):
        created = await run_in_threadpool(_start_once, fid, job)
    return FastJSONResponse({"forecast_id": fid, "status": "SCHEDULED" if created else "EXISTS",
                         "created": created}, status_code=202)


def _wait_seconds() -> int:
    """How long a waiting request follows its workflow: past the deadline,
    so that it sees the deadline's FAILED and its reason, not RUNNING."""
    return int(get_settings().forecast_deadline_seconds) + 10


def _waited(workflow: str, state: wf.WorkflowState | None) -> None:
    """Count the final status of an instance the forecaster waited for."""
    metrics.WORKFLOW_OUTCOMES.labels(workflow, state.runtime_status.name if state else "NOT_FOUND").inc()


async def _run_single(fid: str, job: dict) -> dict:
    """One device's forecast workflow (through its DeviceActor), waited for."""
    with metrics.FORECAST_SECONDS.labels("single").time(), metrics.IN_FLIGHT.labels("single") \
            .track_inprogress():
        async with _starting_lock(fid):
            created = await run_in_threadpool(_start_once, fid, ForecastJob(**job))
        state = await run_in_threadpool(
            _read_state, client.wait_for_workflow_completion, fid, fetch_payloads=True,
            timeout_in_seconds=_wait_seconds())
    _waited(WORKFLOW_NAME, state)
    view = _view(fid, state)
    if view["status"] == "NOT_FOUND" and (recorded := await run_in_threadpool(_recorded, fid)):
        view = {"forecast_id": fid, "status": "COMPLETED", "result": recorded}  # already purged
    return {**view, "created": created}


def _batch_group(job: dict) -> tuple:
    """Requests batched together share these (a batch is one shard)."""
    return job["forecast_start"], job["horizon_intervals"], job["model_version"], job["requested_by"]


async def _run_batch(take: list[tuple[str, dict]]) -> dict[str, dict]:
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
        async with _starting_lock(bid):
            await run_in_threadpool(_start_once, bid, payload, BATCH_WORKFLOW_NAME)
        state = await run_in_threadpool(
            _read_state, client.wait_for_workflow_completion, bid, fetch_payloads=True,
            timeout_in_seconds=_wait_seconds())
    _waited(BATCH_WORKFLOW_NAME, state)
    view = _view(bid, state)
    outcome = view.get("result") or {}
    log.info("batch %s of %d: %s in %.3f s; shard steps %s", bid, len(take), view["status"],
             time.monotonic() - began, outcome.get("seconds"))
    new, failed = set(outcome.get("new", ())), outcome.get("failed", {})
    recorded = await run_in_threadpool(_recorded_many, fids)
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


def _recorded(fid: str) -> dict | None:
    """The forecast as the audit store holds it, once its workflow has
    written it there (the workflow's last step)."""
    with audit_pool().connection() as conn:
        return audit_db.read_forecast(conn, fid)


def _recorded_many(fids: list[str]) -> dict[str, dict]:
    with audit_pool().connection() as conn:
        return audit_db.read_results(conn, fids)


def _read_state(read, fid: str, **kwargs) -> wf.WorkflowState | None:
    """A workflow state read, retried briefly: right after scheduling, daprd
    1.18 can see an instance's metadata before its inbox ("transient store
    read failure or partial save") and answers UNKNOWN."""
    for attempt in range(6):
        try:
            return read(fid, **kwargs)
        except RpcError as e:
            if e.code() != StatusCode.UNKNOWN or "transient" not in (e.details() or "") \
                    or attempt == 5:
                raise
            time.sleep(0.01 * 2**attempt)
    return None


def _start_once(fid: str, job: ForecastJob | dict, workflow: str = WORKFLOW_NAME) -> bool:
    """Schedule the workflow unless an instance with this id exists (running
    or completed); a failed or terminated one is run again. True if started."""
    state = _read_state(client.get_workflow_state, fid, fetch_payloads=False)
    if state is not None and state.runtime_status not in TERMINAL_RERUN:
        return False
    payload = job.model_dump() if isinstance(job, ForecastJob) else job
    try:
        client.schedule_new_workflow(workflow, input=payload, instance_id=fid)
    except RpcError as e:
        if "already exists" in (e.details() or ""):
            return False
        raise
    return True


def _require_in_fleet(devices: list[str], known: dict) -> None:
    """UnknownDevice (404) naming the first ten devices not in the fleet."""
    unknown = [d for d in dict.fromkeys(devices) if d not in known]
    if unknown:
        raise UnknownDevice(", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10
                                                       else ""))


class WarmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top: int = Field(100, ge=0, le=100_000, description="most-requested devices of the last `days`")
    days: int = Field(7, ge=1, le=365)
    devices: list[str] = Field(default_factory=list, max_length=100_000)


@app.post("/warm")
async def warm(request: WarmRequest) -> dict:
    """Load the served model into memory (and the state store), and activate
    the DeviceActors of the most-requested devices (and any named), so the
    next burst finds them warm."""
    started = time.monotonic()
    # An actor for a device that is not in the fleet would be state about nothing.
    _require_in_fleet(request.devices, await run_in_threadpool(fleet_list.fleet_devices))
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


@app.post("/fleet-forecasts")
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
    _require_in_fleet(devices, known)
    if not devices:
        raise InvalidRequest("the fleet has no devices")
    version = engine.model_version(await catalog.current())
    fid = fleet_forecast_id(devices, start, horizon, version)
    recorded = await run_in_threadpool(_recorded_fleet, fid, table)
    if recorded is not None:
        return FastJSONResponse({"forecast_id": fid, "status": "COMPLETED", "result": recorded,
                             "created": False}, status_code=200)
    job = {"fleet_forecast_id": fid, "device_ids": devices, "forecast_start": isoformat_z(start),
           "horizon_intervals": horizon, "model_version": version,
           "data_end": isoformat_z(min(start, floor_quarter_hour(now))),
           "requested_by": request.requested_by, "requested_at": isoformat_z(now),
           "shard_size": settings.fleet_shard_size, "parallel_shards": settings.fleet_parallel_shards}
    async with _starting_lock(fid):
        created = await run_in_threadpool(_start_once, fid, job, FLEET_WORKFLOW_NAME)
    view: dict = {"forecast_id": fid, "status": "SCHEDULED" if created else "EXISTS"}
    metrics.BATCH_DEVICES.labels("fleet").observe(len(devices))
    if wait:
        with metrics.FORECAST_SECONDS.labels("fleet").time(), metrics.IN_FLIGHT.labels("fleet") \
                .track_inprogress():
            state = await run_in_threadpool(
                _read_state, client.wait_for_workflow_completion, fid, fetch_payloads=True,
                timeout_in_seconds=int(timeout))
        _waited(FLEET_WORKFLOW_NAME, state)
        view = _view(fid, state)
        run = view.pop("result", None)  # the workflow's summary: shards and seconds per step
        if view["status"] in ("COMPLETED", "NOT_FOUND") and (found := await run_in_threadpool(
                _recorded_fleet, fid, table)):
            view = {"forecast_id": fid, "status": "COMPLETED", "result": found}
            if run is not None:
                view["run"] = run
    view["created"] = created
    return FastJSONResponse(view, status_code=_status_code(view) if wait else 202)


def _recorded_fleet(fid: str, table: bool = False) -> dict | None:
    with audit_pool().connection() as conn:
        return audit_db.read_fleet_forecast(conn, fid, table)


@app.get("/forecasts/{fid}")
async def get_forecast(
    fid: str,
    table: bool = Query(False, description="a fleet forecast's full quantile table"),
) -> FastJSONResponse:
    """A finished forecast from the audit store; one still running (or
    failed, kept a day) from its workflow instance."""
    recorded = await run_in_threadpool(_recorded_fleet, fid, table) if fid.startswith("fl-") \
        else await run_in_threadpool(_recorded, fid)
    if recorded is not None:
        return FastJSONResponse({"forecast_id": fid, "status": "COMPLETED", "result": recorded})
    state = await run_in_threadpool(_read_state, client.get_workflow_state, fid,
                                    fetch_payloads=True)
    view = _view(fid, state)
    return FastJSONResponse(view, status_code=_status_code(view))


@app.get("/batching")
async def batching() -> dict:
    """What the dynamic batcher has done: requests, batches and their sizes."""
    return {**batcher.stats.to_dict(), "queued": batcher.queued()}


# -- live accuracy: published forecasts scored (services/forecaster/scoring.py)

# Every replica re-reads the live scores for its gauges, and its models'
# scored days for their bands, this often.
LIVE_GAUGES_SECONDS = 300


async def _live_gauges_loop() -> None:
    while True:
        try:
            await catalog.rescore()
            await run_in_threadpool(scoring.refresh)
        except Exception:  # the audit store away for a while: the gauges keep their values
            log.warning("reading the live scores failed", exc_info=True)
        await asyncio.sleep(LIVE_GAUGES_SECONDS)


@app.post("/scores/run")
async def run_scoring() -> dict:
    """Score the published forecasts that are due now (what the hourly
    Dapr job does): how many were due and scored, and how long it took."""
    out = await run_in_threadpool(scoring.run)
    await catalog.rescore()
    return out


@app.post(f"/job/{scoring.SCORING_JOB}")
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


@app.get("/scores")
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
    view = _view(tid, state)
    view["training_id"] = view.pop("forecast_id")
    if view["status"] == "NOT_FOUND":
        view["detail"] = f"no training {tid!r} is running or recorded"
    return view


async def _run_training(tid: str, job: dict, wait: bool, timeout: float) -> FastJSONResponse:
    recorded = await run_in_threadpool(_recorded_training, tid)
    if recorded is not None:
        return FastJSONResponse({"training_id": tid, "status": "COMPLETED", "result": recorded,
                             "created": False})
    async with _starting_lock(tid):
        created = await run_in_threadpool(_start_once, tid, job, TRAINING_WORKFLOW_NAME)
    view: dict = {"training_id": tid, "status": "SCHEDULED" if created else "EXISTS"}
    if wait:
        state = await run_in_threadpool(_read_state, client.wait_for_workflow_completion, tid,
                                        fetch_payloads=True, timeout_in_seconds=int(timeout))
        _waited(TRAINING_WORKFLOW_NAME, state)
        view = _training_view(tid, state)
    view["created"] = created
    return FastJSONResponse(view, status_code=_status_code(view) if wait else 202)


@app.post("/trainings")
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
        end = request.end.astimezone(UTC) if request.end.tzinfo else None
        if end is None or end != floor_quarter_hour(end) or end > now:
            raise InvalidRequest("end must be a quarter-hour in the past with a time zone "
                                 "(e.g. 2026-01-31T12:00:00Z)")
    champion = await asyncio.to_thread(catalog.store.promoted) or baseline.MODEL_VERSION
    tid = training_id(end, request, champion)
    return await _run_training(tid, _training_job(tid, end, request, "request"), wait, timeout)


@app.get("/trainings/{tid}")
async def get_training(tid: str) -> FastJSONResponse:
    recorded = await run_in_threadpool(_recorded_training, tid)
    if recorded is not None:
        return FastJSONResponse({"training_id": tid, "status": "COMPLETED", "result": recorded})
    view = _training_view(tid, await run_in_threadpool(_read_state, client.get_workflow_state, tid,
                                                       fetch_payloads=True))
    return FastJSONResponse(view, status_code=_status_code(view))


@app.get("/models")
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


@app.post(f"/job/{TRAINING_JOB}")
async def scheduled_training() -> dict:
    """The daily job's trigger (Dapr's scheduler calls this): one training a
    day, whichever replica it reaches and however often it is delivered."""
    settings = get_settings()
    now = datetime.now(UTC)
    request = TrainingRequest(days=settings.training_days, train_rows=settings.training_rows,
                              requested_by="scheduler")
    tid = f"train-daily-{now:%Y%m%d}"
    async with _starting_lock(tid):
        created = await run_in_threadpool(_start_once, tid, _training_job(tid, floor_quarter_hour(now),
                                                                          request, "schedule"),
                                          TRAINING_WORKFLOW_NAME)
    log.info("scheduled training %s: %s", tid, "started" if created else "already started")
    return {"training_id": tid, "created": created}
