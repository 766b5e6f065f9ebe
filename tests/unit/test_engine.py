"""The forecasting engine: features without look-ahead, calibrated bands that
never cross, short histories, stuck sensors, and the model artifact."""

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from intraday.forecasting import backtest, engine, portfolio
from intraday.forecasting.features import (
    DAY,
    FEATURES,
    Panel,
    Rows,
    Vocabulary,
    calendar,
    design_matrix,
    drop_stuck,
)
from intraday.forecasting.model import QuantileModel, calibration_factors, device_locations, fit
from intraday.forecasting.temperature import IssuedForecasts
from intraday.forecasting.types import Forecast


def test_a_forecast_reads_nothing_at_or_after_forecast_start(data, model):
    panel, origin = data.panel, data.panel.intervals - 3 * DAY
    rows = Rows.grid(np.arange(len(panel.device_ids)), np.full(len(panel.device_ids), origin), DAY)
    before = model.predict_rows(panel, rows, data.temperature)

    # Rewrite everything from forecast_start on: power, observed temperature
    # and every temperature forecast issued after it.
    rng = np.random.default_rng(0)
    power = panel.power.copy()
    power[:, origin:] = rng.uniform(0, 50, power[:, origin:].shape)
    temp = panel.outdoor_temp.copy()
    temp[:, origin:] = rng.uniform(-30, 30, temp[:, origin:].shape)
    weather = data.temperature
    later = weather.runs > origin
    values = weather.values.copy()
    values[:, later] = rng.uniform(-30, 30, values[:, later].shape)
    changed = Panel(panel.device_ids, panel.start, power, temp, panel.attributes)
    after = model.predict_rows(changed, rows, IssuedForecasts(weather.location, weather.runs, values))

    for q in ("p10", "p50", "p90", "mean"):
        np.testing.assert_array_equal(getattr(before, q), getattr(after, q))
    # ... and so does the portfolio built from them ...
    locations = device_locations(panel)

    def total(p):
        shape = (len(panel.device_ids), DAY)
        return portfolio.quantiles(model.portfolio, p.mean.reshape(shape), p.p10.reshape(shape),
                                   p.p90.reshape(shape), locations)

    for a, b in zip(total(before), total(after), strict=True):
        np.testing.assert_array_equal(a, b)
    # ... while changing the last interval before forecast_start does change it.
    power[:, origin - 1] += 5.0
    moved = model.predict_rows(Panel(panel.device_ids, panel.start, power, temp, panel.attributes), rows,
                               data.temperature)
    assert not np.array_equal(before.p50, moved.p50)
    assert not np.array_equal(before.mean, moved.mean)


