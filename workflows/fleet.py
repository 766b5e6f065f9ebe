"""The fleet forecast workflow: the portfolio of many devices in one instance.

    shards (fan-out) -> forecast_shard: windows in one telemetry query,
                        vectorised inference, audit (one COPY), bulk publish
                     -> record_fleet (fan-in): the portfolio from the shards'
                        partials, its audit row

Each shard returns a summary (counts, the devices that failed); the sums
the total needs (portfolio.Partial, up to hundreds of KB with many
locations) go to the state store under the fleet forecast's id, and device
forecast ids follow from the job, so the workflow history stays small
whatever the fleet (daprd hands the whole history to the orchestrator on
every step, over gRPC with a 4 MB limit); the numbers live in the audit
store. The instance id
comes from (devices, forecast start, horizon, model version), and every
device forecast keeps the id the single path gives it.
"""

from __future__ import annotations

from datetime import timedelta

import dapr.ext.workflow as wf

from workflows import fleet_activities as activities
from workflows import patches
from workflows.forecast import IO_RETRY

FLEET_WORKFLOW_NAME = "fleet_forecast_workflow"
BATCH_WORKFLOW_NAME = "batch_forecast_workflow"

# A shard's I/O (telemetry query, COPY, bulk publish) takes seconds, not
# milliseconds: the same backoff, more room.
SHARD_RETRY = wf.RetryPolicy(
    first_retry_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=5),
    max_number_of_attempts=5,
    retry_timeout=timedelta(seconds=60),
)


def fleet_forecast_workflow(ctx: wf.DaprWorkflowContext, job: dict):
    stamping = patches.started(ctx, FLEET_WORKFLOW_NAME)  # alongside the first shards
    devices = job["device_ids"]
    size = job["shard_size"]
    shards = [devices[i : i + size] for i in range(0, len(devices), size)]
    # At most `parallel_shards` in flight: a pipeline (one reads while
    # another infers, a third publishes and audits), not every shard at once
    # queueing for the same two cores and holding its windows meanwhile.
    parallel = max(1, int(job.get("parallel_shards") or len(shards)))
    tasks: list = []
    running: list = []
    for k, shard in enumerate(shards):
        if len(running) >= parallel:
            done = yield wf.when_any(running)
            running.remove(done)
        task = ctx.call_activity(activities.forecast_shard, input={**job, "device_ids": shard, "shard": k},
                                 retry_policy=SHARD_RETRY)
        tasks.append(task)
        running.append(task)
    results = yield wf.when_all(tasks)
    summary = yield ctx.call_activity(
        activities.record_fleet, input={"job": {**job, "device_ids": devices}, "shards": results},
        retry_policy=IO_RETRY)
    if stamping is not None:
        yield stamping
    return summary


def batch_forecast_workflow(ctx: wf.DaprWorkflowContext, job: dict):
    """Concurrent single-device requests batched under load
    (services/forecaster/batching.py): one shard, no portfolio; each device
    forecast keeps its own id, audit row and message."""
    result = yield ctx.call_activity(activities.forecast_shard, input={**job, "partial": False},
                                     retry_policy=SHARD_RETRY)
    return result


def register(runtime: wf.WorkflowRuntime) -> None:
    runtime.register_workflow(fleet_forecast_workflow, name=FLEET_WORKFLOW_NAME)
    runtime.register_workflow(batch_forecast_workflow, name=BATCH_WORKFLOW_NAME)
    for activity in (activities.forecast_shard, activities.record_fleet):
        runtime.register_activity(activity, name=activity.__name__)
