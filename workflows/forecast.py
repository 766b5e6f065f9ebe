"""The forecast workflow of one device, in two steps:

    make_forecast: validate -> the actor's Prepare -> the actor's Forecast
    deliver:       publish on `forecasts` -> the audit row

Deterministic orchestration only; every piece of I/O lives in activities.py.
The instance id comes from (device, forecast start, horizon, model version),
so a repeated request finds this instance instead of making a second forecast.

Each step is a round trip through daprd's workflow engine: its state
written to the state store, and each turn a job of Dapr's scheduler (about
six jobs per instance in Dapr 1.18, ~24 ms of the scheduler's CPU each
instance; bench/results/load.json). So the workflow has two steps and no
timer. What each guarantee rests on:

- The deadline (60 s from the instance's start) is carried into
  `make_forecast`, which gives up when it passes: a forecast not made by
  then fails with the reason, nothing published or audited. The step's work
  runs on a thread of its own and the step waits for it only until the
  deadline, so a part that hangs (a sidecar call that never answers) fails
  the forecast at the deadline, not when the part gives up; a retry or a
  redelivery after a restart that starts past the deadline fails at once.
  Version 2 raced a durable timer against the step instead: the same
  meaning, one more scheduler job per forecast (and the timer's firing a
  minute later), 14 % of the scheduler's CPU under sustained load and
  ~10 ms of a lone request.
- Once made in time, a forecast is delivered with retries of its own
  (IO_RETRY: backoff, 40 s), so a forecast whose message may be out is
  never failed for being late.
- Retries: each step is retried with backoff (IO_RETRY); a domain error is
  a value and fails the workflow at once. A retried `make_forecast` repeats
  idempotent work; a retried `deliver` may publish again (consumers
  deduplicate on `forecast_id`, as after a lost acknowledgement before).
- The owed audit: `deliver` audits right after publishing; if that audit
  fails, it says so (a value, not an error) and the workflow retries the
  audit alone (AUDIT_RETRY, up to an hour), as before. A crash between the
  publish and the audit re-runs `deliver`: published again, audited once
  (the audit row is keyed by the forecast id).

A version stays registered one release after the next replaces it, for
instances started before an upgrade (their history replays against the
code that started them): `forecast_workflow_v2`, with its durable timer,
is that version now. An instance lives at most the deadline plus the owed
audit's hour, so one release is ample.
"""

from __future__ import annotations

from datetime import timedelta

import dapr.ext.workflow as wf

from workflows import activities, patches
from workflows.contracts import DEADLINE

WORKFLOW_NAME = "forecast_workflow_v3"
# The custom status while a published forecast's audit is owed (the watchdog
# then lets the instance run for the audit's hour: services/forecaster/watchdog.py).
OWED_AUDIT = "owed-audit"
LEGACY_WORKFLOW_NAME = "forecast_workflow_v2"  # the durable timer; instances started before v3 replay it

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


def forecast_workflow_v2(ctx: wf.DaprWorkflowContext, job: dict):
    """Version 2: the deadline a durable timer raced against make_forecast
    (kept for the replay of instances it started)."""
    deadline = ctx.create_timer(ctx.current_utc_datetime + DEADLINE)
    making = ctx.call_activity(activities.make_forecast, input=job, retry_policy=IO_RETRY)
    if (yield wf.when_any([making, deadline])) is deadline:
        raise ForecastFailed(f"deadline of {DEADLINE.seconds} s passed while making the forecast")
    return (yield from _delivered(ctx, job, _check(making.get_result())))


def forecast_workflow_v3(ctx: wf.DaprWorkflowContext, job: dict):
    running = patches.started(ctx, WORKFLOW_NAME)  # alongside make_forecast: no time of the forecast's
    deadline = ctx.current_utc_datetime + DEADLINE
    made = _check((yield ctx.call_activity(activities.make_forecast, retry_policy=IO_RETRY,
                                           input={**job, "deadline": deadline.isoformat()})))
    result = yield from _delivered(ctx, job, made)
    if running is not None:
        yield running
    return result


def _delivered(ctx: wf.DaprWorkflowContext, job: dict, made: dict):
    """The forecast made in time, delivered with retries of its own (bounded
    by IO_RETRY), not raced against the deadline, so a forecast whose
    message may be out is never called failed for being late; its audit
    owed in a step of its own if `deliver` could not write it."""
    result = {"forecast_id": ctx.instance_id, **made, "requested_by": job["requested_by"],
              "requested_at": job["requested_at"]}
    delivered = yield ctx.call_activity(activities.deliver, input={"job": job, "forecast": result},
                                        retry_policy=IO_RETRY)
    if not delivered.get("audited"):
        ctx.set_custom_status(OWED_AUDIT)
        yield ctx.call_activity(activities.audit, input={"job": job, "forecast": result},
                                retry_policy=AUDIT_RETRY)
    return result


def register(runtime: wf.WorkflowRuntime) -> None:
    runtime.register_workflow(forecast_workflow_v3, name=WORKFLOW_NAME)
    runtime.register_workflow(forecast_workflow_v2, name=LEGACY_WORKFLOW_NAME)
    for activity in (activities.make_forecast, activities.deliver, activities.audit):
        runtime.register_activity(activity, name=activity.__name__)
    patches.register(runtime)
