"""The peer library in the backtest: Nixtla's mlforecast with LightGBM.

Configured the way its documentation sets up sub-daily load data: lags over
the most recent hour and at the daily and weekly season, rolling means
of the lagged target, calendar features, recursive multi-step prediction,
and conformal prediction intervals (`PredictionIntervals`) whose 80 % level
gives P10/P90. Its `cross_validation(refit=False)` trains once on the data
before the first origin and forecasts each later origin from the history up
to it: the same split as the engine's.

mlforecast lags by rows, so each series is put on the panel's full grid
first and gaps are filled by linear interpolation (edges by the nearest
reading); scores are computed on real readings only. For the portfolio the
same setup runs on the total of all devices as one series
(`aggregate_forecasts`), the top-down alternative to summing devices.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from intraday.forecasting.features import Panel
from intraday.forecasting.types import QUANTILES

LEVEL = int(round((QUANTILES[2] - QUANTILES[0]) * 100))  # the 80 % interval: P10..P90
PORTFOLIO_ID = "portfolio"


def _frame(panel: Panel, end: int, aggregate: bool = False) -> pd.DataFrame:
    filled = pd.DataFrame(panel.power[:, :end].T).interpolate(limit_direction="both").to_numpy().T
    ids = panel.device_ids.astype(str)
    if aggregate:  # one series: the total of the (gap-filled) devices
        filled, ids = np.nansum(filled, axis=0, keepdims=True), np.array([PORTFOLIO_ID])
    n = filled.shape[1]
    return pd.DataFrame({
        "unique_id": np.repeat(ids, n),
        "ds": np.tile(pd.date_range(panel.start, periods=n, freq=panel.step).tz_localize(None), len(filled)),
        "y": filled.ravel(),
    }).dropna()


def rolling_forecasts(panel: Panel, origins: list[int], horizon: int) -> np.ndarray:
    """(4, devices, origins, horizon) P10/P50/P90 and mean (its point
    forecast: LightGBM's squared error) for forecasts starting at each grid
    index in `origins` (one day apart, ascending)."""
    return _cross_validation(_frame(panel, origins[-1] + horizon), panel, origins, horizon,
                             list(panel.device_ids.astype(str)))


def aggregate_forecasts(panel: Panel, origins: list[int], horizon: int) -> np.ndarray:
    """(4, origins, horizon): the same, on the total of all devices as one series."""
    frame = _frame(panel, origins[-1] + horizon, aggregate=True)
    return _cross_validation(frame, panel, origins, horizon, [PORTFOLIO_ID])[:, 0]


def _cross_validation(df: pd.DataFrame, panel: Panel, origins: list[int], horizon: int,
                      ids: list[str]) -> np.ndarray:
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean
    from mlforecast.utils import PredictionIntervals

    hour, day = panel.per_hour, panel.per_day
    if any(b - a != day for a, b in zip(origins, origins[1:], strict=False)):
        raise ValueError("the rolling origins must be one day apart")
    mlf = MLForecast(
        # LightGBM as mlforecast's guides use it: the library's defaults
        # (100 trees, learning rate 0.1, 31 leaves).
        models={"lgbm": lgb.LGBMRegressor(verbosity=-1)},
        freq=f"{panel.step_minutes}min",
        lags=[*range(1, hour + 1), day, 2 * day, 7 * day],
        lag_transforms={1: [RollingMean(window_size=hour), RollingMean(window_size=day)],
                        day: [RollingMean(window_size=7)]},
        date_features=["hour", "minute", "dayofweek"],
    )
    cv = mlf.cross_validation(
        df, n_windows=len(origins), h=horizon, step_size=day, refit=False,
        prediction_intervals=PredictionIntervals(n_windows=2, h=horizon), level=[LEVEL],
    )
    out = np.full((4, len(ids), len(origins), horizon), np.nan)
    row = {d: k for k, d in enumerate(ids)}
    first = pd.Timestamp(panel.timestamp(origins[0])).tz_localize(None)
    step = pd.Timedelta(panel.step)
    # A window's cutoff is the last interval before its forecast starts.
    o = ((cv["cutoff"] + step - first) / step).to_numpy().astype(np.int64) // day
    h = ((cv["ds"] - cv["cutoff"]) / step).to_numpy().astype(np.int64) - 1
    d = cv["unique_id"].map(row).to_numpy()
    for k, col in enumerate((f"lgbm-lo-{LEVEL}", "lgbm", f"lgbm-hi-{LEVEL}", "lgbm")):
        out[k, d, o, h] = cv[col].to_numpy()
    # Its conformal band is centred on the point forecast and may cross zero.
    out[:3] = np.sort(np.maximum(out[:3], 0.0), axis=0)
    return out
