"""Activities of the forecast workflow: each one step of I/O.

An exception means "transient, retry me" (the workflow's retry policy
applies); a domain error is returned as a `StepError` value and fails the
workflow at once with its reason.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime

import dapr.ext.workflow as wf
import httpx
from psycopg_pool import ConnectionPool

from intraday import failpoints, messages
from intraday.audit import db
from intraday.config import get_settings
from intraday.errors import InvalidRequest, UnknownDevice
from intraday.forecasting.request import check_forecast_start
from services import sidecar, tracing
from services.metrics import STEP_SECONDS
from workflows.contracts import DEADLINE, ForecastJob, StepError

log = logging.getLogger(__name__)
ACTOR_TYPE = "DeviceActor"  # actors.device_actor.ACTOR_TYPE, without importing the actor
_DEVICE_TTL_S = 300.0
_known_devices: dict[str, float] = {}
retired_devices: dict[str, str] = {}  # device -> when it was retired, as the telemetry service said
_pool: ConnectionPool | None = None


def _audit_pool() -> ConnectionPool:
    global _pool
    if _pool is None:
        _pool = ConnectionPool(get_settings().pg_dsn, min_size=1, max_size=8, open=True,
                               kwargs={"autocommit": True})
    return _pool


# The list is re-validated every few seconds: a conditional request (its
# ETag) that the telemetry service answers 304 while the registry is
# unchanged, so devices added, updated or retired reach the forecasts
# within seconds and without a restart. A thread of its own re-validates
# it, so no request waits for a refresh (not even for the whole list after
# a registry change); only the process's very first list is read on a
# request's path.
_FLEET_TTL_S = 5.0
_FLEET_RETRY_S = 10.0  # after a failed refresh, the next try
_FLEET_TIMEOUT = 5.0
_fleet: tuple[float, dict[str, dict]] | None = None
_fleet_etag: str | None = None
_fleet_lock = threading.Lock()
_keeper: threading.Thread | None = None


def fleet_devices() -> dict[str, dict]:
    """The fleet's devices (those not retired) with their attributes, from
    the telemetry service in one call, re-validated in the background
    every `_FLEET_TTL_S`. While the telemetry service is down or hangs,
    the last list it gave is served (logged), so forecasts for known
    devices go on; with none yet, the failure is raised."""
    global _keeper
    fleet = _fleet
    if fleet is not None:
        return fleet[1]
    with _fleet_lock:  # the first list: one read, however many requests want it
        if _fleet is None:
            _refresh()
        if _keeper is None or not _keeper.is_alive():
            _keeper = threading.Thread(target=_keep_fresh, name="fleet-list", daemon=True)
            _keeper.start()
        return _fleet[1]


def _keep_fresh() -> None:
    """Re-validate the list every `_FLEET_TTL_S` (`_FLEET_RETRY_S` after a
    failure) for as long as the process holds one."""
    while (held := _fleet) is not None:
        wake = max(held[0] + _FLEET_TTL_S, time.monotonic() + 0.05)
        while _fleet is not None and time.monotonic() < wake:
            time.sleep(min(0.25, max(wake - time.monotonic(), 0.0)))
        if _fleet is None:  # dropped (tests start afresh): this thread ends with it
            return
        try:
            _refresh()
        except Exception:  # _refresh keeps the last list on HTTP errors; anything else is logged here
            log.exception("fleet list refresh failed")
            time.sleep(_FLEET_RETRY_S)


def _refresh() -> None:
    """Ask the telemetry service for the list (conditionally once one is
    held) and keep the answer; on failure keep the last list and try again
    after `_FLEET_RETRY_S` (with none yet, raise)."""
    global _fleet, _fleet_etag
    held = _fleet
    headers = {"if-none-match": _fleet_etag} if held is not None and _fleet_etag else {}
    try:
        r = sidecar.sync_client().get("/v1.0/invoke/telemetry/method/devices",
                                      timeout=_FLEET_TIMEOUT, headers=headers)
        if r.status_code != 304:
            r.raise_for_status()
    except httpx.HTTPError as e:
        if held is None:
            raise
        if _fleet is None:  # dropped meanwhile: it stays dropped
            return
        log.warning("fleet list not refreshed (%s): serving the one from %.0f s ago",
                    str(e)[:200], time.monotonic() - held[0])
        _fleet = (time.monotonic() - _FLEET_TTL_S + _FLEET_RETRY_S, held[1])
        return
    if held is not None and _fleet is None:  # dropped meanwhile: it stays dropped
        return
    if r.status_code == 304 and held is not None:
        _fleet = (time.monotonic(), held[1])
    else:
        _fleet = (time.monotonic(), {d["device_id"]: d for d in r.json()})
        _fleet_etag = r.headers.get("etag")
        _known_devices.clear()  # a device seen since may have been retired


def listed_device(device_id: str) -> dict | None:
    """A device's entry in the fleet list as last read, without asking
    (None when it is not listed or no list was read yet): the attributes a
    DeviceActor checks its own copy against."""
    fleet = _fleet
    return None if fleet is None else fleet[1].get(device_id)


def device_exists(device_id: str) -> bool:
    """In the fleet list (re-validated every few seconds), else asked of
    the telemetry service (a device registered since; cached for a few
    minutes once seen). A retired device is not in the fleet."""
    if device_id in fleet_devices():
        return True
    seen = _known_devices.get(device_id)
    if seen is not None and time.monotonic() - seen < _DEVICE_TTL_S:
        return True
    r = sidecar.sync_client().get(f"/v1.0/invoke/telemetry/method/devices/{device_id}")
    if r.status_code == 404:
        return False
    r.raise_for_status()
    retired = r.json().get("retired_at")
    if retired and datetime.fromisoformat(retired) <= datetime.now(UTC):
        retired_devices[device_id] = retired
        return False
    _known_devices[device_id] = time.monotonic()
    return True


def step(workflow: str):
    """Observe an activity's duration as a step of `workflow` (retries
    count as steps of their own)."""
    def wrap(activity):
        timer = STEP_SECONDS.labels(workflow, activity.__name__)

        @functools.wraps(activity)
        def timed(ctx, payload):
            with timer.time():
                return activity(ctx, payload)
        return timed
    return wrap


# -- the parts of make_forecast and deliver ------------------------------------

def _validate(job: ForecastJob) -> dict:
    try:
        requested_at = datetime.fromisoformat(job.requested_at)
        check_forecast_start(datetime.fromisoformat(job.forecast_start), requested_at)
        if not 0 < job.horizon_intervals <= get_settings().max_horizon_hours * 4:
            raise InvalidRequest(f"horizon of {job.horizon_intervals} intervals is out of range")
    except InvalidRequest as e:
        return StepError(error=str(e), kind="invalid_request").model_dump()
    if not device_exists(job.device_id):
        error = UnknownDevice(job.device_id, retired_devices.get(job.device_id))
        return StepError(error=str(error), kind="unknown_device").model_dump()
    return {"ok": True}


def _prepare(job: ForecastJob) -> dict:
    """Make the device's actor bring its window up to forecast_start."""
    failpoints.reach(failpoints.FORECAST_IN_FETCH)
    return sidecar.call_actor(
        ACTOR_TYPE, job.device_id, "Prepare", {"forecast_start": job.forecast_start}
    )


