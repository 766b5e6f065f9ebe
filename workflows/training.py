"""The training workflow: train and evaluate -> decide (promote or keep) and record.

    train_and_evaluate: the window through the telemetry service, a
                        candidate trained before the held-out days, it and
                        the champion scored on those days, the candidate stored
    decide_training:    promoted only if better (or forced), the decision and
                        both sets of metrics recorded in `model_trainings`

Started on demand (`POST /trainings`, `intraday train` while the stack runs)
and daily by Dapr's scheduler (the Jobs API: services/forecaster/routes/trainings.py).
The instance id is the training id: a request repeated with the same window
and the same champion finds the same training, and the daily job's id is
its date, so a job delivered twice trains once.
"""

from __future__ import annotations

from datetime import timedelta

import dapr.ext.workflow as wf

from workflows import patches
from workflows import training_activities as activities
from workflows.forecast import IO_RETRY, ForecastFailed, _check

TRAINING_WORKFLOW_NAME = "training_workflow"

# Training takes minutes; a crashed attempt (the child process killed, the
# telemetry service restarting) is worth two more.
TRAIN_RETRY = wf.RetryPolicy(
    first_retry_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=30),
    max_number_of_attempts=3,
)


def training_workflow(ctx: wf.DaprWorkflowContext, job: dict):
    running = patches.started(ctx, TRAINING_WORKFLOW_NAME)  # alongside the training
    outcome = _check((yield ctx.call_activity(activities.train_and_evaluate, input=job,
                                              retry_policy=TRAIN_RETRY)))
    decision = yield ctx.call_activity(activities.decide_training, input={"job": job, "outcome": outcome},
                                       retry_policy=IO_RETRY)
    if running is not None:
        yield running
    return decision


def register(runtime: wf.WorkflowRuntime) -> None:
    runtime.register_workflow(training_workflow, name=TRAINING_WORKFLOW_NAME)
    for activity in (activities.train_and_evaluate, activities.decide_training):
        runtime.register_activity(activity, name=activity.__name__)


__all__ = ["TRAINING_WORKFLOW_NAME", "ForecastFailed", "register"]
