"""Telemetry ingest through real Dapr: the HTTP batch endpoint by service
invocation, and the `telemetry` topic, which also refreshes DeviceActor
windows in Redis."""

from datetime import UTC, datetime, timedelta

import httpx
import jsonschema
import numpy as np
import pytest

from actors.state import StateSerializer
from intraday import messages
from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, isoformat_z
from tests.stack import dapr_headers, eventually

# The telemetry service through the gateway's sidecar: Dapr service invocation.
INGEST = "http://127.0.0.1:3500/v1.0/invoke/telemetry/method/ingest"
PUBLISH = "http://127.0.0.1:3500/v1.0/publish/pubsub/telemetry"
TELEMETRY = "http://127.0.0.1:3500/v1.0/invoke/telemetry/method"


@pytest.fixture(scope="module")
def http(stack):
    with httpx.Client(timeout=30, headers=dapr_headers(stack)) as c:
        yield c


def _readings(http, device_id: str, start: str, end: str) -> list[dict]:
    r = http.get(f"{TELEMETRY}/devices/{device_id}/readings", params={"start": start, "end": end})
    assert r.status_code == 200, r.text
    return r.json()


def test_http_batch_reports_every_row_and_is_idempotent(http):
    t = "2026-01-02T00:00:00Z"  # long before the demo fleet's window
    body = {"batch_id": "it-http-1", "readings": [
        {"device_id": "hp-0003", "timestamp": t, "power": 1.25, "heating_electricity": 1.0,
         "dhw_electricity": 0.2},
        {"device_id": "hp-0003", "timestamp": t, "power": 1.25, "heating_electricity": 1.0,
         "dhw_electricity": 0.2},
        {"device_id": "hp-0003", "timestamp": "2026-01-02T00:05:00Z", "power": "lots"},
        {"device_id": "hp-4242", "timestamp": t, "power": 1.0},
    ]}
    r = http.post(INGEST, json=body)
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["status"], report["inserted"], report["duplicates"], report["quarantined"]) == (
        "partial", 1, 1, 2)
    assert report["reasons"] == {"non_numeric": 1, "unknown_device": 1}
    again = http.post(INGEST, json=body).json()
    assert again["status"] == "duplicate_batch"
    stored = _readings(http, "hp-0003", t, "2026-01-02T01:00:00Z")
    assert [(x["timestamp"], x["power"]) for x in stored] == [(t, 1.25)]
    detail = http.get(f"{TELEMETRY}/ingest/it-http-1").json()
    assert [(q["row"], q["reason"], q["power"]) for q in detail["quarantined_rows"]] == [
        (2, "non_numeric", "lots"), (3, "unknown_device", "1.0")]

    body["readings"][0]["power"] = 9.0
    conflict = http.post(INGEST, json=body)
    assert conflict.status_code == 409 and "different content" in conflict.json()["detail"]


@pytest.mark.parametrize(("kwargs", "status", "reason"), [
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "not JSON"),
    ({"json": {"rows": []}}, 422, "expected"),
    ({"json": {"readings": [{"device_id": "hp-0001", "power": 1}]}}, 422, "missing columns: timestamp"),
    ({"content": b"a;b", "headers": {"content-type": "text/plain"}}, 415, "content-type"),
    ({"json": {"batch_id": "it-extra", "source": "meter-7", "readings": [
        {"device_id": "hp-0001", "timestamp": "2026-01-02T00:00:00Z", "power": 1.0}]}},
     422, "unknown field(s) source"),
])
def test_http_bad_batches_get_a_reason_and_write_nothing(http, kwargs, status, reason):
    r = http.post(INGEST, **kwargs)
    assert r.status_code == status, r.text
    assert reason in str(r.json()["detail"])


def test_a_misspelt_field_is_refused_not_dropped(http):
    """Every JSON body the telemetry service takes names what it does not
    take, and nothing is written."""
    for path, body in (
        ("ingest/weather", {"observations": [], "forecast": []}),
        ("devices", {"devices": [{"device_id": "it-misspelt"}], "change_by": "x"}),
    ):
        r = http.post(f"{TELEMETRY}/{path}", json=body)
        assert r.status_code == 422 and "unknown field(s)" in r.json()["detail"], (path, r.text)
    assert http.get(f"{TELEMETRY}/devices/it-misspelt").status_code == 404
    assert http.get(f"{TELEMETRY}/ingest/it-extra").status_code == 404


