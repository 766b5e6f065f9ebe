"""Live accuracy: published forecasts scored against the actuals that came
after them.

The backtest says how a model did on days it had not seen before it was
served; this says how the served forecasts do now. Every published
forecast is scored once its last interval is over and its readings are in
(`services/forecaster/scoring.py`): a fleet forecast at the portfolio level
(its total against the sum of its devices' readings) and at the device
level (each device forecast it summed), a device forecast made on its own
at the device level.

A score is kept as additive sums (`Sums`) per level, delivery day (UTC) and
6-hour block of the horizon, so any view (a day, a week, a block, a model)
is a sum of rows, and a ratio is taken last: WAPE, bias and coverage of a
week are those of its pooled intervals, not an average of daily ratios.
The measures are the backtest's (`metrics.py`): WAPE of P50 for devices and
of the mean for totals (what is bought), bias of the mean, the mean of the
P10/P50/P90 pinball losses, and P10-P90 coverage.

Every forecast counts: a day of many price moves has many forecasts, and
they weigh as much as the trades made on them did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np

from intraday.forecasting.types import QUANTILES

BLOCK_HOURS = 6
LEVELS = ("portfolio", "device")
# A week's portfolio P10-P90 coverage outside this range, or its bias past
# BIAS_LIMIT, is an alert (observability/rules.yml reads the same numbers).
COVERAGE_RANGE = (0.70, 0.90)
BIAS_LIMIT = 0.05
WEEK_DAYS = 7


@dataclass
class Sums:
    """What a set of scored cells (device or total x interval) adds up to."""

    cells: int = 0
    actual: float = 0.0          # sum of |actual|
    abs_error_p50: float = 0.0   # sum of |actual - P50|
    abs_error_mean: float = 0.0  # sum of |actual - mean|
    error_mean: float = 0.0      # sum of mean - actual
    pinball: float = 0.0         # sum of the mean of the P10, P50 and P90 pinball losses
    inside: int = 0              # actual within [P10, P90]
    below: int = 0               # actual below P10
    above: int = 0               # actual above P90
    band: float = 0.0            # sum of P90 - P10

    def __add__(self, other: Sums) -> Sums:
        return Sums(**{f: getattr(self, f) + getattr(other, f) for f in FIELDS})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def measures(self, level: str) -> dict[str, float | int | None]:
        """WAPE (of P50 for devices, of the mean for totals), bias of the
        mean, pinball per cell, P10-P90 coverage, the shares below and
        above the band, and the band's mean width (kW); None without cells."""
        if self.cells == 0:
            return {"cells": 0, "wape": None, "bias": None, "pinball": None, "coverage": None,
                    "below": None, "above": None, "band_kw": None}
        total = max(self.actual, 1e-12)
        return {"cells": self.cells,
                "wape": (self.abs_error_mean if level == "portfolio" else self.abs_error_p50) / total,
                "bias": self.error_mean / total,
                "pinball": self.pinball / self.cells,
                "coverage": self.inside / self.cells,
                "below": self.below / self.cells, "above": self.above / self.cells,
                "band_kw": self.band / self.cells}


FIELDS = tuple(f.name for f in fields(Sums))


def score(start: datetime, actual: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray,
          mean: np.ndarray, step: timedelta = timedelta(minutes=15)) -> dict[tuple[date, int], Sums]:
    """The sums of forecasts starting at `start` against their actuals,
    by (delivery day, horizon block). Arrays (series, steps) or (steps,);
    a cell whose actual or forecast is NaN is not scored."""
    a = np.atleast_2d(np.asarray(actual, float))
    q10, q50, q90, m = (np.broadcast_to(np.atleast_2d(np.asarray(x, float)), a.shape)
                        for x in (p10, p50, p90, mean))
    steps = a.shape[1]
    ok = ~(np.isnan(a) | np.isnan(q10) | np.isnan(q50) | np.isnan(q90) | np.isnan(m))
    days = [(start + k * step).date() for k in range(steps)]
    block = np.arange(steps) // max(int(timedelta(hours=BLOCK_HOURS) / step), 1)
    keys = sorted({(d, int(b)) for d, b in zip(days, block, strict=True)})
    index = {k: i for i, k in enumerate(keys)}
    group = np.broadcast_to(np.array([index[(d, int(b))] for d, b in zip(days, block, strict=True)]), a.shape)
    g, a, q10, q50, q90, m = (x[ok] for x in (group, a, q10, q50, q90, m))
    loss = np.mean([np.maximum(q * (a - p), (q - 1) * (a - p)) for q, p in zip(QUANTILES, (q10, q50, q90),
                                                                                   strict=True)], axis=0)
    n = len(keys)

    def add(values: np.ndarray) -> np.ndarray:
        return np.bincount(g, weights=np.asarray(values, float), minlength=n)

    columns = {"cells": np.bincount(g, minlength=n), "actual": add(np.abs(a)),
               "abs_error_p50": add(np.abs(a - q50)), "abs_error_mean": add(np.abs(a - m)),
               "error_mean": add(m - a), "pinball": add(loss),
               "inside": np.bincount(g, weights=(a >= q10) & (a <= q90), minlength=n),
               "below": np.bincount(g, weights=a < q10, minlength=n),
               "above": np.bincount(g, weights=a > q90, minlength=n), "band": add(q90 - q10)}
    counts = {"cells", "inside", "below", "above"}
    return {k: Sums(**{f: int(columns[f][i]) if f in counts else float(columns[f][i])  # type: ignore[arg-type]
                       for f in FIELDS})
            for i, k in enumerate(keys) if columns["cells"][i] > 0}


def portfolio_actual(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """The total a portfolio forecast is scored against, per interval: the
    sum of the readings of the devices it holds there (those with a
    forecast), NaN where one of them has no reading (a partial sum would
    look like a short forecast)."""
    held = ~np.isnan(forecast)
    complete = ~np.any(held & np.isnan(actual), axis=0)
    total = np.where(held, np.nan_to_num(actual), 0.0).sum(axis=0)
    return np.where(complete & held.any(axis=0), total, np.nan)


def alerts(week: dict[str, float | int | None]) -> list[str]:
    """What is out of line in a week's portfolio measures (`Sums.measures`)."""
    out = []
    coverage, bias = week.get("coverage"), week.get("bias")
    if coverage is not None and not COVERAGE_RANGE[0] <= coverage <= COVERAGE_RANGE[1]:
        out.append(f"portfolio P10-P90 coverage {coverage:.1%} is outside "
                   f"{COVERAGE_RANGE[0]:.0%}-{COVERAGE_RANGE[1]:.0%}")
    if bias is not None and abs(bias) > BIAS_LIMIT:
        out.append(f"portfolio bias {bias:+.1%} is past +-{BIAS_LIMIT:.0%}")
    return out
