"""The forecaster's workflow instances: started once per id, their state
read (retried through daprd's transient answers), their views and status
codes, and the results the audit store holds once they finished."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import dapr.ext.workflow as wf
from grpc import RpcError, StatusCode

from clients import metrics
from clients.audit_pool import audit_pool
from intraday.audit import db as audit_db
from intraday.config import get_settings
from intraday.errors import UnknownDevice
from services.forecaster import engine_guard
from workflows.contracts import ForecastJob
from workflows.forecast import WORKFLOW_NAME

TERMINAL_RERUN = {wf.WorkflowStatus.FAILED, wf.WorkflowStatus.TERMINATED}
FINISHED = {wf.WorkflowStatus.COMPLETED, *TERMINAL_RERUN}
client: wf.DaprWorkflowClient = None  # type: ignore[assignment]  # set by the app's lifespan
_starting: dict[str, asyncio.Lock] = {}


@asynccontextmanager
async def starting_lock(fid: str):
    """One scheduling attempt per instance id at a time in this process
    (across processes, the workflow's "already exists" answer decides)."""
    lock = _starting.setdefault(fid, asyncio.Lock())
    try:
        async with lock:
            yield
    finally:
        if not lock.locked() and _starting.get(fid) is lock:
            del _starting[fid]


def view_of(fid: str, state: wf.WorkflowState | None) -> dict:
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
    elif state.runtime_status == wf.WorkflowStatus.TERMINATED:
        import json

        output = json.loads(state.serialized_output) if state.serialized_output else None
        reason = output.get("error") if isinstance(output, dict) else None
        body["error"] = body["detail"] = reason or "terminated"
    return body


def status_code(view: dict) -> int:
    status = view["status"]
    if status == "COMPLETED":
        return 200
    if status == "NOT_FOUND":
        return 404
    if status in ("FAILED", "TERMINATED"):
        error = view.get("error", "")
        if "unknown_device" in error:
            return 404
        if "insufficient_history" in error or "invalid_request" in error:
            return 422
        return 500
    return 202  # still running


def wait_seconds() -> int:
    """How long a waiting request follows its workflow: past the deadline,
    so that it sees the deadline's FAILED and its reason, not RUNNING."""
    return int(get_settings().forecast_deadline_seconds) + 10


def waited(workflow: str, state: wf.WorkflowState | None) -> None:
    """Count the final status of an instance the forecaster waited for."""
    metrics.WORKFLOW_OUTCOMES.labels(workflow, state.runtime_status.name if state else "NOT_FOUND").inc()


async def finished(workflow: str, instance_id: str, state: wf.WorkflowState | None) -> None:
    """An instance waited for: its final status counted and, once finished,
    settled in the watchdog's register (so that the watchdog need not tell
    a finished one whose history was purged from a lost one)."""
    waited(workflow, state)
    if state is not None and state.runtime_status in FINISHED:
        from services.forecaster import watchdog

        await asyncio.to_thread(watchdog.settle_seen, instance_id, state.runtime_status.name)


def read_recorded(fid: str) -> dict | None:
    """The forecast as the audit store holds it, once its workflow has
    written it there (the workflow's last step)."""
    with audit_pool().connection() as conn:
        return audit_db.read_forecast(conn, fid)


def read_recorded_many(fids: list[str]) -> dict[str, dict]:
    with audit_pool().connection() as conn:
        return audit_db.read_results(conn, fids)


def read_state(read, fid: str, **kwargs) -> wf.WorkflowState | None:
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


def start_once(fid: str, job: ForecastJob | dict, workflow: str = WORKFLOW_NAME) -> bool:
    """Schedule the workflow unless an instance with this id exists (running
    or completed); a failed or terminated one is run again. True if started."""
    state = read_state(client.get_workflow_state, fid, fetch_payloads=False)
    if state is not None and state.runtime_status not in TERMINAL_RERUN:
        return False
    payload = job.model_dump() if isinstance(job, ForecastJob) else job
    try:
        client.schedule_new_workflow(workflow, input=payload, instance_id=fid)
    except RpcError as e:
        engine_guard.guard.seen(e)
        if "already exists" in (e.details() or ""):
            return False
        raise
    engine_guard.guard.answered()
    from services.forecaster import watchdog  # it reads this module's client

    watchdog.register(fid, workflow, payload)
    return True


def require_in_fleet(devices: list[str], known: dict) -> None:
    """UnknownDevice (404) naming the first ten devices not in the fleet."""
    unknown = [d for d in dict.fromkeys(devices) if d not in known]
    if unknown:
        raise UnknownDevice(", ".join(unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10
                                                       else ""))


def read_recorded_fleet(fid: str, table: bool = False) -> dict | None:
    with audit_pool().connection() as conn:
        return audit_db.read_fleet_forecast(conn, fid, table)


