"""The trading rule and the trade decision, free of any I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from intraday.timeutil import QUARTER_HOUR, isoformat_z

HOURS_PER_INTERVAL = QUARTER_HOUR / timedelta(hours=1)


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


@dataclass(frozen=True)
class TradeDecision:
    """Orders that bring the position in each delivery interval to the fleet's
    P50 forecast: positive MW buy, negative MW sell."""

    forecast_start: datetime
    forecast_mw: np.ndarray
    position_mw: np.ndarray
    order_mw: np.ndarray = field(repr=False)

    @property
    def buy_mwh(self) -> float:
        return float(np.clip(self.order_mw, 0, None).sum() * HOURS_PER_INTERVAL)

    @property
    def sell_mwh(self) -> float:
        return float(np.clip(-self.order_mw, 0, None).sum() * HOURS_PER_INTERVAL)

    def interval_starts(self) -> list[datetime]:
        return [self.forecast_start + i * QUARTER_HOUR for i in range(len(self.order_mw))]

    def orders(self) -> list[dict]:
        return [
            {
                "interval_start": isoformat_z(s),
                "forecast_mw": round(float(f), 6),
                "position_mw": round(float(p), 6),
                "order_mw": round(float(o), 6),
            }
            for s, f, p, o in zip(
                self.interval_starts(), self.forecast_mw, self.position_mw, self.order_mw,
                strict=True,
            )
        ]


def decide(forecast_start: datetime, fleet_p50_kw: np.ndarray, position_mw: np.ndarray,
           min_order_mw: float = 0.0) -> TradeDecision:
    """Order the difference between forecast consumption and the position;
    differences below `min_order_mw` are not worth an order."""
    forecast_mw = np.asarray(fleet_p50_kw, float) / 1000.0
    position_mw = np.asarray(position_mw, float)
    order = forecast_mw - position_mw
    order[np.abs(order) < min_order_mw] = 0.0
    return TradeDecision(forecast_start, forecast_mw, position_mw, order)
