"""The temperature a forecast reads: a series per location on the panel's
grid (serving; weather files without issue times), or the forecast runs as
they were issued (a backtest sees what was known then); and gaps in a
weather feed filled as far as they can honestly be."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEATHER_MAX_GAP = 12  # quarter-hours: values up to 3 h apart are interpolated (hourly and 3-hourly feeds)


WEATHER_HOLD = 3  # ... and the last one held for the rest of its hour


def fill_gaps(values: np.ndarray, max_gap: int = WEATHER_MAX_GAP, hold: int = WEATHER_HOLD) -> np.ndarray:
    """Along the last axis: NaN between two values at most `max_gap` steps
    apart filled linearly, and up to `hold` steps after a value before a
    longer gap (or the end) held.
    An hourly temperature becomes a quarter-hourly one; a longer gap stays
    a gap. Nothing is extrapolated before the first value."""
    out = np.array(values, dtype=np.float64)
    rows = out.reshape(-1, out.shape[-1])
    n = rows.shape[1]
    idx = np.arange(n)
    for row in rows:
        ok = ~np.isnan(row)
        if ok.all() or not ok.any():
            continue
        prev = np.maximum.accumulate(np.where(ok, idx, -1))
        nxt = np.minimum.accumulate(np.where(ok, idx, n)[::-1])[::-1]
        inside = ~ok & (prev >= 0) & (nxt < n) & (nxt - prev <= max_gap)
        if inside.any():
            row[inside] = np.interp(idx[inside], idx[ok], row[ok])
        held = ~ok & ~inside & (prev >= 0) & (idx - prev <= hold)
        row[held] = row[prev[held]]
    return out


class TemperatureSource:
    """Outdoor temperature forecasts as known at a forecast's start."""

    def forecast(self, device: np.ndarray, origin: np.ndarray, target: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class TemperatureSeries(TemperatureSource):
    """One temperature series per location on the panel's grid, taken as
    the forecast whatever the origin: for serving (observations before now,
    the latest issued forecast after) and for weather files without issue
    times. `location[d]` is device d's row in `values` (-1: none)."""

    location: np.ndarray
    values: np.ndarray

    def forecast(self, device: np.ndarray, origin: np.ndarray, target: np.ndarray) -> np.ndarray:
        loc = self.location[device]
        ok = (loc >= 0) & (target >= 0) & (target < self.values.shape[1])
        out = self.values[np.maximum(loc, 0), np.clip(target, 0, self.values.shape[1] - 1)]
        return np.where(ok, out, np.nan)


@dataclass(frozen=True)
class IssuedForecasts(TemperatureSource):
    """Forecast runs per location: `values[l, r, k]` is run r's temperature
    for grid index `runs[r] + k`. A row reads the latest run issued at or
    before its origin, so a backtest sees what was known then."""

    location: np.ndarray
    runs: np.ndarray  # grid index of each run's issue time, ascending
    values: np.ndarray  # (locations, runs, lead intervals)

    def forecast(self, device: np.ndarray, origin: np.ndarray, target: np.ndarray) -> np.ndarray:
        r = np.searchsorted(self.runs, origin, side="right") - 1
        lead = target - self.runs[np.maximum(r, 0)]
        loc = self.location[device]
        ok = (r >= 0) & (loc >= 0) & (lead >= 0) & (lead < self.values.shape[2])
        out = self.values[np.maximum(loc, 0), np.maximum(r, 0), np.clip(lead, 0, self.values.shape[2] - 1)]
        return np.where(ok, out, np.nan)
