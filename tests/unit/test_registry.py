"""The device registry users write to (intraday/telemetry/registry.py) on a
real chDB store: refusals name every bad row and write nothing, rows merge
into what is stored, a repeated change writes nothing, retirement takes a
device out of the fleet list and its later readings out of the store."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from intraday.telemetry import registry
from intraday.telemetry.ingest import ingest_batch


@pytest.fixture
def store(empty_store):
    return empty_store


def add(store, rows: list[dict], by="alice") -> registry.Change:
    return registry.upsert(store, registry.parse_devices(pd.DataFrame(rows)), by, registry.new_change_id())


def versions(store) -> int:
    """Registry rows written so far (every version, before merges)."""
    return store.query("SELECT count() FROM {db}.devices").column(0)[0].as_py()


def test_a_refused_change_names_each_bad_row_and_writes_nothing(store):
    rows = pd.DataFrame({
        "device_id": ["hp-1", "bad id", "hp-1", "hp-4"],
        "latitude": ["47.4", "47.4", "", "91"],
        "longitude": ["8.5", "8.5", "", "8"],
        "rated_power_kw": ["6", "six", "5", "7"],
        "installed_date": ["2020-04-01", "", "2020-13-01", ""],
    })
    with pytest.raises(registry.Refused) as refused:
        registry.parse_devices(rows)
    reasons = {(e.row, e.reason.split(" ")[0]) for e in refused.value.errors}
    assert (2, "device_id") in reasons and (2, "rated_power_kw") in reasons  # the bad id, "six"
    assert (3, "device") in reasons and (3, "installed_date") in reasons  # a repeat, month 13
    assert (4, "latitude") in reasons
    assert "row 2 (bad id)" in str(refused.value)
    assert versions(store) == 0
    with pytest.raises(registry.Refused, match="unknown column"):
        registry.parse_devices(pd.DataFrame({"device_id": ["x"], "colour": ["red"]}))
    # Valid rows, but a new device with no place for its weather: refused at the merge.
    with pytest.raises(registry.Refused, match="no location"):
        add(store, [{"device_id": "hp-1", "location": "CH"}, {"device_id": "hp-2", "rated_power_kw": 5}])
    assert versions(store) == 0


def test_rows_merge_into_what_is_stored_and_a_repeat_writes_nothing(store):
    first = add(store, [{"device_id": "hp-1", "latitude": 47.41, "longitude": 8.53, "rated_power_kw": 6.0,
                         "heat_pump_type": "air", "country": "CH"},
                        {"device_id": "hp-2", "location": "Zurich"}])
    assert first.added == ["hp-1", "hp-2"] and first.written == 2
    device = store.device("hp-1")
    assert device["location"] == registry.grid_location(47.41, 8.53) == "47.4N8.5E"
    assert device["setpoint_c"] is None and device["installed_date"] is None  # unknown, not 0 or 1970
    written = versions(store)
    again = add(store, [{"device_id": "hp-1", "latitude": 47.41, "longitude": 8.53, "rated_power_kw": 6.0}])
    assert again.written == 0 and again.unchanged == 1 and versions(store) == written
    # Only what a row says changes; the rest keeps its stored value.
    update = add(store, [{"device_id": "hp-1", "rated_power_kw": 9.5, "tariff": "night"}], by="bob")
    assert update.updated == ["hp-1"]
    assert update.changes == [{"device_id": "hp-1", "fields": {"rated_power_kw": [6.0, 9.5],
                                                               "tariff": [None, "night"]}}]
    device = store.device("hp-1")
    assert device["rated_power_kw"] == 9.5 and device["heat_pump_type"] == "air" and device["country"] == "CH"
    row = store.query("SELECT changed_by, change_id FROM {db}.devices FINAL WHERE device_id = 'hp-1'")
    assert row.to_pylist() == [{"changed_by": "bob", "change_id": update.change_id}]
    # New coordinates move a grid-named location with them, not a zone the user named.
    add(store, [{"device_id": "hp-1", "latitude": 46.95, "longitude": 7.45},
                {"device_id": "hp-2", "latitude": 46.95, "longitude": 7.45}])
    assert store.device("hp-1")["location"] == "46.9N7.4E" and store.device("hp-2")["location"] == "Zurich"


def test_retirement_leaves_the_fleet_keeps_history_and_refuses_later_readings(store):
    add(store, [{"device_id": f"hp-{k}", "location": "Zurich"} for k in range(3)])
    at = datetime.now(UTC) - timedelta(hours=2)
    readings = pd.DataFrame({"device_id": "hp-1", "power": 1.0,
                             "timestamp": pd.date_range(at - timedelta(hours=1), periods=8, freq="15min")})
    version = store.registry_version()
    with pytest.raises(registry.Refused, match="unknown"):
        registry.retire(store, ["hp-1", "hp-9"], "alice", "dc-x", at)
    change = registry.retire(store, ["hp-1"], "alice", "dc-1", at)
    assert change.retired == ["hp-1"] and store.registry_version() != version
    assert [d["device_id"] for d in store.devices()] == ["hp-0", "hp-2"]
    listed = {d["device_id"]: d for d in store.devices(include_retired=True)}
    assert listed["hp-1"]["retired_at"].startswith(at.strftime("%Y-%m-%dT%H:%M"))
    # Readings from before the retirement are history; after it, quarantined.
    report = ingest_batch(store, readings, source="test")
    assert report.inserted == 4 and report.reasons == {"retired_device": 4}
    assert registry.retire(store, ["hp-1"], "alice", "dc-2").unchanged == 1  # the first retirement holds
    back = add(store, [{"device_id": "hp-1"}])
    assert back.reactivated == ["hp-1"] and len(store.devices()) == 3


def test_a_retirement_in_the_future_keeps_the_device_until_then(store):
    add(store, [{"device_id": "hp-1", "location": "Zurich"}])
    registry.retire(store, ["hp-1"], "alice", "dc-1", datetime.now(UTC) + timedelta(days=1))
    assert [d["device_id"] for d in store.devices()] == ["hp-1"]


def test_grid_cells_are_named_by_their_corner_in_both_hemispheres():
    assert registry.grid_location(-33.87, 151.21) == "33.9S151.2E"
    assert registry.grid_location(40.71, -74.01) == "40.7N74.1W"
    assert registry.grid_location(0.04, -0.04) == "0.0N0.1W"
    assert registry.grid_location(46.95, 7.45) == "46.9N7.4E"  # on a cell's edge: the cell it starts
    for lat, lon in ((47.41, 8.53), (-33.87, 151.21), (40.71, -74.01)):
        clat, clon = registry.grid_center(registry.grid_location(lat, lon))
        assert abs(clat - lat) <= 0.05 and abs(clon - lon) <= 0.05
        assert registry.grid_location(clat, clon) == registry.grid_location(lat, lon)
    assert registry.grid_center("Zurich") is None


def test_the_ingest_check_follows_the_registry(store):
    """A device registered after the ingest's device list was read is
    accepted at once (the list is re-read on an unknown id)."""
    from intraday.telemetry.ingest import DeviceRegistry

    known = DeviceRegistry(store)
    assert not known.known(np.array(["hp-7"])).any()
    add(store, [{"device_id": "hp-7", "location": "Zurich"}])
    assert known.known(np.array(["hp-7"])).all()
