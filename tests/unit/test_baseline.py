from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from intraday.errors import InsufficientHistory
from intraday.forecasting.baseline import seasonal_quantiles
from intraday.forecasting.types import TelemetryWindow

START = datetime(2026, 1, 1, tzinfo=UTC)


def periodic_window(days: int = 30, seed: int = 0) -> TelemetryWindow:
    rng = np.random.default_rng(seed)
    qh = np.arange(days * 96) % 96
    values = 1.0 + np.sin(qh / 96 * 2 * np.pi) + rng.normal(0, 0.1, days * 96)
    return TelemetryWindow("hp-1", START, values)


def test_quantiles_follow_the_daily_shape_and_never_cross():
    w = periodic_window()
    fs = START + timedelta(days=30)
    f = seasonal_quantiles(w, fs, 96)
    expected = 1.0 + np.sin(np.arange(96) / 96 * 2 * np.pi)
    assert f.horizon_intervals == 96
    assert np.max(np.abs(f.p50 - expected)) < 0.15
    assert np.all(f.p10 <= f.p50) and np.all(f.p50 <= f.p90)
    assert np.all(f.p90 - f.p10 > 0)
    assert f.data_window_start == fs - timedelta(days=14)
    assert f.data_window_end == fs


def test_uses_only_data_before_forecast_start():
    w = periodic_window()
    fs = START + timedelta(days=25)
    before = seasonal_quantiles(w, fs, 96)
    changed = w.values.copy()
    changed[w.index_of(fs):] = 1e6  # everything at and after forecast_start
    after = seasonal_quantiles(TelemetryWindow("hp-1", START, changed), fs, 96)
    np.testing.assert_array_equal(before.p50, after.p50)
    np.testing.assert_array_equal(before.p90, after.p90)


def test_second_day_of_a_long_horizon_looks_two_days_back():
    # Day d has level d: the same quarter-hour on the previous days is known.
    values = np.repeat(np.arange(30.0), 96)
    w = TelemetryWindow("hp-1", START, values)
    fs = START + timedelta(days=30)
    f = seasonal_quantiles(w, fs, 192, days=3)
    assert np.all(f.p50[:96] == 28.0)  # days 29, 28, 27
    # Day two of the horizon (day 31) looks back 2..4 days: days 29, 28, 27. Lags of
    # 1..3 would reach day 30, which lies after forecast_start.
    assert np.all(f.p50[96:] == 28.0)


def test_gaps_are_skipped_and_too_few_observations_fail_with_a_reason():
    w = periodic_window(days=20)
    holey = w.values.copy()
    holey[np.random.default_rng(3).random(len(holey)) < 0.3] = np.nan  # 30 % gaps
    f = seasonal_quantiles(TelemetryWindow("hp-1", START, holey), START + timedelta(days=20), 96)
    assert not np.isnan(f.p50).any()

    short = TelemetryWindow("hp-1", START, w.values[: 2 * 96])  # two days of history
    with pytest.raises(InsufficientHistory, match="fewer than 3 observations"):
        seasonal_quantiles(short, START + timedelta(days=2), 96)


def test_forecast_wire_form():
    f = seasonal_quantiles(periodic_window(), START + timedelta(days=30), 4)
    d = f.to_dict()
    assert d["model_version"] == "baseline"
    assert [i["interval_start"] for i in d["intervals"]] == [
        "2026-01-31T00:00:00Z", "2026-01-31T00:15:00Z", "2026-01-31T00:30:00Z", "2026-01-31T00:45:00Z"
    ]
    assert d["intervals"][0]["interval_end"] == "2026-01-31T00:15:00Z"


def test_quantile_matrix_equals_numpys_nanquantile_and_nanmean_with_gaps():
    import warnings

    from intraday.forecasting.baseline import seasonal_quantile_matrix
    from intraday.forecasting.types import QUANTILES

    rng = np.random.default_rng(3)
    values = rng.gamma(2.0, 1.0, (40, 30 * 96))
    values[rng.random(values.shape) < 0.3] = np.nan
    values[5] = np.nan  # a device without any reading
    q, counts = seasonal_quantile_matrix(values, 20 * 96 + 7, 130, days=14)
    k = np.arange(130)
    lags = (k // 96 + 1)[:, None] + np.arange(14)[None, :]
    samples = values[:, 20 * 96 + 7 + k[:, None] - lags * 96]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanquantile(samples, QUANTILES, axis=2)
        expected_mean = np.nanmean(samples, axis=2)
    np.testing.assert_allclose(q[:3], expected, equal_nan=True)
    np.testing.assert_allclose(q[3], expected_mean, equal_nan=True)
    assert np.isnan(q[:, 5]).all() and (counts[5] == 0).all()
