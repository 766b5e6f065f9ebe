"""The trading rule and the trade decision, free of any I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from intraday.forecasting.types import PortfolioForecast
from intraday.timeutil import QUARTER_HOUR, isoformat_z

HOURS_PER_INTERVAL = QUARTER_HOUR / timedelta(hours=1)


# A price tick is traded on only near its own time: one stamped in the
# future would hold the rule's debounce shut until then (the rule compares
# each tick's time with the last trigger's), one hours old is no longer
# the market.
TICK_FUTURE_SKEW = timedelta(minutes=1)  # clocks apart by more are a fault
TICK_MAX_AGE = timedelta(hours=1)


def check_tick_time(at: datetime, now: datetime) -> datetime:
    """`at` if a tick stamped then may move the rule; ValueError with the
    reason otherwise."""
    if at > now + TICK_FUTURE_SKEW:
        raise ValueError(f"price tick at {isoformat_z(at)} is more than {TICK_FUTURE_SKEW.seconds} s in the "
                         f"future (now {isoformat_z(now)})")
    if at < now - TICK_MAX_AGE:
        raise ValueError(f"price tick at {isoformat_z(at)} is more than {TICK_MAX_AGE.seconds // 3600} hour "
                         f"old (now {isoformat_z(now)})")
    return at


@dataclass
class PriceMoveRule:
    """Ask for a forecast when the price has moved at least `threshold_eur_mwh`
    since the price of the last forecast, and not more often than once per
    `debounce`. The first price seen always triggers (there is no forecast
    yet). Moves inside the debounce period are not lost: the next price after
    it is compared with the same reference."""

    threshold_eur_mwh: float
    debounce: timedelta
    reference_price: float | None = None
    last_trigger_at: datetime | None = None

    def observe(self, price_eur_mwh: float, at: datetime) -> bool:
        if self.reference_price is not None:
            if abs(price_eur_mwh - self.reference_price) < self.threshold_eur_mwh:
                return False
            if self.last_trigger_at is not None and at - self.last_trigger_at < self.debounce:
                return False
        self.reference_price = price_eur_mwh
        self.last_trigger_at = at
        return True

    def state(self) -> dict[str, Any]:
        """What the rule remembers between prices (kept in actor state)."""
        return {"reference_price": self.reference_price,
                "last_trigger_at": isoformat_z(self.last_trigger_at) if self.last_trigger_at else None}

    def restore(self, state: dict[str, Any]) -> None:
        self.reference_price = state.get("reference_price")
        at = state.get("last_trigger_at")
        self.last_trigger_at = datetime.fromisoformat(at) if at else None


def cost_optimal_quantile(cost_short_eur_mwh: float, cost_long_eur_mwh: float) -> float:
    """The newsvendor rule: buying the `c_short / (c_short + c_long)` quantile
    of the portfolio's consumption minimises the expected imbalance cost
    when each MWh short costs `c_short` and each MWh long costs `c_long`
    (symmetric costs: the median)."""
    if not (np.isfinite(cost_short_eur_mwh) and np.isfinite(cost_long_eur_mwh)) \
            or cost_short_eur_mwh <= 0 or cost_long_eur_mwh <= 0:
        raise ValueError(f"imbalance costs must be positive and finite, got short {cost_short_eur_mwh} "
                         f"and long {cost_long_eur_mwh} EUR/MWh")
    return cost_short_eur_mwh / (cost_short_eur_mwh + cost_long_eur_mwh)


@dataclass(frozen=True)
class TradeDecision:
    """Orders that bring the position in each delivery interval to the
    target: the portfolio forecast's cost-optimal quantile (`target_quantile`).
    Positive MW buy, negative MW sell; `mean_mw` is the expected consumption."""

    forecast_start: datetime
    target_mw: np.ndarray
    position_mw: np.ndarray
    order_mw: np.ndarray = field(repr=False)
    mean_mw: np.ndarray = field(repr=False)
    target_quantile: float = 0.5

    @property
    def buy_mwh(self) -> float:
        return float(np.clip(self.order_mw, 0, None).sum() * HOURS_PER_INTERVAL)

    @property
    def sell_mwh(self) -> float:
        return float(np.clip(-self.order_mw, 0, None).sum() * HOURS_PER_INTERVAL)

    def interval_starts(self) -> list[datetime]:
        return [self.forecast_start + i * QUARTER_HOUR for i in range(len(self.order_mw))]

    def orders(self) -> list[dict[str, Any]]:
        return [
            {
                "interval_start": isoformat_z(s),
                "mean_mw": round(float(m), 6),
                "target_mw": round(float(f), 6),
                "position_mw": round(float(p), 6),
                "order_mw": round(float(o), 6),
            }
            for s, m, f, p, o in zip(
                self.interval_starts(), self.mean_mw, self.target_mw, self.position_mw, self.order_mw,
                strict=True,
            )
        ]


def decide(portfolio: PortfolioForecast, position_mw: np.ndarray, target_quantile: float = 0.5,
           min_order_mw: float = 0.0) -> TradeDecision:
    """Order the difference between the portfolio's `target_quantile` and the
    position; differences below `min_order_mw` are not worth an order."""
    target_mw = portfolio.quantile(target_quantile) / 1000.0
    position_mw = np.asarray(position_mw, float)
    order = target_mw - position_mw
    order[np.abs(order) < min_order_mw] = 0.0
    return TradeDecision(portfolio.forecast_start, target_mw, position_mw, order,
                         portfolio.mean / 1000.0, target_quantile)