def _forecast(job: ForecastJob) -> dict:
    """The device's forecast from its actor, with the trace it is made in
    (the activity runs in the request's trace; the workflow function cannot
    know it, it replays)."""
    result = sidecar.call_actor(
        ACTOR_TYPE,
        job.device_id,
        "Forecast",
        {"forecast_start": job.forecast_start, "horizon_intervals": job.horizon_intervals,
         "model_version": job.model_version},
    )
    if "error" not in result:
        result["trace_id"] = tracing.current_trace_id()
    return result


def _publish(result: dict) -> None:
    """Topic `forecasts`, the compact message (intraday/messages.py);
    consumers deduplicate on `forecast_id` (a retried publish after a lost
    acknowledgement sends the same id again)."""
    sidecar.publish("forecasts", messages.forecast_message_of(result))
    failpoints.reach(failpoints.FORECAST_AFTER_PUBLISH)


def _record(payload: dict) -> dict:
    job = ForecastJob.model_validate(payload["job"])
    with _audit_pool().connection() as conn:
        inserted = db.record_forecast(
            conn,
            request_id=job.forecast_id,
            forecast=payload["forecast"],
            requested_by=job.requested_by,
            requested_at=datetime.fromisoformat(job.requested_at),
        )
    return {"inserted": inserted, "at": datetime.now(UTC).isoformat()}


