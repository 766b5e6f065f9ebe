"""A deploy that changes the workflows while instances are in flight
(workflows/patches.py): the forecaster runs as the release before the
`run-started` patch, a forecast, a fleet forecast and a training are held
mid-way (each past its first step), and the forecaster is restarted as a
deploy does (SIGTERM, SIGKILL after a grace period) with the patch. Each
of the three replays its history on the new code and finishes COMPLETED on
the path it started on (no run-started step, no non-determinism failure);
an instance started after the deploy takes the new step."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from intraday import failpoints
from intraday.timeutil import floor_quarter_hour, isoformat_z
from tests.stack import app_pid, eventually, healthy

pytestmark = pytest.mark.timeout(600)

PATCH = "run-started"
GRACE_S = 10  # as terminationGracePeriodSeconds: then SIGKILL (the held steps never end by themselves)


def _deploy(stack: dict, changes: dict[str, str | None]) -> None:
    """The forecaster started again with `changes` to its environment, as a
    rollout replaces a pod: SIGTERM, SIGKILL if it is still there after the
    grace period; back once it answers."""
    env_dir = Path(stack["data_dir"]) / "run" / "env"
    env_dir.mkdir(parents=True, exist_ok=True)
    (env_dir / "forecaster").write_text(json.dumps(changes))
    pid = app_pid("forecaster")
    os.kill(pid, signal.SIGTERM)
    if not eventually(lambda: not Path(f"/proc/{pid}").exists(), timeout=GRACE_S):
        os.kill(pid, signal.SIGKILL)
        assert eventually(lambda: not Path(f"/proc/{pid}").exists(), timeout=10)
    assert eventually(lambda: healthy(8001) and app_pid("forecaster") != pid, timeout=120), \
        "the forecaster did not come back"
    environ = Path(f"/proc/{app_pid('forecaster')}/environ").read_bytes().decode().split("\0")
    for key, value in changes.items():
        assert (f"{key}={value}" in environ) if value is not None else \
            not any(e.startswith(f"{key}=") for e in environ), (key, value)


def _status(gateway: httpx.Client, path: str) -> str:
    r = gateway.get(path)
    return r.json().get("status", "") if r.status_code in (200, 202) else f"HTTP {r.status_code}"


def _running_at(pg, instance_id: str):
    row = pg.execute("SELECT workflow, running_at FROM workflow_runs WHERE instance_id = %s",
                     (instance_id,)).fetchone()
    assert row is not None, f"{instance_id} not in the watchdog's register"
    return row


@pytest.fixture
def fallback_after(stack):
    """The training here may promote its candidate: the tests after start on the seasonal fallback."""
    yield
    (Path(stack["data_dir"]) / "models" / "PROMOTED").unlink(missing_ok=True)


def test_in_flight_instances_finish_across_a_deploy_that_adds_a_step(stack, gateway, pg, fallback_after):
    points = stack["failpoints"]
    _deploy(stack, {"INTRADAY_WORKFLOW_PATCHES_WITHHELD": PATCH})  # the release before the patch
    try:
        # A training, held once trained and scored (its second step).
        held_training = failpoints.arm(points, failpoints.TRAINING_BEFORE_DECISION, hang=300)
        end = floor_quarter_hour(datetime.now(UTC)) - timedelta(hours=1)
        r = gateway.post("/models/train", json={"days": 30, "holdout_days": 7, "train_rows": 10_000,
                                                "trees": 10, "end": isoformat_z(end)})
        assert r.status_code in (200, 202), r.text
        training = r.json()["training_id"]
        assert eventually(lambda: not held_training.exists(), timeout=240), "the training never got there"
        # A fleet forecast, its first shard held.
        held_shard = failpoints.arm(points, failpoints.FLEET_IN_SHARD, hang=300)
        r = gateway.post("/forecast/fleet", json={"horizon_hours": 4})
        assert r.status_code in (200, 202), r.text
        fleet = r.json()["forecast_id"]
        assert eventually(lambda: not held_shard.exists(), timeout=60), "no shard started"
        # Last (its deadline is 60 s): one device's forecast, held in its fetch.
        held_fetch = failpoints.arm(points, failpoints.FORECAST_IN_FETCH, hang=300)
        r = gateway.post("/forecast/intraday", json={"device_id": "hp-0005", "horizon_hours": 2})
        assert r.status_code in (200, 202), r.text
        single = r.json()["forecast_id"]
        assert eventually(lambda: not held_fetch.exists(), timeout=30), "the forecast never fetched"
        assert _running_at(pg, single)[0] == "forecast_workflow_v3"
        for path in (f"/forecast/{single}", f"/forecast/{fleet}", f"/models/trainings/{training}"):
            assert _status(gateway, path) in ("RUNNING", "PENDING"), (path, _status(gateway, path))
    finally:
        for point in (failpoints.TRAINING_BEFORE_DECISION, failpoints.FLEET_IN_SHARD,
                      failpoints.FORECAST_IN_FETCH):
            (points / point).unlink(missing_ok=True)

    _deploy(stack, {"INTRADAY_WORKFLOW_PATCHES_WITHHELD": None})  # the release with the patch
    for path in (f"/forecast/{single}", f"/forecast/{fleet}", f"/models/trainings/{training}"):
        assert eventually(lambda p=path: _status(gateway, p) not in ("RUNNING", "PENDING", "SCHEDULED"),
                          timeout=240), path
        view = gateway.get(path).json()
        assert view["status"] == "COMPLETED", (path, view)
    # Each kept the path it started on: no run-started step ran for it.
    for instance in (single, fleet, training):
        assert _running_at(pg, instance)[1] is None, instance
    # Made once, audited once.
    assert pg.execute("SELECT count(*) FROM forecast_requests WHERE request_id = %s",
                      (single,)).fetchone()[0] == 1
    assert pg.execute("SELECT count(*) FROM fleet_forecasts WHERE fleet_forecast_id = %s",
                      (fleet,)).fetchone()[0] == 1
    assert pg.execute("SELECT count(*) FROM model_trainings WHERE training_id = %s",
                      (training,)).fetchone()[0] == 1

    # Started on the new release: the new step runs.
    r = gateway.post("/forecast/intraday", params={"wait": "true"},
                     json={"device_id": "hp-0006", "horizon_hours": 2})
    assert r.status_code == 200, r.text
    fresh = r.json()["forecast_id"]
    assert eventually(lambda: _running_at(pg, fresh)[1] is not None, timeout=10), fresh
    r = gateway.post("/forecast/fleet", params={"wait": "true"}, json={"horizon_hours": 3})
    assert r.status_code == 200, r.text
    assert eventually(lambda: _running_at(pg, r.json()["forecast_id"])[1] is not None, timeout=10)
