"""Price feed -> trading rule -> forecasts by service invocation -> decision
in PostgreSQL and on `orders`."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from intraday import messages
from tests.stack import app_headers, dapr_headers, eventually, restart_app, topic_messages


def test_price_move_leads_to_a_trade_decision(gateway, pg, rds):
    r = gateway.post("/prices", json={"price_eur_mwh": 87.5, "at": datetime.now(UTC).isoformat()})
    assert r.status_code == 202
    # The gateway's message, as a consumer gets it, follows schemas/prices.schema.json.
    (tick,) = [m for m in topic_messages(rds, "prices") if m.get("price_eur_mwh") == 87.5]
    messages.validate("prices", tick)

    row = eventually(lambda: pg.execute(
        "SELECT decision_id, array_length(forecast_ids, 1), buy_mwh, sell_mwh,"
        " jsonb_array_length(orders), target_quantile, portfolio_forecast_id, portfolio_forecast, orders"
        " FROM trade_decisions WHERE price_eur_mwh = 87.5").fetchone(),
        timeout=60)
    assert row is not None, "no trade decision recorded"
    decision_id, n_forecasts, buy, sell, n_orders, quantile, portfolio_id, portfolio, orders = row
    assert n_forecasts == 24 and n_orders == 96
    # Each interval orders the gap between the target and the position that
    # earlier decisions (of other tests) left; a flat position buys it all.
    gaps = [o["target_mw"] - o["position_mw"] for o in orders]
    assert [o["order_mw"] for o in orders] == pytest.approx(gaps, abs=2e-6)
    assert buy == pytest.approx(sum(g for g in gaps if g > 0) / 4, abs=1e-4)
    assert sell == pytest.approx(sum(-g for g in gaps if g < 0) / 4, abs=1e-4)
    assert buy > 0 or all(o["position_mw"] > 0 for o in orders)
    # It bought the portfolio's median (symmetric imbalance costs), and the
    # portfolio's mean is the sum of the device means the forecasts audited.
    assert quantile == 0.5 and portfolio_id.startswith("fl-") and portfolio["devices"] == 24
    # One fleet forecast made the decision: its audit row holds the same devices.
    fleet = pg.execute("SELECT forecast_ids, requested_by FROM fleet_forecasts WHERE fleet_forecast_id = %s",
                       (portfolio_id,)).fetchone()
    assert fleet is not None and fleet[1] == "trading"
    assert sorted(fleet[0]) == sorted(pg.execute(
        "SELECT forecast_ids FROM trade_decisions WHERE decision_id = %s", (decision_id,)).fetchone()[0])
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


TOKENS: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _tokens(stack):
    TOKENS.update(dapr=dapr_headers(stack)["dapr-api-token"], app=app_headers(stack)["dapr-api-token"])


def rule_state() -> dict:
    return httpx.get("http://127.0.0.1:8003/rule", headers={"dapr-api-token": TOKENS["app"]}).json()


def publish_price(event_id: str, price: float, at: datetime) -> None:
    """A price message with a chosen CloudEvent id (what a redelivery repeats),
    published as the gateway does (the only app that may publish prices)."""
    r = httpx.post("http://127.0.0.1:3500/v1.0/publish/pubsub/prices",
                   headers={"Content-Type": "application/cloudevents+json", "dapr-api-token": TOKENS["dapr"]},
                   json={"specversion": "1.0", "id": event_id, "source": "tests", "type": "price",
                         "datacontenttype": "application/json",
                         "data": {"price_eur_mwh": price, "at": at.isoformat()}})
    assert r.status_code == 204, r.text


def decision_of(event_id: str) -> str:
    return "td-" + hashlib.sha256(event_id.encode()).hexdigest()[:16]


def test_a_restarted_trading_service_does_not_trade_a_move_twice(stack, pg, rds):
    """The rule's memory is in the TradingRuleActor: after the trading
    process is killed, a redelivered message and a price within the
    threshold of the last traded one do not trade; a real move still does."""
    t0 = datetime.now(UTC)
    first, repeat, small, big = (f"restart-{k}-{uuid.uuid4().hex[:8]}" for k in range(4))
    decisions = "SELECT count(*) FROM trade_decisions WHERE decision_id = %s"
    publish_price(first, 240.0, t0)
    assert eventually(lambda: pg.execute(decisions, (decision_of(first),)).fetchone()[0] == 1, timeout=90)
    rule = eventually(lambda: (r := rule_state())
                      and decision_of(first) in r["decided"] and r, timeout=10)
    assert rule["reference_price"] == 240.0 and rule["pending"] == []

    restart_app(stack, "trading", 8003)
    before = pg.execute("SELECT count(*) FROM trade_decisions").fetchone()[0]
    publish_price(first, 240.0, t0)  # redelivered after the restart
    publish_price(small, 242.0, t0 + timedelta(seconds=10))  # a forgetful rule trades this one
    publish_price(big, 260.0, t0 + timedelta(seconds=20))
    assert eventually(lambda: pg.execute(decisions, (decision_of(big),)).fetchone()[0] == 1, timeout=90)
    eventually(lambda: False, timeout=2)
    assert pg.execute("SELECT count(*) FROM trade_decisions").fetchone()[0] == before + 1
    assert pg.execute(decisions, (decision_of(small),)).fetchone()[0] == 0
    assert rule_state()["reference_price"] == 260.0
    orders = [m["decision_id"] for m in topic_messages(rds, "orders")]
    assert orders.count(decision_of(first)) == 1 and orders.count(decision_of(big)) == 1


def test_a_tick_stamped_far_from_now_is_refused_and_does_not_hold_the_rule(gateway, pg, rds):
    """A price stamped a year ahead (or days old) is refused by the gateway
    with the reason; one that reaches the topic anyway is dropped by
    trading, so the rule's debounce, which reads each tick's own time, is
    not held shut: the next real move still trades. (Message fuzzing found
    a tick from the year 6379 that stopped all trading.)"""
    published = len(topic_messages(rds, "prices"))
    for at in (datetime.now(UTC) + timedelta(days=365), datetime.now(UTC) - timedelta(days=3)):
        r = gateway.post("/prices", json={"price_eur_mwh": 500.0, "at": at.isoformat()})
        assert r.status_code == 422 and "price tick at" in r.text, r.text
    assert len(topic_messages(rds, "prices")) == published
    far = f"far-{uuid.uuid4().hex[:8]}"
    publish_price(far, 777.0, datetime(6379, 5, 28, 23, 45, tzinfo=UTC))
    # Real moves, a few seconds apart (an earlier test's tick stamped up to
    # a minute ahead may still hold the debounce): one of them trades.
    moves: list[str] = []

    def traded() -> bool:
        moves.append(f"after-far-{uuid.uuid4().hex[:8]}")
        publish_price(moves[-1], 701.25 + 10 * (len(moves) % 2), datetime.now(UTC))
        time.sleep(3)
        return pg.execute("SELECT count(*) FROM trade_decisions WHERE decision_id = ANY(%s)",
                          ([decision_of(m) for m in moves],)).fetchone()[0] > 0

    assert eventually(traded, timeout=120), "no move traded after the far-stamped tick"
    assert pg.execute("SELECT count(*) FROM trade_decisions WHERE decision_id = %s",
                      (decision_of(far),)).fetchone()[0] == 0
    assert not rule_state()["pending"]
