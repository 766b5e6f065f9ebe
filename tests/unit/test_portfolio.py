"""The portfolio forecast: coherent means, and a band on the total that
reaches its nominal coverage for the whole fleet, one location and small
random portfolios, where summing device bands or assuming independence
does not."""

import numpy as np
import pytest

from intraday.forecasting import portfolio

D, LOCATIONS, ORIGINS, H = 300, 15, 60, 24
RHO_FLEET, RHO_LOCATION = 0.05, 0.25


def draw(seed: int):
    """Devices x origins x steps: forecasts (mean, P10, P90 of a skewed
    device error) and actuals whose errors share a fleet-wide and a
    per-location factor (a temperature forecast error, say)."""
    rng = np.random.default_rng(seed)
    location = np.repeat(np.arange(LOCATIONS), D // LOCATIONS).astype(str)
    level = rng.gamma(2.0, 1.0, D)[:, None, None] * (1 + 0.3 * np.sin(np.arange(H) / 4))[None, None, :]
    sd = 0.5 * level * np.ones((1, ORIGINS, 1))
    fleet = rng.standard_normal((1, ORIGINS, H))
    local = rng.standard_normal((LOCATIONS, ORIGINS, H))[np.repeat(np.arange(LOCATIONS), D // LOCATIONS)]
    own = (rng.gamma(2.0, 1.0, (D, ORIGINS, H)) - 2.0) / np.sqrt(2.0)  # skewed, mean 0, sd 1
    z = (np.sqrt(RHO_FLEET) * fleet + np.sqrt(RHO_LOCATION - RHO_FLEET) * local
         + np.sqrt(1 - RHO_LOCATION) * own)
    mean = level * np.ones((1, ORIGINS, 1))
    actual = mean + sd * z
    actual[rng.random(actual.shape) < 0.01] = np.nan  # lost readings
    return actual, mean, mean - 1.2816 * sd, mean + 1.2816 * sd, location


@pytest.fixture(scope="module")
def calibration():
    actual, mean, p10, p90, location = draw(1)
    return portfolio.fit(actual, mean, p10, p90, location, block_steps=6, rng=np.random.default_rng(0))


def coverage(calibration, members: np.ndarray, seed: int = 2) -> float:
    actual, mean, p10, p90, location = draw(seed)
    hits = []
    for o in range(ORIGINS):
        ok = ~np.isnan(actual[members, o])
        m = np.where(ok, mean[members, o], np.nan)
        total, (lo, hi) = portfolio.quantiles(calibration, m, np.where(ok, p10[members, o], np.nan),
                                              np.where(ok, p90[members, o], np.nan), location[members],
                                              (0.1, 0.9))
        y = np.where(ok, actual[members, o], 0.0).sum(axis=0)
        np.testing.assert_allclose(total, np.nansum(m, axis=0))  # the means add up
        hits.append((y >= lo) & (y <= hi))
    return float(np.mean(hits))


def test_the_dependence_is_estimated_from_held_out_errors(calibration):
    assert np.mean(calibration.rho_fleet) == pytest.approx(RHO_FLEET, abs=0.03)
    assert np.mean(calibration.rho_location) == pytest.approx(RHO_LOCATION, abs=0.06)
    # P10-P90 of a unit-variance error is 2.56 wide: a ~ 1 / 2.56^2.
    assert np.mean([v[0] for v in calibration.variance]) == pytest.approx(1 / 2.5631**2, rel=0.15)


@pytest.mark.parametrize("portfolio_of", ["fleet", "one location", "random 30"])
def test_the_band_of_the_total_reaches_its_nominal_coverage(calibration, portfolio_of):
    rng = np.random.default_rng(5)
    members = {"fleet": np.arange(D), "one location": np.arange(D // LOCATIONS),
               "random 30": rng.choice(D, 30, replace=False)}[portfolio_of]
    assert coverage(calibration, members) == pytest.approx(0.80, abs=0.05)


def test_summed_device_bands_or_independent_devices_miss_it(calibration):
    actual, mean, p10, p90, location = draw(2)
    y = np.nansum(actual, axis=0)
    summed = np.mean((y >= p10.sum(axis=0)) & (y <= p90.sum(axis=0)))
    assert summed > 0.97  # far too wide: device errors partly cancel
    independent = portfolio.PortfolioCalibration(**{**calibration.to_dict(), "rho_fleet": [0.0] * 4,
                                                    "rho_location": [0.0] * 4})
    assert coverage(independent, np.arange(D)) < 0.6  # far too narrow: they also move together


def test_quantiles_are_ordered_non_negative_and_survive_a_round_trip(calibration):
    actual, mean, p10, p90, location = draw(3)
    levels = np.linspace(0.01, 0.99, 30)
    total, q = portfolio.quantiles(calibration, mean[:, 0], p10[:, 0], p90[:, 0], location, levels)
    assert (np.diff(q, axis=0) >= 0).all() and (q >= 0).all()
    again = portfolio.PortfolioCalibration.from_dict(calibration.to_dict())
    np.testing.assert_array_equal(portfolio.quantiles(again, mean[:, 0], p10[:, 0], p90[:, 0], location,
                                                      levels)[1], q)
    # No device at all in a step: no total.
    none = np.full_like(mean[:, 0], np.nan)
    total, q = portfolio.quantiles(calibration, none, none, none, location, (0.5,))
    assert np.isnan(total).all() and np.isnan(q).all()


def test_shards_partials_add_up_to_the_whole_portfolio(calibration):
    """A fleet forecast sums its shards' partials (through JSON, as they
    cross the workflow) instead of gathering every device forecast."""
    actual, mean, p10, p90, location = draw(4)
    m, lo, hi = mean[:, 0], p10[:, 0], p90[:, 0]
    m = np.where(np.random.default_rng(5).random(m.shape) < 0.05, np.nan, m)  # devices absent here and there
    whole = portfolio.quantiles(calibration, m, lo, hi, location)
    order = np.random.default_rng(6).permutation(D)  # shards cut across locations
    shards = [order[i: i + 70] for i in range(0, D, 70)]
    parts = [portfolio.Partial.from_dict(
        portfolio.partial(calibration, m[s], lo[s], (lo[s] + hi[s]) / 2, hi[s], location[s]).to_dict())
        for s in shards]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    combined = portfolio.quantiles_of(calibration, total)
    np.testing.assert_allclose(combined[0], whole[0], rtol=1e-12)
    np.testing.assert_allclose(combined[1], whole[1], rtol=1e-12)
    assert (total.present == (~np.isnan(m)).sum(axis=0)).all()
    # Dropping a shard is visible: the total is not the whole's.
    assert not np.allclose(portfolio.quantiles_of(calibration, parts[0] + parts[1])[0], whole[0])
