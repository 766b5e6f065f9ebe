"""A forecast through the whole path: gateway -> forecaster (service
invocation) -> workflow -> DeviceActor -> pub/sub -> PostgreSQL."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pytest

from actors.state import DeviceState, StateSerializer
from intraday import messages
from intraday.timeutil import floor_quarter_hour, isoformat_z
from tests.stack import app_headers, dapr_headers, topic_messages


def audit_rows(pg, forecast_id: str) -> tuple[int, int]:
    requests = pg.execute("SELECT count(*) FROM forecast_requests WHERE request_id = %s",
                          (forecast_id,)).fetchone()[0]
    results = pg.execute("SELECT coalesce(sum(cardinality(p50)), 0) FROM forecast_series"
                         " WHERE request_id = %s", (forecast_id,)).fetchone()[0]
    return requests, results


def test_devices_lists_the_fleet_with_metadata(gateway):
    r = gateway.get("/devices")
    assert r.status_code == 200
    devices = r.json()
    assert len(devices) == 24
    assert {"device_id", "location", "building_type", "heat_pump_type", "rated_power_kw",
            "installed_date"} <= set(devices[0])


def test_forecast_end_to_end(gateway, pg, rds):
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "hp-0001"})
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["status"] == "COMPLETED"
    result = view["result"]
    assert result["forecast_id"] == view["forecast_id"]
    assert result["model_version"] == "baseline"
    assert result["horizon_intervals"] == 96 and len(result["intervals"]) == 96
    start = datetime.fromisoformat(result["forecast_start"])
    assert start == floor_quarter_hour(datetime.now(UTC)) + timedelta(minutes=15) or \
        start == floor_quarter_hour(datetime.now(UTC))  # the clock may cross a quarter-hour
    for i in result["intervals"]:
        assert i["p10"] <= i["p50"] <= i["p90"] and i["mean"] >= 0
    assert result["data_window"]["end"] <= result["forecast_start"]

    # The audit trail: one request row, 96 intervals, the same numbers.
    assert audit_rows(pg, view["forecast_id"]) == (1, 96)
    model, p50, mean = pg.execute(
        "SELECT r.model_version, x.p50, x.mean FROM forecast_requests r JOIN forecast_series x"
        " USING (request_id) WHERE request_id = %s", (view["forecast_id"],)).fetchone()
    assert model == "baseline"
    assert p50 == [i["p50"] for i in result["intervals"]]
    assert mean == [i["mean"] for i in result["intervals"]]

    # Published on `forecasts`.
    published = [m for m in topic_messages(rds, "forecasts") if m["forecast_id"] == view["forecast_id"]]
    assert len(published) == 1 and published[0] == messages.forecast_message_of(result)

    # GET returns the same forecast.
    again = gateway.get(f"/forecast/{view['forecast_id']}")
    assert again.status_code == 200 and again.json()["result"] == result


def test_finished_workflows_are_purged_and_their_results_stay_readable(gateway, pg, rds):
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "hp-0011"})
    assert r.status_code == 200, r.text
    fid, result = r.json()["forecast_id"], r.json()["result"]

    def residue() -> list[bytes]:
        return [k for k in rds.scan_iter(f"*{fid}*")]

    deadline = time.monotonic() + 60  # retention 10 s (components/config), then the purge runs
    while residue() and time.monotonic() < deadline:
        time.sleep(1)
    assert residue() == [], "the finished workflow's state is still in Redis"
    again = gateway.get(f"/forecast/{fid}")
    assert again.status_code == 200 and again.json() == {"forecast_id": fid, "status": "COMPLETED",
                                                         "result": result}
    # Asking again finds it in the audit store: nothing new is made.
    repeat = gateway.post("/forecast/intraday", params={"wait": "true"},
                          json={"device_id": "hp-0011", "forecast_start": result["forecast_start"]})
    assert repeat.status_code == 200 and repeat.json()["created"] is False
    assert repeat.json()["result"] == result
    assert audit_rows(pg, fid) == (1, 96)
    assert residue() == []
    assert len([m for m in topic_messages(rds, "forecasts") if m["forecast_id"] == fid]) == 1


def test_device_actor_state_lives_in_redis(gateway, rds):
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "hp-0007"})
    assert r.status_code == 200, r.text
    raw = rds.hget("forecaster||DeviceActor||hp-0007||device", "data")
    assert raw is not None
    state = StateSerializer().deserialize(raw)
    assert isinstance(state, DeviceState)
    assert state.device_id == "hp-0007" and state.model_version == "baseline"
    assert len(state.window.values) == 30 * 96
    assert state.window.end <= datetime.fromisoformat(r.json()["result"]["forecast_start"])


def test_repeated_request_gives_one_forecast_and_one_audit_row(gateway, pg, rds):
    body = {"device_id": "hp-0002",
            "forecast_start": isoformat_z(floor_quarter_hour(datetime.now(UTC)) + timedelta(hours=1))}

    def ask(_):
        return gateway.post("/forecast/intraday", params={"wait": "true"}, json=body)

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(ask, range(4)))
    responses.append(ask(None))  # and once more after all have finished
    statuses = [(r.status_code, r.json().get("status"), r.json().get("error")) for r in responses]
    assert all(r.status_code == 200 for r in responses), statuses
    ids = {r.json()["forecast_id"] for r in responses}
    assert len(ids) == 1
    (fid,) = ids
    assert sum(r.json()["created"] for r in responses) == 1
    assert len({str(r.json()["result"]["intervals"]) for r in responses}) == 1
    assert audit_rows(pg, fid) == (1, 96)
    assert len([m for m in topic_messages(rds, "forecasts") if m["forecast_id"] == fid]) == 1


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"device_id": "hp-9999"}, 404, "unknown device"),
        ({"device": "hp-0001"}, 422, "Field required"),
        ({"device_id": "hp-0001", "horizon_hours": "lots"}, 422, "horizon_hours"),
        ({"device_id": "hp-0001", "horizon_hours": 500}, 422, "horizon_hours must be in"),
        ({"device_id": "hp-0001", "forecast_start": "2019-01-01T00:00:00Z"}, 422, "outside"),
        ({"device_id": "hp-0001", "forecast_start": "2026-01-01T00:07:00Z"}, 422, "quarter-hour"),
    ],
)
def test_bad_input_gets_a_reason_and_writes_nothing(gateway, pg, rds, body, status, reason):
    before = (pg.execute("SELECT count(*) FROM forecast_requests").fetchone()[0],
              rds.xlen("forecasts") if rds.exists("forecasts") else 0)
    instances = set(rds.keys("*workflow*metadata"))
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json=body)
    assert r.status_code == status
    assert reason in r.text
    after = (pg.execute("SELECT count(*) FROM forecast_requests").fetchone()[0],
             rds.xlen("forecasts") if rds.exists("forecasts") else 0)
    assert after == before
    # No workflow instance was started (earlier ones may be purged meanwhile).
    assert set(rds.keys("*workflow*metadata")) <= instances


def test_malformed_json_is_rejected(gateway):
    r = gateway.post("/forecast/intraday", content=b"{not json",
                     headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.text


def test_warming_a_device_outside_the_fleet_is_404_and_makes_no_actor(gateway, rds):
    r = gateway.post("/warm", json={"top": 0, "devices": ["hp-0001", "zz-not-a-device"]})
    assert r.status_code == 404 and "zz-not-a-device" in r.text
    assert not list(rds.scan_iter("*zz-not-a-device*"))


def test_a_malformed_forecast_id_is_422(gateway):
    r = gateway.get("/forecast/%F1%9C%87%B0%0Et")  # control characters once made the gateway fail
    assert r.status_code == 422


def test_unknown_forecast_id_is_404(gateway):
    r = gateway.get("/forecast/fc-nothing-here")
    assert r.status_code == 404


def test_a_burst_of_concurrent_requests_is_batched_and_each_forecast_made_once(stack, gateway, pg, rds):
    """300 requests at once (240 distinct forecasts, 60 repeats) all complete;
    the forecaster batches them; each forecast has one audit row and one
    message, and a batched forecast is what the device's actor computes."""
    base = floor_quarter_hour(datetime.now(UTC)) + timedelta(hours=3)
    devices = [d["device_id"] for d in gateway.get("/devices").json()]
    bodies = [{"device_id": d, "forecast_start": isoformat_z(base + timedelta(minutes=15 * k)),
               "requested_by": "burst"} for k in range(10) for d in devices]
    bodies += bodies[::4]  # repeats, asked at the same time
    before = httpx.get("http://127.0.0.1:8001/batching", headers=app_headers(stack)).json()
    published_before = len(topic_messages(rds, "forecasts"))  # each checked against its schema

    with httpx.Client(base_url="http://127.0.0.1:8000", timeout=120, headers=gateway.headers,
                      limits=httpx.Limits(max_connections=300)) as client, \
            ThreadPoolExecutor(300) as pool:
        responses = list(pool.map(
            lambda body: client.post("/forecast/intraday", params={"wait": "true"}, json=body), bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies), \
        {r.status_code: r.text[:200] for r in responses if r.status_code != 200}
    views = [r.json() for r in responses]
    ids = {v["forecast_id"] for v in views}
    assert len(ids) == 240 and sum(v["created"] for v in views) == 240
    for body, view in zip(bodies, views, strict=True):
        assert view["result"]["device_id"] == body["device_id"]
        assert view["result"]["forecast_start"] == body["forecast_start"]
    after = httpx.get("http://127.0.0.1:8001/batching", headers=app_headers(stack)).json()
    assert after["batches"] > before["batches"] and after["largest"] > 1

    rows = pg.execute("SELECT count(*), count(DISTINCT request_id) FROM forecast_requests"
                      " WHERE request_id = ANY(%s)", (list(ids),)).fetchone()
    assert rows == (240, 240)
    burst = topic_messages(rds, "forecasts")[published_before:]
    assert sorted(m["forecast_id"] for m in burst) == sorted(ids)
    # The compact message (intraday/messages.py): under 3 KB, and a consumer
    # reads back the audited numbers to the watt.
    assert max(len(json.dumps(m, separators=(",", ":"))) for m in burst) <= 3072
    audited = dict(pg.execute("SELECT request_id, p50 FROM forecast_series WHERE request_id = ANY(%s)",
                              ([m["forecast_id"] for m in burst[:20]],)).fetchall())
    for m in burst[:20]:
        error = np.abs(messages.read_forecast(m).p50 - np.array(audited[m["forecast_id"]]))
        assert np.max(error) <= 5e-4 + 1e-9  # half a watt

    sidecar = httpx.Client(base_url="http://127.0.0.1:3501", timeout=60,
                           headers=dapr_headers(stack))  # the forecaster's daprd
    view = next(v for v in views if v["result"]["device_id"] == "hp-0007")
    start = {"forecast_start": view["result"]["forecast_start"]}
    sidecar.post("/v1.0/actors/DeviceActor/hp-0007/method/Prepare", json=start).raise_for_status()
    own = sidecar.post("/v1.0/actors/DeviceActor/hp-0007/method/Forecast",
                       json={**start, "horizon_intervals": 96,
                             "model_version": view["result"]["model_version"]}).json()
    assert own["intervals"] == view["result"]["intervals"]
