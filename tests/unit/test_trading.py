from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from intraday.config import Settings
from intraday.forecasting.types import PortfolioForecast
from intraday.trading.rules import PriceMoveRule, cost_optimal_quantile, decide

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def portfolio(mean_kw, p10_kw, p50_kw, p90_kw) -> PortfolioForecast:
    return PortfolioForecast(T0, "v1", ("a", "b"), np.array(mean_kw, float), np.array([0.1, 0.5, 0.9]),
                             np.array([p10_kw, p50_kw, p90_kw], float))


def test_price_rule_threshold_and_debounce():
    rule = PriceMoveRule(threshold_eur_mwh=5.0, debounce=timedelta(seconds=30))
    assert rule.observe(100.0, T0)  # first price: no forecast yet
    assert not rule.observe(104.9, T0 + timedelta(seconds=60))  # below threshold
    assert rule.observe(105.0, T0 + timedelta(seconds=61))
    assert not rule.observe(120.0, T0 + timedelta(seconds=70))  # debounced
    assert rule.reference_price == 105.0
    assert rule.observe(120.0, T0 + timedelta(seconds=92))  # debounce over, move still there
    assert rule.reference_price == 120.0


def test_price_rule_state_survives_a_restart():
    """What the TradingRuleActor keeps: a rule restored from it acts as the
    one that saved it (a fresh rule would take any price as its first)."""
    rule = PriceMoveRule(threshold_eur_mwh=5.0, debounce=timedelta(seconds=30))
    assert rule.observe(100.0, T0)
    restored = PriceMoveRule(threshold_eur_mwh=5.0, debounce=timedelta(seconds=30))
    restored.restore(rule.state())
    assert restored.reference_price == 100.0 and restored.last_trigger_at == T0
    assert not restored.observe(103.0, T0 + timedelta(seconds=60))
    assert not restored.observe(110.0, T0 + timedelta(seconds=10))  # still debounced
    assert restored.observe(110.0, T0 + timedelta(seconds=40))
    fresh = PriceMoveRule(threshold_eur_mwh=5.0, debounce=timedelta(seconds=30))
    fresh.restore({})
    assert fresh.observe(100.0, T0)


def test_a_portfolio_forecast_with_its_table_round_trips_every_quantile():
    levels = np.round(np.arange(0.05, 1.0, 0.05), 2)
    table = np.cumsum(np.random.default_rng(3).uniform(1, 10, size=(len(levels), 4)), axis=0)
    total = PortfolioForecast(T0, "v1", ("a", "b"), table[9] + 0.5, levels, table)
    back = PortfolioForecast.from_dict(total.to_dict(table=True), total.device_ids)
    for q in (0.05, 0.37, 0.5, 0.62, 0.95):
        np.testing.assert_allclose(back.quantile(q), total.quantile(q), atol=1e-6)
    np.testing.assert_allclose(back.mean, total.mean)
    assert back.to_dict() == total.to_dict()
    # Without the table only p10/p50/p90 travel: other levels are interpolated.
    coarse = PortfolioForecast.from_dict(total.to_dict())
    np.testing.assert_allclose(coarse.p50, total.p50)
    assert not np.allclose(coarse.quantile(0.3), total.quantile(0.3))


def test_decision_orders_the_gap_between_the_target_and_the_position():
    total = portfolio([2100.0, 1100.0, 600.0], [1500.0, 800.0, 300.0], [2000.0, 1000.0, 500.0],
                      [2600.0, 1300.0, 800.0])
    d = decide(total, position_mw=np.array([1.0, 1.5, 0.5]))  # symmetric costs: the median
    np.testing.assert_allclose(d.order_mw, [1.0, -0.5, 0.0])
    assert d.buy_mwh == pytest.approx(0.25)
    assert d.sell_mwh == pytest.approx(0.125)
    assert d.target_quantile == 0.5
    orders = d.orders()
    assert orders[1] == {"interval_start": "2026-03-01T12:15:00Z", "mean_mw": 1.1, "target_mw": 1.0,
                         "position_mw": 1.5, "order_mw": -0.5}


def test_asymmetric_imbalance_costs_pick_the_cost_optimal_quantile():
    # Short costs three times long: buy the 75 % quantile.
    assert cost_optimal_quantile(300.0, 100.0) == pytest.approx(0.75)
    assert cost_optimal_quantile(100.0, 400.0) == pytest.approx(0.2)
    assert Settings(imbalance_cost_short_eur_mwh=90, imbalance_cost_long_eur_mwh=10).target_quantile == \
        pytest.approx(0.9)
    total = portfolio([1000.0], [800.0], [1000.0], [1400.0])
    flat = np.zeros(1)
    assert decide(total, flat, 0.9).target_mw[0] == pytest.approx(1.4)
    assert decide(total, flat, 0.1).target_mw[0] == pytest.approx(0.8)
    assert decide(total, flat, 0.75).target_mw[0] == pytest.approx(1.0 + 0.625 * 0.4)  # between P50 and P90
    short_is_dear = decide(total, flat, cost_optimal_quantile(300.0, 100.0))
    assert short_is_dear.buy_mwh > decide(total, flat, 0.5).buy_mwh
    for bad in ((0.0, 100.0), (100.0, -1.0), (float("nan"), 1.0)):
        with pytest.raises(ValueError, match="positive"):
            cost_optimal_quantile(*bad)
    with pytest.raises(ValueError, match="positive"):
        Settings(imbalance_cost_long_eur_mwh=0)


def test_small_differences_are_not_traded():
    total = portfolio([1010.0], [900.0], [1010.0], [1100.0])
    d = decide(total, np.array([1.0]), min_order_mw=0.1)
    assert d.order_mw[0] == 0.0 and d.buy_mwh == 0.0


def test_a_tick_far_from_now_is_refused_with_the_reason():
    from intraday.trading.rules import check_tick_time

    now = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    assert check_tick_time(now - timedelta(minutes=59), now) == now - timedelta(minutes=59)
    assert check_tick_time(now + timedelta(seconds=50), now) == now + timedelta(seconds=50)
    with pytest.raises(ValueError, match="in the future"):
        check_tick_time(now + timedelta(minutes=2), now)
    with pytest.raises(ValueError, match="old"):
        check_tick_time(now - timedelta(hours=2), now)
