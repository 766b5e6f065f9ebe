from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from intraday.trading.rules import PriceMoveRule, decide

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_price_rule_threshold_and_debounce():
    rule = PriceMoveRule(threshold_eur_mwh=5.0, debounce=timedelta(seconds=30))
    assert rule.observe(100.0, T0)  # first price: no forecast yet
    assert not rule.observe(104.9, T0 + timedelta(seconds=60))  # below threshold
    assert rule.observe(105.0, T0 + timedelta(seconds=61))
    assert not rule.observe(120.0, T0 + timedelta(seconds=70))  # debounced
    assert rule.reference_price == 105.0
    assert rule.observe(120.0, T0 + timedelta(seconds=92))  # debounce over, move still there
    assert rule.reference_price == 120.0


def test_decision_orders_the_gap_between_forecast_and_position():
    d = decide(T0, fleet_p50_kw=np.array([2000.0, 1000.0, 500.0]),
               position_mw=np.array([1.0, 1.5, 0.5]))
    np.testing.assert_allclose(d.order_mw, [1.0, -0.5, 0.0])
    assert d.buy_mwh == pytest.approx(0.25)
    assert d.sell_mwh == pytest.approx(0.125)
    orders = d.orders()
    assert orders[1] == {"interval_start": "2026-03-01T12:15:00Z", "forecast_mw": 1.0,
                         "position_mw": 1.5, "order_mw": -0.5}


def test_small_differences_are_not_traded():
    d = decide(T0, np.array([1010.0]), np.array([1.0]), min_order_mw=0.1)
    assert d.order_mw[0] == 0.0 and d.buy_mwh == 0.0
