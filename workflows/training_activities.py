"""The training workflow's activities (workflows/training.py).

- `train_and_evaluate`: reads the training window through the telemetry
  service (never the embedded store, which the telemetry service holds),
  trains a candidate on the data before the held-out days, scores it and the
  served model on those days (intraday/forecasting/evaluation.py) and stores
  the candidate as a new version. The work runs in a child process at low
  priority, so forecasts keep their CPU and this process's memory stays its
  own; a retried step finds the candidate its training id already stored.
- `decide_training`: promotes the candidate if it is better (or forced) and
  the champion it was scored against is still the one served, then records
  the decision and both sets of metrics (PostgreSQL `model_trainings`).
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import dapr.ext.workflow as wf
import numpy as np
import pandas as pd

from clients import sidecar
from clients.audit_pool import audit_pool
from intraday import failpoints
from intraday.audit import db
from intraday.forecasting import baseline
from intraday.forecasting.types import FleetWindow
from intraday.timeutil import isoformat_z
from workflows.activities import step

log = logging.getLogger(__name__)
WINDOW_CHUNK = 1_000  # devices per /windows call: 30 days of float32 is 11.5 MB, inside the 64 MiB body limit
CHILD_NICENESS = 10


class RemoteTelemetry:
    """The four reads `backtest.from_store` makes, over service invocation
    to the telemetry service (what the training data is, whoever holds the
    store)."""

    def __init__(self) -> None:
        self.http = sidecar.sync_client()

    def _get(self, path: str, **params) -> Any:
        r = self.http.get(f"/v1.0/invoke/telemetry/method/{path}", params=params,
                          timeout=sidecar.LONG_TIMEOUT)
        return sidecar._raise_for(r).json()

    def devices(self) -> list[dict]:
        return self._get("devices")

    def fleet_window(self, start: datetime, end: datetime, device_ids: list[str]) -> FleetWindow:
        parts = [sidecar.fetch_windows(device_ids[i : i + WINDOW_CHUNK], start, end).values
                 for i in range(0, len(device_ids), WINDOW_CHUNK)]
        return FleetWindow(np.asarray(device_ids), start, np.vstack(parts))

    def weather_window(self, locations: list[str], start: datetime, end: datetime,
                       as_of: datetime) -> np.ndarray:
        rows = [self._get(f"weather/{loc}", start=isoformat_z(start), end=isoformat_z(end),
                          as_of=isoformat_z(as_of))["values"] for loc in locations]
        return np.array(rows, dtype=float).reshape(len(locations), -1)

    def weather_forecasts(self, locations: list[str], start: datetime, end: datetime) -> pd.DataFrame:
        r = self.http.post("/v1.0/invoke/telemetry/method/weather-forecasts", timeout=sidecar.LONG_TIMEOUT,
                           json={"locations": locations, "start": isoformat_z(start),
                                 "end": isoformat_z(end)})
        return pd.read_parquet(io.BytesIO(sidecar._raise_for(r).content))


def _nice() -> None:
    os.nice(CHILD_NICENESS)


def _stored_candidate(store, training_id: str) -> dict | None:
    for m in reversed(store.versions()):
        if m.get("training_id") == training_id:
            return m
    return None


def run_training(job: dict) -> dict:
    """The training itself (in the child process): the window, the
    candidate, both scores. Returns what the decision needs."""
    from intraday.forecasting import backtest, evaluation, modelstore
    from intraday.forecasting.model import QuantileModel, TrainingConfig

    store = modelstore.default_store()
    champion_version = store.promoted()
    end = datetime.fromisoformat(job["end"])
    start = end - timedelta(days=job["days"])
    data = backtest.from_store(RemoteTelemetry(), start, end)
    H = data.panel.per_day
    config = TrainingConfig(horizon=H, train_rows=job["train_rows"], num_trees=job["trees"],
                            tail_trees=max(10, job["trees"] // 2))
    stored = _stored_candidate(store, job["training_id"])
    if stored is not None:  # a retried step: the candidate exists
        candidate = QuantileModel.from_bytes(store.artifact(stored["version"]))
        origins = evaluation.holdout_origins(data, job["holdout_days"], H)
        version = stored["version"]
    else:
        candidate, origins = evaluation.train_candidate(data, config, job["holdout_days"])
        candidate.manifest["data"] = {"telemetry_service": True, "days": job["days"],
                                      "window": [isoformat_z(start), isoformat_z(end)]}
        candidate.manifest["training_id"] = job["training_id"]
        version = store.save(candidate.to_bytes(), candidate.manifest)
    champion = QuantileModel.from_bytes(store.artifact(champion_version)) if champion_version else None
    result = evaluation.evaluate(candidate, champion, data, origins, H)
    return {"candidate_version": version, "champion_version": champion_version or baseline.MODEL_VERSION,
            "evaluation": result.to_dict(), "devices": int(len(data.panel.device_ids)),
            "data_start": isoformat_z(data.panel.timestamp(0)),
            "data_end": isoformat_z(data.panel.timestamp(data.panel.intervals))}


@step("training")
def train_and_evaluate(ctx: wf.WorkflowActivityContext, job: dict) -> dict:
    from lightgbm.basic import LightGBMError

    from intraday.errors import InvalidRequest

    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn, initializer=_nice) as child:
        try:
            return child.submit(run_training, job).result()
        except InvalidRequest as e:  # too little data, no device: not worth retrying
            return {"error": str(e), "kind": "invalid_request"}
        except LightGBMError as e:  # the data cannot be fit: the same again would not be either
            return {"error": f"the training data could not be fit: {e}", "kind": "invalid_request"}


@step("training")
def decide_training(ctx: wf.WorkflowActivityContext, payload: dict) -> dict:
    from intraday.forecasting import evaluation, modelstore

    failpoints.reach(failpoints.TRAINING_BEFORE_DECISION)
    job, outcome = payload["job"], payload["outcome"]
    e = outcome["evaluation"]
    result = evaluation.Evaluation(e["origins"], e["candidate"], e["champion"], e["champion_in_sample"],
                                   e.get("test"))
    promote, reason = evaluation.decide(result, job["force"])
    store = modelstore.default_store()
    served = store.promoted() or baseline.MODEL_VERSION
    candidate = outcome["candidate_version"]
    if promote and served not in (outcome["champion_version"], candidate) and not job["force"]:
        # Someone promoted another version meanwhile: it was not what this
        # candidate was scored against.
        promote, reason = False, f"not promoted: {served} was promoted during the training; {reason}"
    if promote and served != candidate:
        store.promote(candidate)
    row = {"training_id": job["training_id"], "trigger": job["trigger"], "requested_by": job["requested_by"],
           "requested_at": job["requested_at"], "data_start": outcome["data_start"],
           "data_end": outcome["data_end"], "devices": outcome["devices"], "candidate_version": candidate,
           "champion_version": outcome["champion_version"], "promoted": promote, "forced": job["force"],
           "reason": reason, "evaluation": e, "trace_id": job.get("trace_id")}
    with audit_pool().connection() as conn:
        db.record_training(conn, row)
        return db.read_trainings(conn, 1, job["training_id"])[0]