def test_no_look_ahead_on_a_half_hourly_grid_either(data):
    """The same on a 30-min grid: windows and lags are counted in time, so
    a coarser step must not reach past forecast_start either."""
    from dataclasses import replace

    from tests.unit.conftest import SMALL

    p = data.panel
    half = p.power[:, : p.intervals // 2 * 2].reshape(len(p.device_ids), -1, 2).mean(axis=2)
    panel = Panel(p.device_ids, p.start, half, None, p.attributes, step_minutes=30)
    model = fit(panel, None, replace(SMALL, horizon=48))
    assert model.horizon == 48 and model.block_steps == 12
    origin = panel.intervals - 3 * 48
    rows = Rows.grid(np.arange(len(p.device_ids)), np.full(len(p.device_ids), origin), 48)
    before = model.predict_rows(panel, rows)
    power = half.copy()
    power[:, origin:] = np.random.default_rng(1).uniform(0, 50, power[:, origin:].shape)
    after = model.predict_rows(Panel(p.device_ids, p.start, power, None, p.attributes, step_minutes=30), rows)
    for q in ("p10", "p50", "p90", "mean"):
        np.testing.assert_array_equal(getattr(before, q), getattr(after, q))
    power[:, origin - 1] += 5.0
    moved = model.predict_rows(Panel(p.device_ids, p.start, power, None, p.attributes, step_minutes=30), rows)
    assert not np.array_equal(before.mean, moved.mean)
    # A model of one grid does not forecast another.
    with pytest.raises(ValueError, match="30-min intervals, the data has 15-min"):
        model.predict_rows(p, Rows.grid([0], [p.intervals - DAY], 48))


def test_quantiles_never_cross_and_power_is_never_negative(data, model):
    panel = data.panel
    origins = np.arange(panel.intervals - 4 * DAY, panel.intervals - DAY, 7)
    rows = Rows.grid(np.repeat(np.arange(len(panel.device_ids)), len(origins)),
                     np.tile(origins, len(panel.device_ids)), DAY)
    p = model.predict_rows(panel, rows, data.temperature)
    assert np.all(p.p10 >= 0)
    assert np.all(p.p10 <= p.p50) and np.all(p.p50 <= p.p90)
    assert np.mean(p.p90 - p.p10) > 0


def test_conformal_factors_bring_a_too_narrow_band_to_80_percent():
    rng = np.random.default_rng(1)
    n = 40_000
    horizon = rng.integers(0, DAY, n)
    y = rng.normal(5.0, 1.0 + horizon / DAY, n)  # spread grows with the horizon
    raw = np.stack([np.full(n, 4.7), np.full(n, 5.0), np.full(n, 5.3)])  # far too narrow
    factors = calibration_factors(raw, y, horizon, 4)
    model = QuantileModel({}, Vocabulary({}), {"full": factors, "short": factors}, DAY)
    y_new = rng.normal(5.0, 1.0 + horizon / DAY, n)
    lo, mid, hi = model.calibrated(raw, horizon, np.zeros(n, bool))
    for b in range(4):
        sel = horizon // (DAY // 4) == b
        assert abs(np.mean(y_new[sel] < lo[sel]) - 0.10) < 0.015
        assert abs(np.mean(y_new[sel] > hi[sel]) - 0.10) < 0.015
    # Later blocks are more uncertain, so their band is wider.
    assert factors["p90"][3] > factors["p90"][0]


def test_a_device_installed_days_ago_gets_a_forecast_that_says_so(data, model):
    panel = data.panel
    n = len(panel.device_ids)
    origins = [panel.intervals - k * DAY for k in (1, 2, 3)]
    rows = Rows.grid(np.repeat(np.arange(n), 3), np.tile(origins, n), DAY)
    full = model.predict_rows(panel, rows, data.temperature)
    # The same forecasts for devices installed 3 days before each origin.
    rows.history_start = rows.origin - 3 * DAY
    short = model.predict_rows(panel, rows, data.temperature)
    assert short.short_history.all() and not full.short_history.any()
    assert np.allclose(short.history_days, 3.0)
    assert np.all(np.isfinite(short.p50))
    # Less history, more uncertainty: a wider band on average.
    assert np.mean(short.p90 - short.p10) > np.mean(full.p90 - full.p10)


def test_a_device_without_half_a_day_of_readings_gets_no_model_forecast(data, model):
    panel = data.panel
    origin = panel.intervals - DAY
    rows = Rows.grid([0], [origin], DAY)
    rows.history_start = rows.origin - DAY // 4
    p = model.predict_rows(panel, rows, data.temperature)
    assert np.isnan(p.p50).all()


def test_a_stuck_sensor_is_dropped_and_genuine_plateaus_are_kept():
    rng = np.random.default_rng(2)
    days = 10 * DAY
    modulating = rng.uniform(0.8, 2.6, days)  # an inverter unit: varies while it runs
    modulating[:40] = 0.02  # standby: constant and real
    stuck = modulating.copy()
    stuck[300:330] = 1.7  # the sensor hangs mid-range for 7.5 h
    flat_out = modulating.copy()
    flat_out[500:520] = 3.2  # a cold morning: 5 h at rated power, its highest level
    off = modulating.copy()
    off[600:696] = 0.0  # a whole day off (summer, or a blocking window)
    # A fixed-speed unit: on at exactly 2.5 kW or off, partial quarter-hours between.
    cycling = np.zeros(days)
    for start in range(0, days - 20, 24):
        length = int(rng.integers(3, 12))
        cycling[start : start + length] = 2.5
        cycling[start + length] = 1.25
    cycling[200:240] = 2.5  # a long run on the same plateau
    x = np.stack([modulating, stuck, flat_out, off, cycling])
    cleaned, n = drop_stuck(x)
    assert n == 29
    assert np.isnan(cleaned[1, 301:330]).all() and cleaned[1, 300] == 1.7  # the first reading is kept
    np.testing.assert_array_equal(np.isnan(cleaned).sum(axis=1), [0, 29, 0, 0, 0])


def test_actual_is_the_data_as_given_features_see_it_cleaned(tmp_path):
    t = pd.date_range("2026-01-01", periods=12 * DAY, freq="15min", tz="UTC")
    power = np.random.default_rng(0).uniform(0.5, 3.0, len(t))
    power[500:540] = 1.9  # stuck
    pd.DataFrame({"device_id": "a", "timestamp": t, "power": power}).to_parquet(tmp_path / "r.parquet")
    data = backtest.load_data(tmp_path / "r.parquet")
    assert data.stuck_dropped == 39
    assert np.isnan(data.panel.power[0, 501:540]).all()
    np.testing.assert_array_equal(data.actual[0], power)


def test_calendar_is_local_time_with_public_holidays():
    times = np.array(["2026-01-01T00:00", "2026-01-02T10:45", "2026-07-01T10:00"], dtype="datetime64[m]")
    hour, weekday, holiday = calendar("DE", times)
    assert list(hour) == [1.0, 11.75, 12.0]  # local time of day in hours: UTC+1 in winter, UTC+2 in summer
    assert list(weekday) == [3, 4, 2]
    assert list(holiday) == [1, 0, 0]  # New Year's Day


def test_features_of_one_row_do_not_depend_on_the_other_rows(data, model):
    panel, origin = data.panel, data.panel.intervals - 2 * DAY
    rows = Rows.grid(np.arange(4), np.full(4, origin), DAY)
    X, _ = design_matrix(panel, rows, model.vocabulary, data.temperature)
    one, _ = design_matrix(panel, Rows.grid([2], [origin], DAY), model.vocabulary, data.temperature)
    np.testing.assert_array_equal(X[2 * DAY : 3 * DAY], one)
    assert X.shape[1] == len(FEATURES)
    # Forecast-start features computed once per (device, origin) or per row: the same.
    loose = Rows(rows.device, rows.origin, rows.horizon)
    np.testing.assert_array_equal(design_matrix(panel, loose, model.vocabulary, data.temperature)[0], X)


def test_artifact_round_trip_predicts_the_same_and_refuses_other_features(data, model):
    copy = QuantileModel.from_bytes(model.to_bytes())
    rows = Rows.grid([0, 1], [data.panel.intervals - DAY] * 2, DAY)
    a = model.predict_rows(data.panel, rows, data.temperature)
    b = copy.predict_rows(data.panel, rows, data.temperature)
    np.testing.assert_array_equal(a.p50, b.p50)
    np.testing.assert_array_equal(a.p90, b.p90)
    assert copy.manifest["training"]["devices"] == 8
    # An artifact of another feature version is refused, not misread.
    src, out = zipfile.ZipFile(io.BytesIO(model.to_bytes())), io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name in src.namelist():
            data = src.read(name)
            if name == "manifest.json":
                data = json.dumps({**json.loads(data), "feature_version": 99}).encode()
            z.writestr(name, data)
    with pytest.raises(ValueError, match="retrain"):
        QuantileModel.from_bytes(out.getvalue())


def test_a_portfolio_adds_up_its_device_means_and_bands_its_total(data, model):
    panel = data.panel
    start = panel.timestamp(panel.intervals - DAY)
    forecasts = [engine.forecast(model, panel_window(panel, d), start, DAY, temperature=None)
                 for d in range(len(panel.device_ids))]
    # The wire form round-trips (the trading service rebuilds forecasts from it).
    again = Forecast.from_dict(forecasts[0].to_dict())
    for k in ("p10", "p50", "p90", "mean"):
        np.testing.assert_array_equal(getattr(again, k), getattr(forecasts[0], k))
    assert again.forecast_start == start and again.data_window_end == forecasts[0].data_window_end

    total = engine.forecast_portfolio(model, forecasts, list(device_locations(panel)))
    np.testing.assert_allclose(total.mean, np.sum([f.mean for f in forecasts], axis=0))
    assert (total.p10 <= total.p50).all() and (total.p50 <= total.p90).all() and (total.p10 >= 0).all()
    band = total.p90 - total.p10
    assert (band > 0).all() and band.sum() < np.sum([f.p90 - f.p10 for f in forecasts])
    assert total.model_version == model.manifest.get("version", "unversioned") and not total.notes
    assert total.to_dict()["devices"] == len(forecasts)

    # The fallback has no calibration: its band is the sum of the device bands, and says so.
    fallback = engine.forecast_portfolio(None, forecasts)
    np.testing.assert_allclose(fallback.p90, np.sum([f.p90 for f in forecasts], axis=0))
    assert engine.UNCALIBRATED_NOTE in fallback.notes
    with pytest.raises(ValueError, match="share forecast_start"):
        engine.forecast_portfolio(model, [forecasts[0], engine.forecast(
            model, panel_window(panel, 1), panel.timestamp(panel.intervals - DAY - 4), DAY)])


def panel_window(panel, d):
    from intraday.forecasting.types import TelemetryWindow

    return TelemetryWindow(str(panel.device_ids[d]), panel.start, panel.power[d])


def test_a_device_retired_inside_the_horizon_draws_nothing_from_then_on(model, data):
    from datetime import timedelta

    start = data.panel.timestamp(data.panel.intervals - DAY)
    f = engine.forecast(model, panel_window(data.panel, 0), start, DAY, temperature=None)
    cut = engine.until_retirement(f, start + timedelta(hours=6, minutes=5))
    assert (cut.mean[:25] == f.mean[:25]).all() and (cut.p90[:25] == f.p90[:25]).all()
    assert (cut.mean[25:] == 0).all() and (cut.p10[25:] == 0).all() and "retired at" in cut.notes[-1]
    assert engine.until_retirement(f, None) is f
    assert engine.until_retirement(f, (start + timedelta(days=2)).isoformat()) is f  # after the horizon
    assert (engine.until_retirement(f, start - timedelta(days=1)).mean == 0).all()
