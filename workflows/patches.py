"""Changing a workflow while instances of it are in flight.

An instance's history replays against the code that runs it now: after a
deploy, an instance the previous release started re-runs the new code from
its first line, and each step the code schedules must be the step its
history recorded at that place. A step added, removed or moved fails the
replay (a non-determinism error: the instance FAILED). Two ways to change a
workflow, then:

- a new version under a new name, the old one kept registered for a
  release (`forecast_workflow_v2` -> `v3`, workflows/forecast.py): for a
  change of the whole shape;
- a patch, for a step added or changed in place: the new code behind
  `if patched(ctx, NAME):`, the old code in the `else` (or nothing, for a
  step added). The SDK (`ctx.is_patched`) answers True for an instance
  that reaches the place for the first time on code that has the patch
  (and records the patch in its history), False for one whose history got
  there before the patch existed; so each instance keeps the path it
  started on. A patch's old branch can go once no instance that started
  before it can still be running (the longest lifetime: training, 3 hours;
  an owed audit, an hour), i.e. the release after.

Patches so far (each name is forever: never reuse one):

- `run-started` (forecast, fleet and training workflows): a first step,
  alongside the first real one, stamps the instance's `running_at` in the
  watchdog's register (services/forecaster/watchdog.py): when it actually
  began running, so a run never taken off the scheduler's queue is told
  from one stalled in a step, and the wait between start and run (the
  backlog under a burst) is measured (`intraday_workflow_queue_seconds`).

INTRADAY_WORKFLOW_PATCHES_WITHHELD (comma-separated names) makes this
process run as the release before those patches did: the old branch, as
if the patch were not written yet. It exists for the deploy test
(tests/faults/test_deploy.py: instances started by the release before a
patch, the forecaster restarted with it). Refused in production: a
release rolled back under instances that took a patch fails their replay,
so a patch is rolled forward, never back.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import dapr.ext.workflow as wf

from intraday.config import get_settings

log = logging.getLogger(__name__)

RUN_STARTED = "run-started"
KNOWN = (RUN_STARTED,)


def withheld() -> frozenset[str]:
    names = {n.strip() for n in get_settings().workflow_patches_withheld.split(",") if n.strip()}
    unknown = names - set(KNOWN)
    if unknown:
        raise ValueError(f"unknown workflow patch(es) withheld: {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(KNOWN)}")
    return frozenset(names)


def patched(ctx: wf.DaprWorkflowContext, name: str) -> bool:
    """Whether this instance takes the patch `name` (see the module's text)."""
    if name not in KNOWN:
        raise ValueError(f"unknown workflow patch {name!r}")
    if name in withheld():
        return False
    return ctx.is_patched(name)


# -- run-started -----------------------------------------------------------------

def run_started(ctx: wf.WorkflowActivityContext, payload: dict) -> bool:
    """The `run-started` step: stamp the instance's running_at in the
    watchdog's register and observe its wait. Best effort: a stamp, not
    something the forecast depends on; False when it could not be made
    (PostgreSQL down, the instance not registered within a second)."""
    from clients.audit_pool import audit_pool
    from clients.metrics import WORKFLOW_QUEUE_SECONDS
    from intraday.audit import workflow_runs

    # The register's row is written just after the start, so the step often
    # runs a few milliseconds before it: look again soon, then less often.
    # The workflow waits for this step before it returns, so a fixed 200 ms
    # pause here was 200 ms on every lone forecast (bench/load.py, 2026-12-07).
    for pause in (*REGISTER_WAITS, None):
        try:
            with audit_pool().connection(timeout=2) as conn:
                waited = workflow_runs.running(conn, payload["instance_id"])
        except Exception as e:  # noqa: BLE001 - the run goes on without its stamp
            log.warning("workflow %s: running_at not stamped: %s", payload["instance_id"], str(e)[:200])
            return False
        if waited is not None:
            WORKFLOW_QUEUE_SECONDS.labels(payload["workflow"]).observe(waited)
            return True
        if pause is not None:
            time.sleep(pause)
    return False


REGISTER_WAITS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)  # seconds; about 0.8 s in all


# Stamping is one UPDATE; a retry or two covers a hiccup, never the forecast's time.
STAMP_RETRY = wf.RetryPolicy(first_retry_interval=timedelta(milliseconds=200), max_number_of_attempts=2)


def started(ctx: wf.DaprWorkflowContext, workflow: str) -> Any:
    """Schedule the `run-started` step alongside the workflow's first one
    (None for an instance without the patch). The workflow yields it before
    it returns, so that the step is not left pending."""
    if not patched(ctx, RUN_STARTED):
        return None
    return ctx.call_activity(run_started, input={"instance_id": ctx.instance_id, "workflow": workflow},
                             retry_policy=STAMP_RETRY)


def register(runtime: wf.WorkflowRuntime) -> None:
    withheld()  # a misspelt name stops the start, not each workflow
    runtime.register_activity(run_started, name=run_started.__name__)
