"""Rolling recalibration of the bands on recent out-of-sample days.

A model's band is calibrated once, on the week before its training data
end (`model.py`, `portfolio.py`). The days that follow are not that week:
the weather regime moves, and a portfolio's error is dominated by a few
day-level swings that one week rarely shows. So the band is rescaled, at
each forecast start, by what the model's own forecasts did on the most
recent `WINDOW_DAYS` days whose actuals are all in: split-conformal
prediction on a rolling window (the scores of days the model had not
seen, never the day being forecast).

The score of a forecast against its actual is the distance past the
median in units of its band's half-width, as in the first calibration:
`(y - P50) / (P90 - P50)` above and `(P50 - y) / (P50 - P10)` below. The
factor for a tail is the window's conformal 90 % quantile of that score:
1 when the band covered as it should, above 1 when the actuals went
beyond it more often. It is kept per 6-hour block of the horizon, at the
device level and, for totals, per portfolio size class (a 3-device total
and a 3,000-device total fail differently).

Scores are kept as histograms on a fixed logarithmic grid, one per day,
so a window is a sum of days and a day's record is a few hundred numbers
whatever the fleet's size. The model carries the days of its own
calibration span as the window's start (`Window.seed`), stored with its
artifact, and the backtest appends each origin's day once its actuals are
in, exactly as a service scoring its published forecasts would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Multipliers of the band's half-width a score is counted at (scores are
# the same unit): 0.05 to 20 on a log grid, 3.3 % apart.
GRID = np.geomspace(0.05, 20.0, 183)
LEVEL = 0.9  # each tail's share inside: P10 and P90
WINDOW_DAYS = 7  # a week: every weekday once, and the newest regime
MIN_SCORES = 50  # scores in a block below which its factor stays 1
# A factor is kept within these: one odd fortnight never collapses a band
# to nothing nor inflates it without bound.
FACTOR_RANGE = (0.5, 4.0)
TAILS = ("p10", "p90")


def size_class(devices: int) -> int:
    """A portfolio's size class: the power of three nearest its size
    (1, 3, 9, 27, ...); totals of one class share their factors."""
    return int(3 ** round(np.log(max(devices, 1)) / np.log(3)))


def _histogram(scores: np.ndarray) -> list[int]:
    """Cumulative counts of `scores` at or below each GRID value, and the
    total last (scores below the grid count at its first point)."""
    s = np.asarray(scores, float)
    s = s[np.isfinite(s)]
    return [*np.searchsorted(np.sort(s), GRID, side="right").tolist(), int(len(s))]


def _scores(actual: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray,
            ) -> tuple[np.ndarray, np.ndarray]:
    eps = 1e-6
    up = (actual - p50) / np.maximum(p90 - p50, eps)
    down = (p50 - actual) / np.maximum(p50 - p10, eps)
    return down, up


def _block_histograms(actual: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray,
                      block: np.ndarray, blocks: int) -> list[list[list[int]]]:
    """[block][tail] histograms of the scores of cells with an actual."""
    ok = ~np.isnan(actual) & ~np.isnan(p50)
    down, up = _scores(actual, p10, p50, p90)
    block = np.broadcast_to(block, actual.shape)
    return [[_histogram(s[ok & (block == b)]) for s in (down, up)] for b in range(blocks)]


@dataclass
class Day:
    """One day's scores: `day` is the forecast start's date (ISO); `device`
    [block][tail] and `portfolio` {size class: [block][tail]} histograms."""

    day: str
    device: list[list[list[int]]] | None = None
    portfolio: dict[int, list[list[list[int]]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day, "device": self.device,
                "portfolio": {str(k): v for k, v in self.portfolio.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Day:
        return cls(d["day"], d.get("device"), {int(k): v for k, v in (d.get("portfolio") or {}).items()})


def device_day(day: str, actual: np.ndarray, p10: np.ndarray, p50: np.ndarray, p90: np.ndarray,
               step: np.ndarray, block_steps: int, blocks: int) -> Day:
    """The device scores of one day's forecasts (any shape; `step` the
    horizon step of each cell, broadcast against them)."""
    block = np.minimum(np.asarray(step) // block_steps, blocks - 1)
    return Day(day, device=_block_histograms(actual, p10, p50, p90, block, blocks))


def portfolio_day(day: str, devices: int, actual: np.ndarray, p10: np.ndarray, p50: np.ndarray,
                  p90: np.ndarray, block_steps: int, blocks: int) -> Day:
    """The scores of one day's totals of `devices` devices: arrays
    (forecasts, steps) or (steps,)."""
    steps = np.arange(np.shape(actual)[-1])
    block = np.minimum(steps // block_steps, blocks - 1)
    return Day(day, portfolio={size_class(devices): _block_histograms(
        np.atleast_2d(actual), np.atleast_2d(p10), np.atleast_2d(p50), np.atleast_2d(p90), block, blocks)})


def _factor(histogram: np.ndarray) -> float:
    """The conformal LEVEL quantile of the scores a cumulative histogram
    holds, interpolated on the grid, within FACTOR_RANGE; 1 without enough
    scores."""
    n = histogram[-1]
    if n < MIN_SCORES:
        return 1.0
    need = min(np.ceil((n + 1) * LEVEL), n)
    cum = histogram[:-1]
    k = int(np.searchsorted(cum, need, side="left"))
    if k == 0:
        value = GRID[0]
    elif k >= len(GRID):
        value = GRID[-1]
    else:  # linear in log between the grid points around the quantile
        w = (need - cum[k - 1]) / max(cum[k] - cum[k - 1], 1)
        value = float(np.exp(np.log(GRID[k - 1]) + w * (np.log(GRID[k]) - np.log(GRID[k - 1]))))
    return float(np.clip(value, *FACTOR_RANGE))


@dataclass
class Factors:
    """Per block, the multipliers of each tail's half-width (P10 below the
    median, P90 above it): `device` (blocks, 2), `portfolio` {size class:
    (blocks, 2)}; `days` the window's days; `ones` for a block not known."""

    device: np.ndarray | None
    portfolio: dict[int, np.ndarray]
    days: list[str]

    def device_tails(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.device is None:
            one = np.ones(np.shape(block))
            return one, one
        b = np.minimum(block, len(self.device) - 1)
        return self.device[b, 0], self.device[b, 1]

    def portfolio_tails(self, devices: int) -> np.ndarray | None:
        """(blocks, 2) for a total of `devices`, None if its size class was
        not scored in the window."""
        return self.portfolio.get(size_class(devices))

    def summary(self) -> dict[str, Any]:
        return {"days": self.days,
                "device": None if self.device is None else np.round(self.device, 3).tolist(),
                "portfolio": {str(k): np.round(v, 3).tolist() for k, v in self.portfolio.items()}}


NO_FACTORS = Factors(None, {}, [])


@dataclass
class Window:
    """The scored days a band is recalibrated on, oldest first."""

    days: list[Day] = field(default_factory=list)

    def add(self, day: Day) -> None:
        """Merge `day` into the window (a day already there gains its scores)."""
        for d in self.days:
            if d.day == day.day:
                d.device = _sum(d.device, day.device)
                for k, v in day.portfolio.items():
                    d.portfolio[k] = _sum(d.portfolio.get(k), v)
                return
        self.days.append(day)
        self.days.sort(key=lambda d: d.day)

    def factors(self, before: str | None = None, days: int | None = None) -> Factors:
        """The factors from the last `days` (WINDOW_DAYS) scored days before
        the date `before` (up to the newest without it)."""
        chosen = [d for d in self.days if before is None or d.day < before][-(days or WINDOW_DAYS):]
        device = None
        portfolio: dict[int, list[Any]] = {}
        for d in chosen:
            device = _sum(device, d.device)
            for k, v in d.portfolio.items():
                portfolio[k] = _sum(portfolio.get(k), v)
        return Factors(
            None if device is None else _factors_of(device),
            {k: _factors_of(v) for k, v in portfolio.items()},
            [d.day for d in chosen])

    def to_dict(self) -> dict[str, Any]:
        return {"grid": [float(GRID[0]), float(GRID[-1]), len(GRID)],
                "days": [d.to_dict() for d in self.days]}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Window:
        if not d:
            return cls()
        if d.get("grid") != [float(GRID[0]), float(GRID[-1]), len(GRID)]:
            return cls()  # scores on another grid cannot be merged; start afresh
        return cls([Day.from_dict(x) for x in d["days"]])


def _sum(a: Any, b: Any) -> Any:
    """Histograms (nested lists) added cell by cell; None is none yet."""
    if a is None:
        return None if b is None else np.asarray(b).tolist()
    if b is None:
        return a
    return (np.asarray(a) + np.asarray(b)).tolist()


def _factors_of(histograms: Any) -> np.ndarray:
    h = np.asarray(histograms)  # (blocks, tails, grid + 1)
    return np.array([[_factor(h[b, t]) for t in range(h.shape[1])] for b in range(h.shape[0])])


def widen(p10: np.ndarray, p50: np.ndarray, p90: np.ndarray, lo: np.ndarray, hi: np.ndarray,
          ) -> tuple[np.ndarray, np.ndarray]:
    """P10 and P90 with their distances from P50 scaled by `lo` and `hi`
    (broadcast), P10 kept at or above zero."""
    return np.maximum(p50 - lo * (p50 - p10), 0.0), p50 + hi * (p90 - p50)


# -- published forecasts: the service's side of the rolling window ----------

def used(factors: Factors, devices: int, device_blocks: int, portfolio_blocks: int,
         block_steps: int, trained_to: str) -> dict[str, Any]:
    """What a fleet forecast records of the factors its bands were scaled by
    (its devices' and its total's), so its scores can be taken on the bands
    before scaling once its readings are in (`published_day`); and the end
    of the model's training data (a forecast before it is in sample)."""
    total = factors.portfolio_tails(devices)
    return {"days": list(factors.days), "block_steps": block_steps, "trained_to": trained_to,
            "device": None if factors.device is None else np.asarray(factors.device).tolist(),
            "device_blocks": device_blocks,
            "portfolio": None if total is None else np.asarray(total).tolist(),
            "portfolio_blocks": portfolio_blocks}


def _unscaled(p10: np.ndarray, p50: np.ndarray, p90: np.ndarray, tails: Any, blocks: int,
              block_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """P10 and P90 with the scaling by `tails` (blocks, 2) undone (the
    inverse of `widen`; where widen clipped P10 at zero, the band's lower
    half is taken as it was published, scaled back)."""
    if tails is None:
        return p10, p90
    steps = np.arange(np.shape(p50)[-1])
    f = np.asarray(tails)[np.minimum(steps // block_steps, min(blocks, len(tails)) - 1)]
    return p50 - (p50 - p10) / f[:, 0], p50 + (p90 - p50) / f[:, 1]


def published_day(day: str, record: dict[str, Any], actual: np.ndarray, p10: np.ndarray, p50: np.ndarray,
                  p90: np.ndarray, total: np.ndarray | None = None,
                  totals: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, devices: int = 0) -> Day:
    """The scores of a published fleet forecast against its readings, as a
    window's day: its devices' (devices, steps) and, with `total`, its
    total's, each on its band before the recorded scaling (`used`), as the
    backtest scores an origin's forecasts."""
    steps = np.arange(np.shape(p50)[-1])
    b10, b90 = _unscaled(p10, p50, p90, record.get("device"), record["device_blocks"], record["block_steps"])
    out = device_day(day, actual, b10, p50, b90, steps, record["block_steps"], record["device_blocks"])
    if total is not None and totals is not None:
        q10, q50, q90 = totals
        t10, t90 = _unscaled(q10, q50, q90, record.get("portfolio"), record["portfolio_blocks"],
                             record["block_steps"])
        out.portfolio = portfolio_day(day, devices, total, t10, q50, t90, record["block_steps"],
                                      record["portfolio_blocks"]).portfolio
    return out