@step("forecast")
def audit(ctx: wf.WorkflowActivityContext, payload: dict) -> dict:
    """The forecast's audit row (one per forecast id, whatever the retries)."""
    return _record(payload)


# -- the two steps of forecast_workflow_v3 -------------------------------------

# make_forecast's work runs here, so the step can stop waiting for it at the
# deadline. A part that hangs holds a thread until it lets go (its result is
# dropped: nothing it made is published or audited); with every thread held,
# a new forecast waits here and fails at its own deadline.
_making = ThreadPoolExecutor(max_workers=32, thread_name_prefix="make-forecast")


def _deadline_passed() -> dict:
    return StepError(error=f"deadline of {DEADLINE.seconds} s passed while making the forecast",
                     kind="deadline").model_dump()


@step("forecast")
def make_forecast(ctx: wf.WorkflowActivityContext, job: ForecastJob) -> dict:
    """Validate the request, bring the device's actor window up to the
    start (Prepare) and forecast (Forecast): one activity, one round trip
    through the workflow engine. A domain error (a bad request, an unknown
    device, too little history) comes back as a value, so the workflow fails
    with its reason at once; anything else raises and the step is retried
    (each part is idempotent: validation reads, Prepare only extends the
    window, Forecast computes). Past `job.deadline` (set by the workflow)
    the step gives up with the reason, a value too: waiting for a part that
    hangs ends at the deadline, and a retry or a redelivery that starts
    after it fails at once."""
    left = _seconds_left(job.deadline)
    if left is not None and left <= 0:
        return _deadline_passed()
    # The parts in the activity's context (its trace) on a thread of their own.
    making = _making.submit(contextvars.copy_context().run, _make, job)
    try:
        return making.result(timeout=left)
    except FutureTimeout:
        log.warning("forecast %s: deadline passed while making it", job.forecast_id)
        return _deadline_passed()


def _seconds_left(deadline: str | None) -> float | None:
    if deadline is None:  # an instance of version 2, whose durable timer is the deadline
        return None
    at = datetime.fromisoformat(deadline)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)  # the workflow's clock is naive UTC
    return (at - datetime.now(UTC)).total_seconds()


def _make(job: ForecastJob) -> dict:
    checked = _validate(job)
    if "error" in checked:
        return checked
    window = _prepare(job)
    made = _forecast(job)
    if "error" in made:
        return made
    return {**made, "data_window": {**made["data_window"], "missing_intervals": window["missing_intervals"]}}


@step("forecast")
def deliver(ctx: wf.WorkflowActivityContext, payload: dict) -> dict:
    """Publish the forecast on `forecasts`, then write its audit row. A
    crash or an error before the publish lands is retried as a whole
    (consumers deduplicate on forecast_id, so a publish made twice is one
    forecast); once published, an audit that fails is reported, not raised
    (`audited: false`), and the workflow owes it in a step of its own."""
    _publish(payload["forecast"])
    try:
        return {"audited": True, **_record(payload)}
    except Exception as e:  # noqa: BLE001 - any failure: the owed audit step retries it
        log.warning("forecast %s published, audit failed (%s): owed", payload["forecast"].get("forecast_id"),
                    str(e)[:200])
        return {"audited": False, "error": str(e)[:300]}
