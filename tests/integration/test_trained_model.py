"""A trained model through the whole path: `intraday train --promote`, then
forecasts served by it (named in the result and the audit row), its artifact
cached in Redis, and `intraday warm`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest

from intraday.timeutil import floor_quarter_hour, isoformat_z
from tests.stack import dapr_headers, intraday, topic_messages, train_and_promote


def forecast(gateway, device: str, start: datetime) -> dict:
    r = gateway.post("/forecast/intraday", params={"wait": "true"},
                     json={"device_id": device, "forecast_start": isoformat_z(start)})
    assert r.status_code == 200, r.text
    return r.json()["result"]


def test_a_promoted_model_serves_forecasts(stack, gateway, pg, rds, tmp_path):
    env, data_dir = stack["env"], stack["data_dir"]
    start = floor_quarter_hour(datetime.now(UTC)) + timedelta(hours=2)
    before = forecast(gateway, "hp-0005", start)
    assert before["model_version"] == "baseline"

    version = train_and_promote(env, tmp_path)
    try:
        time.sleep(1.5)  # the forecaster re-reads the pointer every second in this stack
        result = forecast(gateway, "hp-0005", start)
        assert result["model_version"] == version
        # The same request under a newly promoted model is a new forecast.
        assert result["forecast_id"] != before["forecast_id"]
        assert result["notes"] == [] and result["history_days"] >= 7
        for i in result["intervals"]:
            assert 0 <= i["p10"] <= i["p50"] <= i["p90"] and i["mean"] >= 0
        audited = pg.execute("SELECT model_version FROM forecast_requests WHERE request_id = %s",
                             (result["forecast_id"],)).fetchone()[0]
        assert audited == version

        # The artifact is cached in the state store (Redis) for other replicas.
        assert rds.hget(f"forecaster||model-artifact-{version}", "data") is not None

        top = [r[0] for r in pg.execute(
            "SELECT device_id FROM forecast_requests WHERE requested_at > now() - interval '7 days'"
            " GROUP BY device_id ORDER BY count(*) DESC, device_id LIMIT 3").fetchall()]
        warm = intraday(env, "warm", "--top", "3", "--device", "hp-0020")
        assert f"model {version}" in warm and f"{len(set(top) | {'hp-0020'})} device actors warm" in warm
        assert rds.hget("forecaster||DeviceActor||hp-0020||device", "data") is not None
        fleet_forecast_equals_the_device_forecasts(stack, gateway, pg, rds, start, version, result)
    finally:
        (data_dir / "models" / "PROMOTED").unlink()


def fleet_forecast_equals_the_device_forecasts(stack, gateway, pg, rds, start, version, single) -> None:
    """The whole fleet in one workflow: every device forecast is what the
    device's actor computes from the same window, keeps the single path's id
    (hp-0005's, made above, is reused, not made again), is audited and
    published once; the portfolio's mean is the sum of the device means; a
    repeated request makes nothing new."""
    messages = len(topic_messages(rds, "forecasts"))
    r = gateway.post("/forecast/fleet", params={"wait": "true"},
                     json={"forecast_start": isoformat_z(start), "requested_by": "test"})
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["status"] == "COMPLETED" and view["created"] is True
    fleet = view["result"]
    assert fleet["model_version"] == version and fleet["failed"] == {}
    ids = {d["device_id"]: d["forecast_id"] for d in fleet["device_forecasts"]}
    assert len(ids) == 24 and ids["hp-0005"] == single["forecast_id"]
    rows = dict(pg.execute("SELECT request_id, fleet_forecast_id FROM forecast_requests"
                           " WHERE request_id = ANY(%s)", (list(ids.values()),)).fetchall())
    assert len(rows) == 24 and rows[single["forecast_id"]] is None
    assert {v for k, v in rows.items() if k != single["forecast_id"]} == {fleet["forecast_id"]}
    assert len(topic_messages(rds, "forecasts")) == messages + 23  # hp-0005's was published before
    # The shards' partial sums travel through the state store, not the
    # workflow history, and are gone once the portfolio is recorded.
    assert list(rds.scan_iter("*fleet-partial*")) == []

    sidecar = httpx.Client(base_url="http://127.0.0.1:3501", timeout=60,
                           headers=dapr_headers(stack))  # the forecaster's daprd
    device_means = np.zeros(96)
    for device, fid in ids.items():
        recorded = gateway.get(f"/forecast/{fid}").json()["result"]
        device_means += [i["mean"] for i in recorded["intervals"]]
        if device in ("hp-0001", "hp-0012", "hp-0024"):
            body = {"forecast_start": isoformat_z(start)}
            sidecar.post(f"/v1.0/actors/DeviceActor/{device}/method/Prepare", json=body).raise_for_status()
            own = sidecar.post(f"/v1.0/actors/DeviceActor/{device}/method/Forecast",
                               json={**body, "horizon_intervals": 96, "model_version": version}).json()
            assert own["intervals"] == recorded["intervals"] and own["data_window"] == {
                k: v for k, v in recorded["data_window"].items() if k != "missing_intervals"}
    total = fleet["portfolio"]
    assert total["devices"] == 24 and "notes" in total
    assert [i["mean"] for i in total["intervals"]] == pytest.approx(device_means.tolist(), rel=1e-12)
    for i in total["intervals"]:
        assert 0 <= i["p10"] <= i["p50"] <= i["p90"]

    counts = (pg.execute("SELECT count(*) FROM forecast_requests").fetchone()[0],
              pg.execute("SELECT count(*) FROM fleet_forecasts").fetchone()[0],
              len(topic_messages(rds, "forecasts")))
    again = gateway.post("/forecast/fleet", params={"wait": "true"},
                         json={"forecast_start": isoformat_z(start), "requested_by": "test"})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["result"] == fleet
    assert (pg.execute("SELECT count(*) FROM forecast_requests").fetchone()[0],
            pg.execute("SELECT count(*) FROM fleet_forecasts").fetchone()[0],
            len(topic_messages(rds, "forecasts"))) == counts

    bad = gateway.post("/forecast/fleet", json={"devices": ["hp-0001", "hp-9999"]})
    assert bad.status_code == 404 and "hp-9999" in bad.text
