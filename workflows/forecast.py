"""The forecast workflow: validate -> fetch -> forecast -> publish -> audit.

Deterministic orchestration only; every piece of I/O lives in activities.py.
The instance id comes from (device, forecast start, horizon, model version),
so a repeated request finds this instance instead of making a second forecast.
"""

from __future__ import annotations

from datetime import timedelta

import dapr.ext.workflow as wf

from workflows import activities

WORKFLOW_NAME = "forecast_workflow"
DEADLINE = timedelta(seconds=60)

# I/O steps (actor calls, pub/sub, PostgreSQL): exponential backoff, bounded
# well inside the overall deadline.
IO_RETRY = wf.RetryPolicy(
    first_retry_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=5),
    max_number_of_attempts=6,
    retry_timeout=timedelta(seconds=40),
)


class ForecastFailed(Exception):
    """Ends the workflow as FAILED with the step's reason."""


def _check(result: dict) -> dict:
    if isinstance(result, dict) and "error" in result and "kind" in result:
        raise ForecastFailed(f"{result['kind']}: {result['error']}")
    return result


def forecast_workflow(ctx: wf.DaprWorkflowContext, job: dict):
    deadline = ctx.current_utc_datetime + DEADLINE

    def on_time(step: str) -> None:
        if ctx.current_utc_datetime > deadline:
            raise ForecastFailed(f"deadline of {DEADLINE.seconds} s passed before {step}")

    _check((yield ctx.call_activity(activities.validate, input=job)))
    on_time("fetch")
    window = _check(
        (yield ctx.call_activity(activities.fetch, input=job, retry_policy=IO_RETRY))
    )
    on_time("forecast")
    forecast = _check(
        (yield ctx.call_activity(activities.forecast, input=job, retry_policy=IO_RETRY))
    )
    result = {
        "forecast_id": ctx.instance_id,
        **forecast,
        "data_window": {**forecast["data_window"], "missing_intervals": window["missing_intervals"]},
        "requested_by": job["requested_by"],
        "requested_at": job["requested_at"],
    }
    on_time("publish")
    yield ctx.call_activity(activities.publish, input=result, retry_policy=IO_RETRY)
    on_time("audit")
    yield ctx.call_activity(
        activities.audit, input={"job": job, "forecast": result}, retry_policy=IO_RETRY
    )
    return result


def register(runtime: wf.WorkflowRuntime) -> None:
    runtime.register_workflow(forecast_workflow, name=WORKFLOW_NAME)
    for activity in (activities.validate, activities.fetch, activities.forecast,
                     activities.publish, activities.audit):
        runtime.register_activity(activity, name=activity.__name__)
