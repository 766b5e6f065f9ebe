"""Retraining inside the running system (workflows/training.py): forecasts
served during a training see no error and no mixed model, a worse candidate
is kept out, `force` overrides, and Dapr's scheduler starts the daily one."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from intraday.timeutil import floor_quarter_hour, isoformat_z
from tests.stack import dapr_headers, eventually, intraday

END = floor_quarter_hour(datetime.now(UTC)) - timedelta(hours=1)  # the window every training here reads
SMALL = {"days": 30, "holdout_days": 7, "train_rows": 50_000, "trees": 30, "end": isoformat_z(END)}


def _finished(gateway: httpx.Client, tid: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = gateway.get(f"/models/trainings/{tid}").json()
        if view["status"] not in ("SCHEDULED", "EXISTS", "RUNNING", "PENDING"):
            assert view["status"] == "COMPLETED", view
            return view["result"]
        time.sleep(1)
    pytest.fail(f"training {tid} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def champion(stack, gateway, pg):
    """The first training of the session, run while forecasts are served:
    what they saw, and its decision. The model it promotes is unpromoted
    at the end (other tests start on the seasonal fallback)."""
    assert gateway.get("/models").json()["promoted"] is None
    # Forecasters re-read the promoted version every second here: a model an
    # earlier test has just unpromoted may still serve for up to that long.
    probe = floor_quarter_hour(datetime.now(UTC)) + timedelta(hours=5)

    def on_the_fallback() -> bool:
        r = gateway.post("/forecast/intraday", params={"wait": "true"},
                         json={"device_id": "hp-0001", "forecast_start": isoformat_z(probe),
                               "horizon_hours": 1})
        return r.status_code == 200 and r.json()["result"]["model_version"] == "baseline"
    assert eventually(on_the_fallback, timeout=30)
    served: list[tuple[str, dict]] = []  # (kind, result) in the order the requests were sent
    errors: list[str] = []
    done = threading.Event()
    start = floor_quarter_hour(datetime.now(UTC)) + timedelta(hours=1)

    def serve() -> None:
        k = 0
        while not done.is_set():
            k += 1
            sent = time.monotonic()
            try:
                if k % 4 == 0:
                    r = gateway.post("/forecast/fleet", params={"wait": "true"},
                                     json={"forecast_start": isoformat_z(start), "horizon_hours": 6})
                    kind = "fleet"
                else:
                    r = gateway.post("/forecast/intraday", params={"wait": "true"},
                                     json={"device_id": f"hp-{k % 24 + 1:04d}",
                                           "forecast_start": isoformat_z(start), "horizon_hours": 6})
                    kind = "device"
                if r.status_code != 200:
                    errors.append(f"{kind} {r.status_code}: {r.text[:300]}")
                else:
                    served.append((sent, kind, r.json()["result"]))
            except httpx.HTTPError as e:
                errors.append(repr(e))

    threads = [threading.Thread(target=serve) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        # Forecasts are served before the training starts, while it runs, and
        # after its model is promoted (forecasters re-read the version every second here).
        assert eventually(lambda: len(served) >= 4, timeout=120), errors
        r = gateway.post("/models/train", json=SMALL)
        assert r.status_code == 202, r.text
        decision = _finished(gateway, r.json()["training_id"])
        new = decision["candidate_version"]
        eventually(lambda: sum(res["model_version"] == new for _, _, res in served) >= 4, timeout=60)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=120)
    served = [(kind, result) for _, kind, result in sorted(served, key=lambda s: s[0])]
    yield {"decision": decision, "served": served, "errors": errors}
    promoted = stack["data_dir"] / "models" / "PROMOTED"
    promoted.unlink(missing_ok=True)


def test_a_training_while_forecasts_are_served_disturbs_none(champion, pg):
    decision, served = champion["decision"], champion["served"]
    assert champion["errors"] == []
    # It beat the seasonal fallback on the held-out days and was promoted.
    assert decision["promoted"] and decision["champion_version"] == "baseline", decision
    assert decision["trigger"] == "request" and decision["reason"].startswith("better: portfolio pinball")
    new = decision["candidate_version"]
    versions = [r["model_version"] for _, r in served]
    # Forecasts went on across the promotion: the fallback's, then the new model's.
    assert versions[0] == "baseline" and versions[-1] == new and set(versions) == {"baseline", new}
    # In the order they were asked for: the fallback's until the switch, the new model's after it.
    assert set(versions[versions.index(new):]) == {new}, versions
    # No forecast mixes models: a fleet forecast and every device forecast in it share one version.
    fleets = [r for kind, r in served if kind == "fleet"]
    assert fleets
    for fleet in fleets:
        ids = [d["forecast_id"] for d in fleet["device_forecasts"]]
        audited = {v for (v,) in pg.execute(
            "SELECT DISTINCT model_version FROM forecast_requests WHERE request_id = ANY(%s)", (ids,))}
        assert audited == {fleet["model_version"]} and len(ids) == 24
        assert not [n for n in fleet["portfolio"]["notes"] if "model versions" in n]


def test_the_decision_and_both_scores_are_recorded(champion, pg):
    decision = champion["decision"]
    row = pg.execute("SELECT candidate_version, champion_version, promoted, evaluation, data_end, devices"
                     " FROM model_trainings WHERE training_id = %s", (decision["training_id"],)).fetchone()
    candidate, champ, promoted, evaluation, data_end, devices = row
    assert (candidate, champ, promoted, devices) == (decision["candidate_version"], "baseline", True, 24)
    assert data_end == END
    assert len(evaluation["origins"]) == 7 and evaluation["decided_on"] == "portfolio pinball_mean"
    for role in ("candidate", "champion"):
        assert evaluation[role]["portfolio"]["rows"] == evaluation["candidate"]["portfolio"]["rows"] > 0
        assert evaluation[role]["devices"]["rows"] > 0
    new, old = (evaluation[role]["portfolio"]["pinball_mean"] for role in ("candidate", "champion"))
    assert new < old


def test_a_worse_candidate_is_not_promoted_unless_forced(champion, gateway, stack):
    served = champion["decision"]["candidate_version"]
    # Ten trees on 10,000 rows: far from what the champion learned.
    weak = {**SMALL, "train_rows": 10_000, "trees": 10}
    r = gateway.post("/models/train", params={"wait": "true", "timeout": 300}, json=weak)
    assert r.status_code == 200, r.text
    kept = r.json()["result"]
    e = kept["evaluation"]
    assert e["candidate"]["portfolio"]["pinball_mean"] > e["champion"]["portfolio"]["pinball_mean"], e
    assert not kept["promoted"] and kept["champion_version"] == served
    assert kept["reason"].startswith("not better: portfolio pinball")
    assert gateway.get("/models").json()["promoted"] == served
    # The same request again is the same training, not a second one.
    again = gateway.post("/models/train", json=weak).json()
    assert again["training_id"] == kept["training_id"] and again["created"] is False

    # `intraday train` on the running stack: through the gateway, followed to its decision.
    out = intraday(stack["env"], "train", "--end", SMALL["end"], "--train-rows", "10000", "--trees", "10",
                   "--force")
    assert out.startswith("training train-") and "(request): promoted" in out and "forced; " in out, out
    forced = gateway.get(f"/models/trainings/{out.split()[1]}").json()["result"]
    assert forced["promoted"] and forced["forced"] and forced["reason"].startswith("forced; ")
    assert gateway.get("/models").json()["promoted"] == forced["candidate_version"]
    # `intraday models list` shows the champion/challenger history, newest first.
    listing = intraday(stack["env"], "models", "list")
    rows = [line.split() for line in listing.splitlines() if " request " in line]
    assert [r[-1] for r in rows[:3]] == ["(forced)", "kept", "promoted"], listing
    assert rows[0][2] == forced["candidate_version"] and rows[1][4] == served, listing


def test_unusable_training_requests_are_refused(gateway):
    for body, reason in (({"days": 3}, "greater than or equal to 10"),
                         ({"end": "2999-01-01T00:00:00Z"}, "quarter-hour in the past"),
                         ({"end": "2026-01-01T00:07:00Z"}, "quarter-hour in the past"),
                         ({"holdout_days": 0}, "greater than or equal to 1"),
                         ({"epochs": 3}, "extra"),
                         ({"end": "2001-01-01T00:00:00Z", "train_rows": 10_000, "trees": 10},
                          "readings on 0 of the window's 30 days")):
        r = gateway.post("/models/train", params={"wait": "true", "timeout": 120}, json=body)
        assert r.status_code == 422 and reason in r.text, (body, r.text)


def test_dapr_s_scheduler_starts_the_daily_training(champion, stack, gateway):
    sidecar = httpx.Client(base_url="http://127.0.0.1:3501", headers=dapr_headers(stack), timeout=10)
    job = sidecar.get("/v1.0-alpha1/jobs/intraday-training")
    assert job.status_code == 200 and job.json()["schedule"] == "0 0 3 * * *", job.text
    # Due in a second, as the daily one will be at 03:00.
    r = sidecar.post("/v1.0-alpha1/jobs/intraday-training", json={"dueTime": "1s", "overwrite": True,
                                                                   "data": job.json()["data"]})
    assert r.status_code == 204, r.text
    tid = f"train-daily-{datetime.now(UTC):%Y%m%d}"
    try:
        eventually(lambda: gateway.get(f"/models/trainings/{tid}").status_code in (200, 202), timeout=30)
        decision = _finished(gateway, tid)
        assert decision["trigger"] == "schedule" and decision["requested_by"] == "scheduler"
    finally:
        sidecar.post("/v1.0-alpha1/jobs/intraday-training",
                     json={"schedule": "0 0 3 * * *", "overwrite": True, "data": job.json()["data"]})
