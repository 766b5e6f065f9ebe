"""The generated fleet: deterministic, physically plausible heat pumps,
honest weather forecasts, and the telemetry faults it claims."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from intraday.telemetry import fleet

START, END = datetime(2026, 1, 10, tzinfo=UTC), datetime(2026, 1, 17, tzinfo=UTC)


def test_same_seed_same_fleet_and_a_small_fleet_is_a_prefix_of_a_large_one():
    dev_a, a = fleet.generate_frame(6, START, END, seed=5)
    dev_b, b = fleet.generate_frame(6, START, END, seed=5)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(dev_a, dev_b)
    _, c = fleet.generate_frame(6, START, END, seed=6)
    assert not np.allclose(a.power.to_numpy()[:500], c.power.to_numpy()[:500])
    small = next(fleet.generate(3, START, END, seed=5, chunk_devices=1)).readings
    big = next(fleet.generate(40, START, END, seed=5)).readings
    first = big[big.device_id.astype(str) == "hp-0001"].reset_index(drop=True)
    pd.testing.assert_frame_equal(small.assign(device_id=small.device_id.astype(str)),
                                  first.assign(device_id=first.device_id.astype(str)))


@pytest.fixture(scope="module")
def season():
    """40 devices from January to June, without faults."""
    devices, r = fleet.generate_frame(40, datetime(2026, 1, 1, tzinfo=UTC),
                                      datetime(2026, 6, 30, tzinfo=UTC), seed=3,
                                      faults=fleet.NO_FAULTS)
    return devices, r


def test_power_is_heating_plus_hot_water_plus_standby(season):
    devices, r = season
    standby = r.device_id.astype(str).map(devices.set_index("device_id").standby_kw).to_numpy()
    np.testing.assert_allclose(r.power, r.heating_electricity + r.dhw_electricity + standby, atol=2e-4)
    assert (r[["power", "heating_electricity", "dhw_electricity"]] >= 0).all().all()


def test_heating_follows_outdoor_temperature(season):
    _, r = season
    daily = r.groupby(r.timestamp.dt.floor("D")).agg(temp=("outdoor_temp", "mean"),
                                                     heating=("heating_electricity", "mean"))
    assert np.corrcoef(daily.temp, daily.heating)[0, 1] < -0.85
    cold = daily[daily.temp < 2].heating.mean()
    warm = daily[daily.temp > 17].heating.mean()
    assert warm < 0.1 * cold  # above the heating limit only pumps and the odd mild-day load remain
    # Hot water does not stop in summer.
    assert r[r.timestamp.dt.month == 6].dhw_electricity.mean() > 0.05


def test_cop_falls_as_it_gets_colder_or_the_flow_hotter():
    t = np.array([-10.0, 0.0, 10.0])
    assert np.all(np.diff(fleet.heat_pump_cop(t, 35.0)) > 0)
    assert np.all(fleet.heat_pump_cop(t, 55.0) < fleet.heat_pump_cop(t, 35.0))
    flow = fleet.heating_curve(np.array([-12.0, 0.0, 15.0]), 20.0, 55.0)
    assert flow[0] == pytest.approx(55.0) and flow[0] > flow[1] > flow[2]


def test_blocked_heat_pumps_are_off_in_their_windows_and_catch_up(season):
    devices, r = season
    blocked = devices[devices.blocking].iloc[0]
    windows = dict((name, w) for name, _, w in fleet.LOCATIONS)[blocked.location]
    d = r[(r.device_id.astype(str) == blocked.device_id) & (r.timestamp.dt.month == 1)]
    local_hour = (d.timestamp + pd.Timedelta(hours=1)).dt.hour + (d.timestamp.dt.minute / 60)
    in_window = np.zeros(len(d), bool)
    for a, b in windows:
        in_window |= (local_hour >= a) & (local_hour < b)
    assert d.heating_electricity[in_window].max() == 0
    after = (local_hour >= windows[0][1]) & (local_hour < windows[0][1] + 1)
    assert d.heating_electricity[after].mean() > d.heating_electricity[~in_window].mean()


def test_hot_water_comes_in_reheat_blocks():
    _, r = fleet.generate_frame(10, START, END, seed=2, faults=fleet.NO_FAULTS)
    dhw = r.dhw_electricity.to_numpy()
    assert (dhw == 0).mean() > 0.5  # the tank is not reheated most of the time
    assert np.quantile(dhw[dhw > 0], 0.5) > 4 * dhw.mean()


def test_weather_forecasts_are_forecasts_with_error_growing_with_lead():
    w = fleet.fleet_weather(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC), seed=1)
    obs = w[w.kind == "observed"].set_index(["location", "timestamp"]).outdoor_temp_c
    fc = w[w.kind == "forecast"]
    assert (fc.issued_at <= fc.timestamp).all()
    assert fc.timestamp.max() > obs.index.get_level_values(1).max()  # forecasts reach past the data
    fc = fc[fc.timestamp <= obs.index.get_level_values(1).max()]
    err = fc.outdoor_temp_c.to_numpy() - obs.loc[list(zip(fc.location, fc.timestamp, strict=True))].to_numpy()
    lead = (fc.timestamp - fc.issued_at).dt.total_seconds().to_numpy() / 3600
    short, day, two = (np.std(err[(lead >= a) & (lead < b)]) for a, b in ((0, 3), (21, 27), (42, 48)))
    assert 0.2 < short < day < two < 2.5 and (err != 0).mean() > 0.95


def test_faults_are_in_the_data_as_reported():
    chunk = next(fleet.generate(30, START, END, seed=4))
    r, late, f = chunk.readings, chunk.late, chunk.faults
    expected_rows = 30 * 7 * 96 - f["missing_readings"] + f["duplicated_readings"]
    assert len(r) + len(late) == expected_rows
    both = pd.concat([r, late])
    assert both.duplicated(["device_id", "timestamp"]).sum() == f["duplicated_readings"] > 0
    assert len(late) == f["late_readings"] > 0 and f["outages"] > 0
    # A stuck sensor repeats one value for hours.
    runs = r.groupby("device_id", observed=True).power.apply(
        lambda p: (p.diff() == 0).astype(int).groupby((p.diff() != 0).cumsum()).sum().max())
    assert runs.max() >= 7 and f["stuck_sensor_episodes"] > 0


def test_a_cold_snap_makes_the_air_colder_from_its_start_and_the_fleet_draw_more():
    start, end = datetime(2025, 11, 20, tzinfo=UTC), datetime(2025, 11, 27, tzinfo=UTC)
    snap = fleet.ColdSnap(datetime(2025, 11, 24, tzinfo=UTC), 6.0, ramp_hours=12)
    _, plain = fleet.generate_frame(6, start, end, seed=3, faults=fleet.NO_FAULTS)
    _, cold = fleet.generate_frame(6, start, end, seed=3, faults=fleet.NO_FAULTS, cold_snap=snap)
    key = ["device_id", "timestamp"]
    both = plain.merge(cold, on=key, suffixes=("", "_cold"))
    before = both.timestamp < pd.Timestamp(snap.start)
    after = both.timestamp >= pd.Timestamp(snap.start) + pd.Timedelta(hours=12)
    np.testing.assert_allclose(both.outdoor_temp[before], both.outdoor_temp_cold[before])
    np.testing.assert_allclose(both.outdoor_temp[after] - both.outdoor_temp_cold[after], 6.0, atol=0.011)
    assert (both.power[before] == both.power_cold[before]).all()
    assert both.power_cold[after].sum() > 1.2 * both.power[after].sum()
    # The forecasts issued in the snap forecast it.
    weather = fleet.fleet_weather(start, end, seed=3, cold_snap=snap)
    plain_weather = fleet.fleet_weather(start, end, seed=3)
    late = weather.timestamp >= pd.Timestamp(snap.start) + pd.Timedelta(hours=12)
    drop = weather.outdoor_temp_c[late].mean() - plain_weather.outdoor_temp_c[late].mean()
    assert drop == pytest.approx(-6, abs=0.05)
