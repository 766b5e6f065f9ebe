"""Activities of the forecast workflow: each one step of I/O.

An exception means "transient, retry me" (the workflow's retry policy
applies); a domain error is returned as a `StepError` value and fails the
workflow at once with its reason.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime

import dapr.ext.workflow as wf

from clients import sidecar, tracing
from clients.audit_pool import audit_pool
from clients.fleet_list import device_exists, retired_devices
from clients.metrics import STEP_SECONDS
from intraday import failpoints, messages
from intraday.audit import db
from intraday.config import get_settings
from intraday.errors import InvalidRequest, UnknownDevice
from intraday.forecasting.request import check_forecast_start
from workflows.contracts import DEADLINE, ForecastJob, StepError

log = logging.getLogger(__name__)
ACTOR_TYPE = "DeviceActor"  # actors.device_actor.ACTOR_TYPE, without importing the actor


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
    with audit_pool().connection() as conn:
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
