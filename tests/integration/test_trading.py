"""Price feed -> trading rule -> forecasts by service invocation -> decision
in PostgreSQL and on `orders`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.integration.conftest import eventually, topic_messages


def test_price_move_leads_to_a_trade_decision(gateway, pg, rds):
    r = gateway.post("/prices", json={"price_eur_mwh": 87.5, "at": datetime.now(UTC).isoformat()})
    assert r.status_code == 202

    row = eventually(lambda: pg.execute(
        "SELECT decision_id, array_length(forecast_ids, 1), buy_mwh, sell_mwh,"
        " jsonb_array_length(orders), target_quantile, portfolio_forecast_id, portfolio_forecast, orders"
        " FROM trade_decisions WHERE price_eur_mwh = 87.5").fetchone(),
        timeout=60)
    assert row is not None, "no trade decision recorded"
    decision_id, n_forecasts, buy, sell, n_orders, quantile, portfolio_id, portfolio, orders = row
    assert n_forecasts == 24 and n_orders == 96
    assert buy > 0 and sell == 0  # a flat position: the fleet's consumption is bought
    # It bought the portfolio's median (symmetric imbalance costs), and the
    # portfolio's mean is the sum of the device means the forecasts audited.
    assert quantile == 0.5 and portfolio_id.startswith("pf-") and portfolio["devices"] == 24
    median_mw = [i["p50"] / 1000 for i in portfolio["intervals"]]
    assert [o["target_mw"] for o in orders] == pytest.approx(median_mw, abs=1e-6)  # orders round to 1 W
    device_means = pg.execute(
        "SELECT i, sum(x.mean[i]) FROM trade_decisions d JOIN forecast_series x"
        " ON x.request_id = ANY(d.forecast_ids), generate_subscripts(x.mean, 1) AS i"
        " WHERE d.decision_id = %s GROUP BY 1 ORDER BY 1", (decision_id,)).fetchall()
    assert [m for _, m in device_means] == pytest.approx([i["mean"] for i in portfolio["intervals"]])
    assert [o["mean_mw"] for o in orders] == pytest.approx([m / 1000 for _, m in device_means], abs=1e-6)

    orders = eventually(lambda: [m for m in topic_messages(rds, "orders")
                                 if m["decision_id"] == decision_id], timeout=30)
    assert len(orders) == 1 and abs(orders[0]["buy_mwh"] - buy) < 1e-9
    # The forecasts it used are audited like any other.
    audited = pg.execute("SELECT count(*) FROM forecast_requests WHERE request_id = ANY(%s)",
                         (pg.execute("SELECT forecast_ids FROM trade_decisions WHERE decision_id=%s",
                                     (decision_id,)).fetchone()[0],)).fetchone()[0]
    assert audited == 24


def test_small_move_does_not_trade(gateway, pg):
    before = pg.execute("SELECT count(*) FROM trade_decisions").fetchone()[0]
    r = gateway.post("/prices", json={"price_eur_mwh": 88.0})  # 0.5 EUR/MWh below threshold
    assert r.status_code == 202
    r = gateway.post("/prices", json={"price_eur_mwh": "x"})  # malformed: rejected at the gateway
    assert r.status_code == 422
    # Give the subscriber time to see the tick; nothing may be decided.
    eventually(lambda: False, timeout=3)
    assert pg.execute("SELECT count(*) FROM trade_decisions").fetchone()[0] == before
