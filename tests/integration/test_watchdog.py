"""The workflow watchdog (services/forecaster/watchdog.py) on the real
stack, which runs it every 5 s, 10 s past an instance's deadline: an
instance gone from the state store (as a failover to an older snapshot
loses one) is started again from its input and finishes under its own id;
gone again, it is failed with a reason; a finished one whose history was
purged is settled, not started again."""

from __future__ import annotations

import uuid

import httpx
import pytest
from psycopg.types.json import Jsonb

from tests.stack import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _run(pg, instance_id: str) -> dict | None:
    row = pg.execute("SELECT workflow, input, redriven, settled_at, outcome, running_at FROM workflow_runs"
                     " WHERE instance_id = %s", (instance_id,)).fetchone()
    columns = ("workflow", "input", "redriven", "settled_at", "outcome", "running_at")
    return dict(zip(columns, row, strict=True)) if row else None


def _metric(series: str) -> float:
    text = httpx.get("http://127.0.0.1:8001/metrics", timeout=5).text
    return next(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(series))


def _mended(action: str) -> float:
    return _metric(f'intraday_workflows_mended_total{{action="{action}",workflow="forecast_workflow_v3"}}')


def test_lost_instances_are_started_again_then_failed_and_finished_ones_settled(gateway, pg):
    r = gateway.post("/forecast/intraday", params={"wait": "true"},
                     json={"device_id": "hp-0007", "horizon_hours": 1})
    assert r.status_code == 200, r.text
    made = r.json()["forecast_id"]
    run = _run(pg, made)
    assert run and run["workflow"] == "forecast_workflow_v3" and run["input"]["device_id"] == "hp-0007"
    # Its first step stamped when it began running (the run-started patch), and its wait was observed.
    assert run["running_at"] is not None, run
    assert _metric('intraday_workflow_queue_seconds_count{workflow="forecast_workflow_v3"}') >= 1
    redriven, failed = _mended("redriven"), _mended("failed")

    # Registered, overdue, and gone from the state store: the watchdog starts it again.
    lost = f"fc-watchdog-{uuid.uuid4().hex[:8]}"
    pg.execute("INSERT INTO workflow_runs (instance_id, workflow, input, due_at) VALUES"
               " (%s, 'forecast_workflow_v3', %s, now() - interval '1 second')",
               (lost, Jsonb({**run["input"], "forecast_id": lost})))
    # Gone again after being started again: failed, with the reason.
    gone = f"fc-watchdog-{uuid.uuid4().hex[:8]}"
    pg.execute("INSERT INTO workflow_runs (instance_id, workflow, input, due_at, redriven) VALUES"
               " (%s, 'forecast_workflow_v3', %s, now() - interval '1 second', 1)",
               (gone, Jsonb({**run["input"], "forecast_id": gone})))

    view = eventually(lambda: (v := gateway.get(f"/forecast/{lost}")).status_code == 200 and v.json(),
                      timeout=60)
    assert view and view["status"] == "COMPLETED" and view["forecast_id"] == lost, view
    again = _run(pg, lost)
    assert again["redriven"] == 1 and again["running_at"] is not None, again
    assert _mended("redriven") >= redriven + 1
    settled = eventually(lambda: (x := _run(pg, gone)) and x["settled_at"] and x, timeout=60)
    assert settled and settled["outcome"].startswith(
        "failed: stuck (gone from the state store, no step of it seen running)"), settled
    assert _mended("failed") >= failed + 1
    assert gateway.get(f"/forecast/{gone}").status_code == 404  # nothing made under it

    # The finished one (its history purged 10 s after) is settled as COMPLETED, not started again.
    done = eventually(lambda: (x := _run(pg, made)) and x["settled_at"] and x, timeout=150)
    assert done and done["outcome"] == "COMPLETED" and done["redriven"] == 0, done
    audited = pg.execute("SELECT count(*) FROM forecast_requests WHERE request_id = ANY(%s)",
                         ([made, lost],)).fetchone()[0]
    assert audited == 2
