"""The rolling recalibration of the bands (intraday/forecasting/recalibration.py)."""

import numpy as np
import pytest

from intraday.forecasting import portfolio, recalibration
from intraday.forecasting.model import QuantileModel
from intraday.forecasting.recalibration import Window, device_day, portfolio_day

Z90 = 1.2815515655446004  # a normal's 90 % quantile


def _band_day(day: str, rng, spread: float, n: int = 4000, steps: int = 96) -> recalibration.Day:
    """A day of forecasts whose P10-P90 is a unit normal's, against actuals
    `spread` times as spread out."""
    p50 = np.full((n // steps, steps), 10.0)
    actual = p50 + spread * rng.standard_normal(p50.shape)
    return device_day(day, actual, p50 - Z90, p50, p50 + Z90, np.arange(steps), 24, 4)


@pytest.mark.parametrize("spread", [1.0, 2.0, 0.6])
def test_the_factor_is_what_the_band_should_have_been(spread):
    rng = np.random.default_rng(1)
    window = Window()
    for d in range(7):
        window.add(_band_day(f"2026-01-0{d + 1}", rng, spread))
    f = window.factors()
    assert f.device.shape == (4, 2)
    assert np.allclose(f.device, spread, rtol=0.08), f.device


def test_only_the_last_days_before_the_forecast_count():
    rng = np.random.default_rng(2)
    window = Window()
    for d in range(1, 10):  # a week of good bands, then two days of bad ones
        window.add(_band_day(f"2026-01-{d:02d}", rng, 1.0 if d <= 7 else 3.0))
    assert np.allclose(window.factors(before="2026-01-08").device, 1.0, rtol=0.08)
    later = window.factors(before="2026-01-10")
    assert later.days == [f"2026-01-{d:02d}" for d in range(3, 10)]
    assert (later.device > 1.2).all()
    # Never a day on or after the forecast's own.
    assert window.factors(before="2026-01-01").device is None


def test_too_few_scores_leave_the_band_and_factors_stay_in_range():
    rng = np.random.default_rng(3)
    few = Window([_band_day("2026-01-01", rng, 3.0, n=96 * 2)])  # 48 per block
    assert np.all(few.factors().device == 1.0)
    wild = Window([_band_day("2026-01-01", rng, 50.0)])
    assert np.all(wild.factors().device == recalibration.FACTOR_RANGE[1])


def test_a_day_scored_twice_adds_up_and_the_window_survives_json():
    rng = np.random.default_rng(4)
    window = Window([_band_day("2026-01-01", rng, 2.0)])
    window.add(_band_day("2026-01-01", rng, 2.0))
    assert len(window.days) == 1 and window.days[0].device[0][0][-1] == 2 * (4000 // 96) * 24
    # Three forecasts of a total: 72 scores per block (24 would be too few).
    actual, p10, p50, p90 = (np.full((3, 96), v) for v in (120.0, 90.0, 100.0, 110.0))
    total = portfolio_day("2026-01-01", 30, actual, p10, p50, p90, 24, 4)
    window.add(total)
    back = Window.from_dict(window.to_dict())
    assert back.to_dict() == window.to_dict()
    f = back.factors()
    # The total was 20 above a median whose P90 is 10 above: twice the band.
    assert f.portfolio_tails(30) is not None and np.allclose(f.portfolio_tails(30)[:, 1], 2.0, rtol=0.05)
    assert f.portfolio_tails(28) is not None  # the same size class
    assert f.portfolio_tails(300) is None


def test_the_model_serves_with_its_window_and_stores_it(model):
    # A model starts from its calibration span's days: its device bands as calibrated.
    assert model.recalibration.days and np.allclose(model.factors.device, 1.0, atol=0.05)
    back = QuantileModel.from_bytes(model.to_bytes())
    assert back.recalibration.to_dict() == model.recalibration.to_dict()
    # Rescored on days where actuals went twice as far, it serves wider bands.
    raw = np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 4.0]])
    horizon, short = np.array([0, 50]), np.zeros(2, bool)
    lo, mid, hi = back.calibrated(raw, horizon, short)
    rng = np.random.default_rng(5)
    wide = Window([_band_day(f"2026-03-0{d + 1}", rng, 2.0) for d in range(7)])
    back.rescore(wide)
    lo2, mid2, hi2 = back.calibrated(raw, horizon, short)
    assert np.allclose(mid2, mid)
    assert np.allclose(hi2 - mid2, (hi - mid) * back.factors.device_tails(horizon // back.block_steps)[1])
    assert ((hi2 - mid2) > 1.8 * (hi - mid)).all()
    assert (lo2 <= lo).all()


def test_portfolio_factors_scale_each_side_of_the_median(model):
    cal = model.portfolio
    part = portfolio.partial(cal, np.full((5, 96), 2.0), np.full((5, 96), 1.0), np.full((5, 96), 2.0),
                             np.full((5, 96), 3.5), np.array(["a"] * 5))
    _, base = portfolio.quantiles_of(cal, part, (0.1, 0.5, 0.9))
    factors = np.tile([0.5, 2.0], (4, 1))
    _, scaled = portfolio.quantiles_of(cal, part, (0.1, 0.5, 0.9), factors)
    assert np.allclose(scaled[1], base[1])
    assert np.allclose(scaled[2] - scaled[1], 2.0 * (base[2] - base[1]))
    assert np.allclose(scaled[1] - scaled[0], 0.5 * (base[1] - base[0]))


def test_a_published_forecast_is_scored_on_its_band_before_scaling():
    """What the service records of a fleet forecast's scaling undoes it: the
    day's scores are those of the unscaled bands, as the backtest takes them."""
    rng = np.random.default_rng(5)
    devices, steps = 40, 96
    p50 = rng.uniform(2, 4, (devices, steps))
    p10, p90 = p50 - rng.uniform(0.5, 1, p50.shape), p50 + rng.uniform(0.5, 1, p50.shape)
    actual = p50 + rng.normal(0, 1.2, p50.shape)
    tails = np.array([[1.3, 1.6], [0.8, 1.1], [1.0, 1.0], [2.0, 0.7]])  # (blocks, 2) as served
    lo, hi = tails[np.arange(steps) // 24].T
    s10, s90 = recalibration.widen(p10, p50, p90, lo, hi)
    total, t10, t50, t90 = actual.sum(0), p10.sum(0), p50.sum(0), p90.sum(0)
    w10, w90 = recalibration.widen(t10, t50, t90, lo, hi)
    factors = recalibration.Factors(tails, {recalibration.size_class(devices): tails}, ["2026-01-01"])
    record = recalibration.used(factors, devices, 4, 4, 24, "2025-12-31T00:00:00Z")
    assert record["device"] == tails.tolist() and record["portfolio"] == tails.tolist()
    day = recalibration.published_day("2026-01-02", record, actual, s10, p50, s90, total, (w10, t50, w90),
                                      devices)
    want = device_day("2026-01-02", actual, p10, p50, p90, np.arange(steps), 24, 4)
    assert day.device == want.device
    assert day.portfolio == portfolio_day("2026-01-02", devices, total, t10, t50, t90, 24, 4).portfolio
    # Unscaled (no factors recorded): scored on the bands as published.
    bare = recalibration.used(recalibration.NO_FACTORS, devices, 4, 4, 24, "2025-12-31T00:00:00Z")
    assert recalibration.published_day("2026-01-02", bare, actual, s10, p50, s90).device == \
        device_day("2026-01-02", actual, s10, p50, s90, np.arange(steps), 24, 4).device
