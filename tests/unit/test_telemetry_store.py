from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from intraday.telemetry.fleet import demo_fleet, reference_year
from intraday.telemetry.store import ChdbBackend, TelemetryStore

T0 = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = TelemetryStore(ChdbBackend(tmp_path_factory.mktemp("chdb")))
    s.migrate()
    s.migrate()  # re-runnable
    yield s
    s.close()


def test_window_is_the_quarter_hour_mean_with_explicit_gaps(store):
    rng = np.random.default_rng(1)
    ts = pd.date_range(T0, periods=12 * 24 * 2, freq="5min", tz="UTC")  # two days, 5-min readings
    df = pd.DataFrame({"device_id": "hp-w", "timestamp": ts, "power": rng.uniform(0, 5, len(ts)),
                       "heating_electricity": 0.0, "dhw_electricity": 0.0})
    df = df[~df.timestamp.between(T0 + timedelta(hours=3), T0 + timedelta(hours=3, minutes=59))]
    store.insert_readings(df)
    w = store.window("hp-w", T0, T0 + timedelta(days=2))
    expected = df.set_index("timestamp")["power"].resample("15min").mean()
    expected = expected.reindex(pd.date_range(T0, periods=192, freq="15min", tz="UTC"))
    np.testing.assert_allclose(w.values, expected.to_numpy(), equal_nan=True)
    assert w.missing == 4  # the hour 03:00-04:00 is a gap, not a missing row


def test_devices_and_lookup(store):
    devices, _ = demo_fleet(3, T0, days=1)
    store.upsert_devices(devices)
    assert [d["device_id"] for d in store.devices()][:3] == ["hp-0001", "hp-0002", "hp-0003"]
    assert store.device("hp-0002")["building_type"] == devices.building_type[1]
    assert store.device("hp-9999") is None
    with pytest.raises(ValueError, match="invalid device id"):
        store.device("x'; DROP TABLE devices")


def test_demo_fleet_is_deterministic_and_temperature_driven():
    a_dev, a = demo_fleet(4, T0, days=3, seed=11)
    b_dev, b = demo_fleet(4, T0, days=3, seed=11)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a_dev, b_dev)
    assert np.allclose(a.power, a.heating_electricity + a.dhw_electricity + np.repeat(
        a_dev.standby_kw.to_numpy(), 3 * 96))
    # Heating electricity of the whole year against outdoor temperature: colder, more.
    ref = reference_year()
    temp = ref.outdoor_temp_c
    heat = ref.heating_kw["old_building_single_family_house"]
    daily_t = temp[: 364 * 96].reshape(364, 96).mean(axis=1)
    daily_h = heat[: 364 * 96].reshape(364, 96).mean(axis=1)
    assert np.corrcoef(daily_t, daily_h)[0, 1] < -0.8
