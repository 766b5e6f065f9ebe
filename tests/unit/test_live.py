"""Live accuracy's sums (intraday/forecasting/live.py): the backtest's
measures, split by delivery day and horizon block, pooled exactly."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import reduce

import numpy as np
import pytest

from intraday.forecasting import live, metrics


def _forecasts(seed: int = 3, series: int = 4, steps: int = 96):
    rng = np.random.default_rng(seed)
    p50 = rng.uniform(1, 3, (series, steps))
    p10, p90 = p50 - rng.uniform(0.2, 1, p50.shape), p50 + rng.uniform(0.2, 1, p50.shape)
    mean = p50 + 0.1
    actual = np.abs(p50 + rng.normal(0, 0.8, p50.shape))  # power drawn: not negative
    return actual, p10, p50, p90, mean


def test_pooled_sums_give_the_backtests_measures():
    actual, p10, p50, p90, mean = _forecasts()
    start = datetime(2026, 1, 5, 18, tzinfo=UTC)
    sums = live.score(start, actual, p10, p50, p90, mean)
    total = reduce(lambda x, y: x + y, sums.values())
    want = metrics.scores(actual.ravel(), p10.ravel(), p50.ravel(), p90.ravel(), mean.ravel())
    device = total.measures("device")
    assert device["cells"] == actual.size
    assert device["wape"] == pytest.approx(want["wape"])
    assert device["bias"] == pytest.approx(want["mean_bias"])
    assert device["pinball"] == pytest.approx(want["pinball_mean"])
    assert device["coverage"] == pytest.approx(want["coverage_p10_p90"])
    assert device["below"] + device["above"] + device["coverage"] == pytest.approx(1.0)
    assert total.measures("portfolio")["wape"] == pytest.approx(want["mean_wape"])


def test_cells_are_split_by_delivery_day_and_horizon_block():
    actual, p10, p50, p90, mean = _forecasts(series=2)
    start = datetime(2026, 1, 5, 18, tzinfo=UTC)  # 6 h of the 5th, 18 h of the 6th
    sums = live.score(start, actual, p10, p50, p90, mean)
    assert sorted(sums) == [(date(2026, 1, 5), 0), (date(2026, 1, 6), 1), (date(2026, 1, 6), 2),
                            (date(2026, 1, 6), 3)]
    assert all(s.cells == 2 * 24 for s in sums.values())
    # A block that straddles midnight is two rows.
    sums = live.score(start + timedelta(hours=3), actual, p10, p50, p90, mean)
    assert sums[(date(2026, 1, 5), 0)].cells == 2 * 12 and sums[(date(2026, 1, 6), 0)].cells == 2 * 12


def test_cells_without_an_actual_or_a_forecast_are_not_scored():
    actual, p10, p50, p90, mean = _forecasts(series=1, steps=8)
    actual[0, :3] = np.nan
    mean[0, 7] = np.nan  # the device retired: no forecast there
    sums = live.score(datetime(2026, 1, 5, tzinfo=UTC), actual, p10, p50, p90, mean)
    assert sum(s.cells for s in sums.values()) == 4
    assert live.score(datetime(2026, 1, 5, tzinfo=UTC), actual * np.nan, p10, p50, p90, mean) == {}


def test_a_total_is_scored_only_where_every_device_it_holds_reported():
    actual = np.array([[1.0, 2.0, np.nan, 4.0], [1.0, np.nan, np.nan, 5.0]])
    forecast = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, np.nan, np.nan, 1.0]])  # the 2nd left at step 1
    total = live.portfolio_actual(actual, forecast)
    assert total[0] == 2.0 and total[1] == 2.0 and total[3] == 9.0
    assert np.isnan(total[2])  # the first device's reading is missing


def test_a_week_out_of_line_is_named():
    assert live.alerts({"coverage": 0.8, "bias": 0.01}) == []
    assert live.alerts({"coverage": None, "bias": None}) == []
    low = live.alerts({"coverage": 0.62, "bias": -0.07})
    assert len(low) == 2 and "62.0%" in low[0] and "-7.0%" in low[1]
    assert live.alerts({"coverage": 0.93, "bias": 0.0})
