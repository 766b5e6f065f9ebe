"""Seasonal quantile baseline: the forecast used when no trained model exists.

For each quarter-hour of the horizon, P10/P50/P90 are the empirical quantiles
of the same quarter-hour on the previous `days` days before `forecast_start`,
and the mean is their average.
Only data strictly before `forecast_start` is used, so beyond 24 h ahead the
lookback starts further back (a 36 h horizon uses days 2..days+1 for its
second day).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from intraday.errors import InsufficientHistory
from intraday.forecasting.types import QUANTILES, Forecast, TelemetryWindow
from intraday.timeutil import INTERVALS_PER_DAY, QUARTER_HOUR

MODEL_VERSION = "baseline"
MIN_SAMPLES = 3  # fewer same-quarter-hour observations than this: no honest band


def seasonal_quantiles(
    window: TelemetryWindow,
    forecast_start: datetime,
    horizon_intervals: int,
    days: int = 14,
) -> Forecast:
    offset = window.index_of(forecast_start)  # index of forecast_start in the window
    (p10, p50, p90, mean), counts = seasonal_quantile_matrix(
        window.values[None, :], offset, horizon_intervals, days)
    short = np.flatnonzero(counts[0] < MIN_SAMPLES)
    if short.size:
        raise InsufficientHistory(
            f"device {window.device_id!r}: {short.size} of {horizon_intervals} intervals have "
            f"fewer than {MIN_SAMPLES} observations of the same quarter-hour in the "
            f"{days} days before {forecast_start:%Y-%m-%dT%H:%MZ} "
            f"(window {window.start:%Y-%m-%dT%H:%MZ}..{window.end:%Y-%m-%dT%H:%MZ}, "
            f"{window.missing} gaps)"
        )
    # The data window this forecast drew on: the oldest lookback day to
    # forecast_start (or the window's end, if that comes first).
    oldest = (horizon_intervals - 1) // INTERVALS_PER_DAY + days
    first_used = max(offset - oldest * INTERVALS_PER_DAY, 0)
    return Forecast(
        device_id=window.device_id,
        forecast_start=forecast_start,
        model_version=MODEL_VERSION,
        p10=p10[0],
        p50=p50[0],
        p90=p90[0],
        mean=mean[0],
        data_window_start=window.start + first_used * QUARTER_HOUR,
        data_window_end=min(window.end, forecast_start),
    )


def seasonal_quantile_matrix(
    values: np.ndarray, offset: int, horizon_intervals: int, days: int = 14,
    per_day: int = INTERVALS_PER_DAY,
) -> tuple[np.ndarray, np.ndarray]:
    """For devices x intervals `values` (`per_day` intervals a day) and a
    forecast starting at column `offset`: the (4, devices, horizon) P10,
    P50, P90 and mean, and the number of samples behind each (NaN where
    there are none)."""
    k = np.arange(horizon_intervals)
    # The first lookback day whose same time of day lies before forecast_start.
    first_day = k // per_day + 1
    lags = first_day[:, None] + np.arange(days)[None, :]  # (horizon, days)
    idx = offset + k[:, None] - lags * per_day
    inside = (idx >= 0) & (idx < min(values.shape[1], offset))
    samples = np.where(inside, values[:, np.clip(idx, 0, values.shape[1] - 1)], np.nan)  # (D, H, days)
    counts = np.sum(~np.isnan(samples), axis=2)
    # Empirical quantiles (linear interpolation, as np.nanquantile) from one
    # sort: NaN sorts last, so the valid samples come first. Monotone in q,
    # so the band never crosses.
    ordered = np.sort(samples, axis=2)
    out = np.full((len(QUANTILES) + 1, *counts.shape), np.nan)
    last = np.maximum(counts - 1, 0)[..., None]
    for j, q in enumerate(QUANTILES):
        pos = q * last
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, last)
        a = np.take_along_axis(ordered, lo, axis=2)[..., 0]
        b = np.take_along_axis(ordered, hi, axis=2)[..., 0]
        out[j] = np.where(counts > 0, a + (pos[..., 0] - lo[..., 0]) * (b - a), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[-1] = np.where(counts > 0, np.nansum(samples, axis=2) / np.maximum(counts, 1), np.nan)
    return out, counts
