"""make_forecast's deadline (workflows/activities.py): the step stops
waiting for its work at the deadline the workflow set, gives up at once when
it starts past it, and returns the work's result or error otherwise."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from workflows import activities
from workflows.contracts import ForecastJob


def _job(deadline: datetime | None) -> ForecastJob:
    now = datetime.now(UTC)
    return ForecastJob(forecast_id="f-1", device_id="hp-0001", forecast_start=now.isoformat(),
                       horizon_intervals=96, model_version="v1", requested_by="test",
                       requested_at=now.isoformat(),
                       deadline=None if deadline is None else deadline.isoformat())


def test_a_part_that_hangs_fails_the_step_at_the_deadline(monkeypatch):
    release = threading.Event()
    started = threading.Event()

    def hangs(job):
        started.set()
        release.wait(10)
        return {"made": True}

    monkeypatch.setattr(activities, "_make", hangs)
    t0 = time.monotonic()
    out = activities.make_forecast(None, _job(datetime.now(UTC) + timedelta(seconds=0.4)))
    waited = time.monotonic() - t0
    release.set()
    assert started.is_set()
    assert out == {"error": "deadline of 60 s passed while making the forecast", "kind": "deadline"}
    assert waited < 5  # gave up at the deadline, not when the part let go


def test_a_step_that_starts_past_the_deadline_does_nothing(monkeypatch):
    called = []
    monkeypatch.setattr(activities, "_make", lambda job: called.append(job) or {"made": True})
    # The workflow's clock is naive UTC: read as UTC.
    past = (datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None)
    assert activities.make_forecast(None, _job(past))["kind"] == "deadline"
    assert not called


def test_in_time_the_work_answers_and_its_errors_are_raised_for_a_retry(monkeypatch):
    monkeypatch.setattr(activities, "_make", lambda job: {"made": job.device_id})
    in_time = _job(datetime.now(UTC) + timedelta(seconds=30))
    assert activities.make_forecast(None, in_time) == {"made": "hp-0001"}
    # An instance of version 2 carries no deadline: its durable timer is the deadline.
    assert activities.make_forecast(None, _job(None)) == {"made": "hp-0001"}

    def fails(job):
        raise ConnectionError("sidecar gone")

    monkeypatch.setattr(activities, "_make", fails)
    with pytest.raises(ConnectionError, match="sidecar gone"):
        activities.make_forecast(None, _job(datetime.now(UTC) + timedelta(seconds=30)))
