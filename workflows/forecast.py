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

# I/O steps (actor calls, pub/sub): exponential backoff, bounded well inside
# the overall deadline.
IO_RETRY = wf.RetryPolicy(
    first_retry_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=5),
    max_number_of_attempts=6,
    retry_timeout=timedelta(seconds=40),
)
# The audit (PostgreSQL) of a forecast already published: owed, whatever the
# deadline. The message is out, so failing the forecast now would leave a
# published forecast without its record (and an attempt still running could
# write the record of a forecast the workflow had called failed). So the
# audit is retried, backing off to 30 s, until it lands (a database
# restarting or failing over), for up to an hour; the forecast is not made
# again meanwhile, its result is in the workflow's history.
AUDIT_RETRY = wf.RetryPolicy(
    first_retry_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=30),
    max_number_of_attempts=500,
    retry_timeout=timedelta(hours=1),
)


class ForecastFailed(Exception):
    """Ends the workflow as FAILED with the step's reason."""


def _check(result: dict) -> dict:
    if isinstance(result, dict) and "error" in result and "kind" in result:
        raise ForecastFailed(f"{result['kind']}: {result['error']}")
    return result


def forecast_workflow(ctx: wf.DaprWorkflowContext, job: dict):
    # One durable timer for the whole deadline, raced against every step up
    # to the publish: a step that hangs (a sidecar call that never answers)
    # fails the forecast when the timer fires, not when the step gives up.
    # The timer is durable, so a forecaster that restarts meanwhile keeps the
    # same deadline. Once published, the audit is owed (AUDIT_RETRY).
    deadline = ctx.create_timer(ctx.current_utc_datetime + DEADLINE)

    def step(name: str, activity, payload, retry_policy=None):
        task = ctx.call_activity(activity, input=payload, retry_policy=retry_policy)
        winner = yield wf.when_any([task, deadline])
        if winner is deadline:
            raise ForecastFailed(f"deadline of {DEADLINE.seconds} s passed during {name}")
        return task.get_result()

    _check((yield from step("validate", activities.validate, job)))
    window = _check((yield from step("fetch", activities.fetch, job, IO_RETRY)))
    forecast = _check((yield from step("forecast", activities.forecast, job, IO_RETRY)))
    result = {
        "forecast_id": ctx.instance_id,
        **forecast,
        "data_window": {**forecast["data_window"], "missing_intervals": window["missing_intervals"]},
        "requested_by": job["requested_by"],
        "requested_at": job["requested_at"],
    }
    yield from step("publish", activities.publish, result, IO_RETRY)
    yield ctx.call_activity(activities.audit, input={"job": job, "forecast": result},
                            retry_policy=AUDIT_RETRY)
    return result


def register(runtime: wf.WorkflowRuntime) -> None:
    runtime.register_workflow(forecast_workflow, name=WORKFLOW_NAME)
    for activity in (activities.validate, activities.fetch, activities.forecast,
                     activities.publish, activities.audit):
        runtime.register_activity(activity, name=activity.__name__)