def test_csv_body(http):
    csv = "device_id,timestamp,power\nhp-0004,2026-01-03T00:00:00Z,2.5\nhp-0004,2026-01-03T00:15:00Z,-3\n"
    r = http.post(INGEST, content=csv.encode(), params={"batch_id": "it-csv"},
                  headers={"content-type": "text/csv"})
    assert r.status_code == 200 and r.json()["reasons"] == {"negative_value": 1}


def test_stream_batch_lands_once_and_refreshes_the_actor_window(http, gateway, rds):
    # Activate hp-0005's actor with a forecast first (a horizon of its own:
    # a forecast recorded before, by a fleet forecast say, would not reach it).
    assert gateway.post("/forecast/intraday", params={"wait": "true"},
                        json={"device_id": "hp-0005", "horizon_hours": 23.25}).status_code == 200
    interval = floor_quarter_hour(datetime.now(UTC))  # after the demo data, never in the future
    t1, t2 = isoformat_z(interval), isoformat_z(interval + timedelta(seconds=1))
    data = {"batch_id": "it-stream-1", "readings": [
        {"device_id": "hp-0005", "timestamp": t1, "power": 100.0},
        {"device_id": "hp-0005", "timestamp": t2, "power": 200.0},
    ]}
    messages.validate("telemetry", data)  # the documented message (schemas/) is what the service stores
    for _ in range(2):  # a producer that publishes twice
        assert http.post(PUBLISH, json=data).status_code == 204

    def window_value():
        raw = rds.hget("forecaster||DeviceActor||hp-0005||device", "data")
        w = StateSerializer().deserialize(raw).window
        i = w.index_of(interval)
        return i < len(w.values) and w.values[i] == 150.0  # the mean of both readings

    assert eventually(window_value, timeout=30)
    rows = _readings(http, "hp-0005", t1, isoformat_z(interval + QUARTER_HOUR))
    assert sorted(x["power"] for x in rows) == [100.0, 200.0]  # published twice, stored once

    # A message that can never be stored is dropped, and kept in the ledger.
    bad = {"batch_id": "it-stream-bad", "readings": [{"device": "hp-0005", "watts": 5}]}
    with pytest.raises(jsonschema.ValidationError):
        messages.validate("telemetry", bad)
    assert http.post(PUBLISH, json=bad).status_code == 204
    report = eventually(lambda: http.get(f"{TELEMETRY}/ingest/it-stream-bad").json().get("report"))
    assert report["status"] == "rejected" and "missing columns" in report["errors"][0]


def test_fleet_stored_before_the_services_started_reaches_the_actors(http, gateway, rds):
    """`stack.sh up` loads the demo fleet straight into the store before the
    telemetry service starts; the service's catch-up leaves actors that never
    held a window alone (10,000 activations would be minutes of CPU at
    startup), and an actor's first use loads its window from the store."""
    sidecar = httpx.Client(base_url="http://127.0.0.1:3501", timeout=30, headers=http.headers)  # forecaster's
    r = sidecar.post("/v1.0/actors/DeviceActor/it-never-loaded/method/ExtendWindow",
                     json={"start": isoformat_z(floor_quarter_hour(datetime.now(UTC))), "values": [1.0]})
    assert r.status_code == 200 and r.json() == {"window_end": None}
    assert not rds.exists("forecaster||DeviceActor||it-never-loaded||device")
    key = "forecaster||DeviceActor||hp-0019||device"
    r = gateway.post("/forecast/intraday", params={"wait": "true"},
                     json={"device_id": "hp-0019", "horizon_hours": 23.25})  # new: through its actor
    assert r.status_code == 200, r.text
    w = StateSerializer().deserialize(rds.hget(key, "data")).window
    day = w.end - timedelta(days=1)
    r = http.get(f"{TELEMETRY}/devices/hp-0019/window",
                 params={"start": isoformat_z(day), "end": isoformat_z(w.end)})
    assert r.status_code == 200, r.text
    expected = np.array([np.nan if v is None else v for v in r.json()["values"]])
    np.testing.assert_allclose(w.values[w.index_of(day):], expected)


def test_http_batch_records_its_actor_refresh(http):
    interval = floor_quarter_hour(datetime.now(UTC)) - QUARTER_HOUR
    r = http.post(INGEST, json={"batch_id": "it-refresh-1", "readings": [
        {"device_id": "hp-0011", "timestamp": isoformat_z(interval), "power": 4.0}]})
    assert r.status_code == 200, r.text
    found = http.get(f"{TELEMETRY}/ingest/it-refresh-1").json()
    assert found["actors_refreshed_at"] is not None
