"""The workflow watchdog: finds forecast, batch, fleet and training instances
stuck PENDING or RUNNING past their deadline, or gone from the state store,
and mends them: re-driven once from their input (the same instance id, so
the forecast id a caller holds stays good), then failed with a reason.

Why the app watches its own workflows: Dapr 1.18.2 has known ways to leave
an instance stuck (its start reminder failing during a graceful scheduler
shutdown leaves it PENDING; activity reminders orphaned during placement
churn, dapr/dapr#10332, leave it RUNNING), a failover of the state store to
an older snapshot (Memorystore replicates asynchronously) can forget an
instance altogether, and this project cannot take 1.18.3+. So every
instance the forecaster starts is registered in PostgreSQL with its input
and the time by which it must have finished (`workflow_runs`,
services/forecaster/instances.start_once), and a Dapr job
(`intraday-watchdog`, INTRADAY_WATCHDOG_SCHEDULE, one replica per tick)
looks at those past it:

- finished (COMPLETED, FAILED, TERMINATED): settled;
- RUNNING with its audit owed (the forecast is out and its audit row waits
  for PostgreSQL, custom status `owed-audit`): rightly running, looked at
  again at the end of the audit's hour;
- PENDING, RUNNING, or gone: terminated if it exists and started again from
  its input, once; stuck or gone again, terminated with the reason (its
  status then says why) and settled. Each is logged at ERROR and counted
  (`intraday_workflows_mended_total`, the WorkflowsStuck alert).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import dapr.ext.workflow as wf

from clients import metrics
from clients.audit_pool import audit_pool
from intraday.audit import workflow_runs
from intraday.config import get_settings
from intraday.forecasting.request import forecast_id
from services.forecaster import engine_guard, instances
from workflows.fleet import BATCH_WORKFLOW_NAME, FLEET_WORKFLOW_NAME
from workflows.forecast import OWED_AUDIT
from workflows.training import TRAINING_WORKFLOW_NAME

log = logging.getLogger("forecaster.watchdog")
WATCHDOG_JOB = "intraday-watchdog"
REDRIVES = 1  # started again at most this often, then failed
# How long an instance may rightly live past its start, beyond the forecast
# deadline: a fleet forecast of 10,000 devices takes about 11 s, one a
# caller waits for at most 300 s; a training at most hours.
FLEET_LIFETIME = timedelta(seconds=300)
TRAINING_LIFETIME = timedelta(hours=3)
OWED_AUDIT_TIME = timedelta(hours=1)  # workflows/forecast.py AUDIT_RETRY


def lifetime(workflow: str) -> timedelta:
    """How long an instance of `workflow` may run before the watchdog looks."""
    grace = timedelta(seconds=get_settings().watchdog_grace_seconds)
    if workflow == FLEET_WORKFLOW_NAME:
        return FLEET_LIFETIME + grace
    if workflow == TRAINING_WORKFLOW_NAME:
        return TRAINING_LIFETIME + grace
    return timedelta(seconds=get_settings().forecast_deadline_seconds) + grace


def register(instance_id: str, workflow: str, payload: dict[str, Any]) -> None:
    """Record an instance just started; a failure here is logged, not raised
    (the instance runs; only the watchdog does not know of it)."""
    try:
        # Not the pool's 30 s wait: with PostgreSQL down, forecasts still start.
        with audit_pool().connection(timeout=2) as conn:
            workflow_runs.register(conn, instance_id, workflow, payload, lifetime(workflow))
    except Exception as e:  # noqa: BLE001 - the forecast must not fail for its register
        log.warning("workflow %s not registered with the watchdog: %s", instance_id, e)


def _recorded(conn: Any, run: dict[str, Any]) -> bool:
    """Whether what the instance makes is in the audit store: a completed
    instance's history is purged 10 s after it finishes (the workflow
    stateRetentionPolicy), so its absence from the state store alone does
    not say it was lost."""
    iid, workflow, job = run["instance_id"], run["workflow"], run["input"]
    if workflow == FLEET_WORKFLOW_NAME:
        return workflow_runs.fleet_recorded(conn, iid)
    if workflow == TRAINING_WORKFLOW_NAME:
        return workflow_runs.training_recorded(conn, iid)
    if workflow == BATCH_WORKFLOW_NAME:  # it ran, if any of its forecasts is recorded (some may fail)
        start = datetime.fromisoformat(job["forecast_start"])
        return workflow_runs.forecasts_recorded(conn, [
            forecast_id(d, start, job["horizon_intervals"], job["model_version"]) for d in job["device_ids"]],
            every=False)
    return workflow_runs.forecasts_recorded(conn, [iid])


def settle_seen(instance_id: str, outcome: str) -> None:
    """A waiting caller saw the instance finish: settled (best effort)."""
    try:
        with audit_pool().connection(timeout=2) as conn:
            workflow_runs.settle(conn, instance_id, outcome)
    except Exception as e:  # noqa: BLE001 - the watchdog settles it later
        log.debug("workflow %s not settled now: %s", instance_id, e)


def _custom_status(state: wf.WorkflowState) -> str:
    raw = state.serialized_custom_status or ""
    try:
        return str(json.loads(raw))
    except ValueError:
        return raw


def _terminated(instance_id: str, reason: str) -> bool:
    """Terminate an instance with `reason` as its output; True once it is
    finished (terminate is asynchronous; an engine that is stuck may never
    take it)."""
    instances.client.terminate_workflow(instance_id, output={"error": reason})
    for _ in range(20):
        state = instances.read_state(instances.client.get_workflow_state, instance_id, fetch_payloads=False)
        if state is None or state.runtime_status in instances.FINISHED:
            return True
        time.sleep(0.5)
    return False


def mend(run: dict[str, Any], now: datetime | None = None) -> str:
    """Look at one overdue instance and do what it needs; what was done."""
    now = now or datetime.now(UTC)
    iid, workflow = run["instance_id"], run["workflow"]
    state = instances.read_state(instances.client.get_workflow_state, iid, fetch_payloads=False)
    with audit_pool().connection() as conn:
        if state is not None and state.runtime_status in instances.FINISHED:
            workflow_runs.settle(conn, iid, state.runtime_status.name)
            return "settled"
        if state is None and _recorded(conn, run):
            workflow_runs.settle(conn, iid, "COMPLETED")  # and purged since
            return "settled"
        owed_until = run["started_at"] + lifetime(workflow) + OWED_AUDIT_TIME
        if state is not None and state.runtime_status == wf.WorkflowStatus.RUNNING \
                and _custom_status(state) == OWED_AUDIT and now < owed_until:
            workflow_runs.extend(conn, iid, owed_until)
            return "owed_audit"
    seen = state.runtime_status.name if state is not None else "gone from the state store"
    if workflow == BATCH_WORKFLOW_NAME:
        pass  # no run-started step (workflows/patches.py): nothing known of its steps here
    elif run.get("running_at") is None:
        seen += ", no step of it seen running"  # the run-started patch's stamp
    else:
        seen += f", its first step began {(run['running_at'] - run['started_at']).total_seconds():.0f} s in"
    redrive = run["redriven"] < REDRIVES
    if redrive:
        age_s = (now - run["started_at"]).total_seconds()
        reason = f"{seen} {age_s:.0f} s after its start: started again by the watchdog"
    else:
        reason = (f"stuck ({seen}) past its deadline after being started again: failed by the watchdog; "
                  "ask for it again")
    # Outside the connection: termination may take seconds to be taken.
    if state is not None and not _terminated(iid, reason):
        log.error("workflow %s (%s) is %s and does not take termination; trying again later", iid, workflow,
                  seen)
        return "unmendable"
    with audit_pool().connection() as conn:
        if redrive:
            # Reset before the start, in one transaction with it: the new
            # run's first step stamps running_at after this, not before.
            with conn.transaction():
                workflow_runs.redriven(conn, iid, lifetime(workflow))
                instances.client.schedule_new_workflow(workflow, input=run["input"], instance_id=iid)
        else:
            workflow_runs.settle(conn, iid, f"failed: {reason}")
    action = "redriven" if redrive else "failed"
    log.error("workflow %s (%s): %s", iid, workflow, reason)
    metrics.WORKFLOWS_MENDED.labels(workflow, action).inc()
    return action


def sweep() -> dict[str, int]:
    """Every overdue instance looked at once; counts by what was done."""
    with audit_pool().connection() as conn:
        due = workflow_runs.overdue(conn)
    done: Counter[str] = Counter()
    for run in due:
        try:
            done[mend(run)] += 1
        except Exception as e:  # noqa: BLE001 - one instance's trouble does not stop the others
            engine_guard.guard.seen(e)
            log.warning("watchdog: %s not mended this time: %s", run["instance_id"], e)
            done["error"] += 1
    if due:
        log.info("watchdog: %d overdue instances: %s", len(due), dict(done))
    return dict(done)
