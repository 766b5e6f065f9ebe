"""Rolling-origin backtest of the engine against baselines and a peer library.

One forecast per device at `issue_time` on each of the last `origins` days
whose whole horizon lies inside the data. Every method is scored on the same
(device, origin, interval) cells: those with a real reading for which every
method produced a value.

- **engine**: trained once on the data before the first origin; at each
  origin its features read only data before that origin.
- **seasonal_naive_day** / **seasonal_naive_week**: the same quarter-hour on
  the latest day (week) before the origin. Point forecasts, no band.
- **seasonal_quantiles**: the fallback the service uses when no trained
  model exists (quantiles of the same quarter-hour over the last 14 days).
- **mlforecast**: the peer library (see `peer.py`), trained once before the
  first origin like the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from intraday.config import Settings
from intraday.errors import InvalidRequest
from intraday.forecasting import baseline, fallback, recalibration
from intraday.forecasting.backtest_report import (
    allocated,
    backtest_report_of,
    origin_days,
    portfolio_forecasts,
    portfolio_report,
    recalibration_report,
    rescaled,
    rolling_factors,
)
from intraday.forecasting.features import (
    SERVING_STEP_MINUTES,
    STEPS_MINUTES,
    Panel,
    Rows,
    drop_stuck,
    stuck_min_run,
)
from intraday.forecasting.model import QuantileModel, TrainingConfig, device_locations, fit
from intraday.forecasting.temperature import (
    WEATHER_HOLD,
    WEATHER_MAX_GAP,
    IssuedForecasts,
    TemperatureSeries,
    TemperatureSource,
    fill_gaps,
)
from intraday.timeutil import isoformat_z

if TYPE_CHECKING:
    from intraday.forecasting.types import FleetWindow

REQUIRED = ("device_id", "timestamp", "power")
OPTIONAL = ("heating_electricity", "dhw_electricity", "outdoor_temp")
METHODS = ("engine", "seasonal_naive_day", "seasonal_naive_week", "seasonal_quantiles", "mlforecast")
PORTFOLIO_METHODS = (*METHODS, "mlforecast_aggregate")
CUBE_ROWS = ("p10", "p50", "p90", "mean")

Progress = Callable[[str], None]


@dataclass
class BacktestData:
    panel: Panel
    temperature: TemperatureSource | None
    readings: int
    resampled_from: str | None
    stuck_dropped: int
    duplicates_dropped: int = 0
    # The readings as given (after averaging), which forecasts are scored
    # against; the panel's power has stuck-sensor runs removed for features
    # and training. None: the panel's power.
    observed: np.ndarray | None = None

    @property
    def actual(self) -> np.ndarray:
        return self.panel.power if self.observed is None else self.observed


# -- input --------------------------------------------------------------------

def _read(path: Path, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    if not path.exists():
        raise InvalidRequest(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            names = [c for c in pq.read_schema(path).names if columns is None or c in columns]
            frame: pd.DataFrame = pq.read_table(path, columns=names).to_pandas()
            return frame
        if path.suffix.lower() in (".csv", ".gz"):
            return pd.read_csv(path, usecols=lambda c: columns is None or c in columns)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise InvalidRequest(f"{path}: cannot read it ({e})") from e
    raise InvalidRequest(f"{path}: unsupported file type {path.suffix!r} (CSV or Parquet)")


def _utc(values: pd.Series, path: Path, column: str) -> pd.Series:
    try:
        t = pd.to_datetime(values, utc=True, format="ISO8601")
    except (ValueError, TypeError) as e:
        raise InvalidRequest(f"{path}: column {column!r} has values that are not timestamps ({e})") from e
    if t.isna().any():
        raise InvalidRequest(f"{path}: column {column!r} has {int(t.isna().sum())} empty timestamps")
    return t


def load_data(path: Path, devices: Path | None = None, weather: Path | None = None,
              freq: str | None = None) -> BacktestData:
    """Readings as a panel on a grid of `freq` (a step that divides an hour:
    5, 10, 15, 20, 30 or 60 min). Without `freq` the grid is the data's own
    step when it is one of those and at least a quarter-hour, else the
    quarter-hour. Finer readings are averaged to the step; coarser data,
    conflicting duplicate rows, negative or non-numeric power are errors."""
    step = _step_minutes(freq) if freq is not None else None
    df = _read(path, REQUIRED + OPTIONAL)
    missing = [c for c in REQUIRED if c not in df]
    if missing:
        raise InvalidRequest(f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
    if df.empty:
        raise InvalidRequest(f"{path}: no rows")
    df["timestamp"] = _utc(df["timestamp"], path, "timestamp")
    df["device_id"] = df["device_id"].astype(str)
    for c in ("power", "outdoor_temp"):
        if c in df:
            raw = df[c]
            df[c] = pd.to_numeric(raw, errors="coerce")
            bad = df[c].isna() & raw.notna()
            if bad.any():
                raise InvalidRequest(f"{path}: {int(bad.sum())} non-numeric {c!r} values, "
                                     f"e.g. {raw[bad].iloc[0]!r}")
    if (df["power"] < 0).any():
        raise InvalidRequest(f"{path}: {int((df['power'] < 0).sum())} negative power readings "
                             "(a heat pump draws power, it does not feed in)")
    df, duplicates = _without_duplicates(df, path)
    df = df.sort_values(["device_id", "timestamp"], kind="stable")
    gaps = df.groupby("device_id", sort=False)["timestamp"].diff().dropna()
    if gaps.empty:
        raise InvalidRequest(f"{path}: every device has a single reading; nothing to forecast from")
    resolution = pd.Timedelta(gaps.median())
    step = step or _inferred_step(resolution, path)
    grid = pd.Timedelta(minutes=step)
    if resolution > grid:
        own = resolution / pd.Timedelta(minutes=1)
        hint = (f"use --freq {own:g}min" if own in STEPS_MINUTES
                else "hourly data is the coarsest the engine forecasts")
        raise InvalidRequest(f"{path}: readings are {_minutes(resolution)} apart (median), coarser than "
                             f"the {step}-min grid asked for; averaging cannot make finer data ({hint})")
    df["timestamp"] = df["timestamp"].dt.floor(grid)
    resampled = None
    if resolution < grid or df.duplicated(["device_id", "timestamp"]).any():
        resampled = _minutes(resolution)
        df = df.groupby(["device_id", "timestamp"], sort=True, as_index=False).mean(numeric_only=True)
    df = df.dropna(subset=["power"])
    if df.empty:
        raise InvalidRequest(f"{path}: no power readings")

    ids, dev = np.unique(df["device_id"].to_numpy(), return_inverse=True)
    start = df["timestamp"].min()
    i = ((df["timestamp"] - start) / grid).to_numpy().astype(np.int64)
    n = int(i.max()) + 1
    power = np.full((len(ids), n), np.nan)
    power[dev, i] = df["power"].to_numpy()
    observed = power
    power, stuck = drop_stuck(power, stuck_min_run(step))
    temp = None
    if "outdoor_temp" in df:
        temp = np.full((len(ids), n), np.nan)
        temp[dev, i] = df["outdoor_temp"].to_numpy()
    attributes = _attributes(devices, ids) if devices else None
    panel = Panel(ids, start.to_pydatetime(), power, temp, attributes, step_minutes=step)
    temperature = load_weather(weather, panel) if weather else None
    return BacktestData(panel, temperature, len(df), resampled, stuck, duplicates, observed)


def _step_minutes(freq: str) -> int:
    try:
        step = pd.Timedelta(freq)
    except ValueError as e:
        raise InvalidRequest(f"--freq {freq!r}: not a duration (e.g. 15min, 30min, 1h)") from e
    minutes = step / pd.Timedelta(minutes=1)
    if minutes not in STEPS_MINUTES:
        raise InvalidRequest(f"--freq {freq}: the step must divide an hour (and so a day): "
                             f"{', '.join(map(str, STEPS_MINUTES))} min")
    return int(minutes)


def _inferred_step(resolution: pd.Timedelta, path: Path) -> int:
    """The grid for data `resolution` apart: its own step from a
    quarter-hour up, the quarter-hour (the serving grid) for finer data."""
    minutes = resolution / pd.Timedelta(minutes=1)
    if minutes <= SERVING_STEP_MINUTES:
        return SERVING_STEP_MINUTES
    if minutes in STEPS_MINUTES:
        return int(minutes)
    raise InvalidRequest(f"{path}: readings are {_minutes(resolution)} apart (median); the engine takes "
                         f"steps that divide an hour ({', '.join(map(str, STEPS_MINUTES))} min): "
                         "hourly data is the coarsest it forecasts")


def _minutes(t: pd.Timedelta) -> str:
    minutes = t / pd.Timedelta(minutes=1)
    return f"{minutes:g} min" if minutes < 120 else f"{minutes / 60:g} h"


def _without_duplicates(df: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, int]:
    """Exact repeats of a reading (a message delivered twice) dropped and
    counted; readings that share a (device_id, timestamp) but differ are
    refused: which one is true cannot be told."""
    key = ["device_id", "timestamp"]
    repeated = df.duplicated(key, keep=False)
    if not repeated.any():
        return df, 0
    distinct = df[repeated].drop_duplicates()
    conflict = distinct[distinct.duplicated(key, keep=False)].sort_values(key, kind="stable")
    if len(conflict):
        examples = "; ".join(
            f"{g['device_id'].iloc[0]} at {isoformat_z(g['timestamp'].iloc[0])}: power "
            + " vs ".join(f"{p:g}" for p in g["power"])
            for _, g in list(conflict.groupby(key, sort=False))[:3])
        raise InvalidRequest(f"{path}: {conflict[key].drop_duplicates().shape[0]} (device_id, timestamp) "
                             f"keys have readings that differ, e.g. {examples}; keep one reading per key")
    out = df.drop_duplicates()
    return out, len(df) - len(out)


def _attributes(path: Path, ids: np.ndarray) -> pd.DataFrame:
    attrs = _read(path)
    if "device_id" not in attrs:
        raise InvalidRequest(f"{path}: missing column device_id")
    attrs["device_id"] = attrs["device_id"].astype(str)
    return attrs.drop_duplicates("device_id").set_index("device_id").reindex(ids).reset_index()


def load_weather(path: Path, panel: Panel) -> TemperatureSource:
    """Temperature forecasts: `timestamp, outdoor_temp`, optionally
    `location` (matched to the devices' location) and `issued_at` (each
    origin then reads the latest forecast issued at or before it; without
    it the values are taken as the forecast known at every origin)."""
    w = _read(path, ("timestamp", "outdoor_temp", "outdoor_temp_c", "location", "issued_at"))
    if "outdoor_temp_c" in w and "outdoor_temp" not in w:  # the import's (and weather table's) name
        w = w.rename(columns={"outdoor_temp_c": "outdoor_temp"})
    missing = [c for c in ("timestamp", "outdoor_temp") if c not in w]
    if missing:
        raise InvalidRequest(f"{path}: missing column(s) {', '.join(missing)}")
    w["timestamp"] = _utc(w["timestamp"], path, "timestamp")
    if "issued_at" in w:
        w["issued_at"] = _utc(w["issued_at"], path, "issued_at")
    w["outdoor_temp"] = pd.to_numeric(w["outdoor_temp"], errors="coerce")
    if "location" in w and (panel.attributes is None or "location" not in panel.attributes):
        raise InvalidRequest(f"{path} has a location column: pass --devices with each device's location")
    return temperature_source(w, panel)


def temperature_source(w: pd.DataFrame, panel: Panel) -> TemperatureSource:
    """A weather frame (timestamp, outdoor_temp, optional location and
    issued_at; UTC timestamps) on the panel's grid."""
    if "location" in w:
        w = w.assign(location=w["location"].astype(str))
        locations = sorted(w["location"].unique())
        known = {loc: k for k, loc in enumerate(locations)}
        where = (panel.attributes["location"] if panel.attributes is not None
                 else [None] * len(panel.device_ids))  # no attributes: no device has a location
        device_loc = np.array([known.get(str(x), -1) for x in where])
    else:
        w = w.assign(location="")
        locations, device_loc = [""], np.zeros(len(panel.device_ids), np.int64)
    grid = pd.Timedelta(panel.step)
    # Values finer than the grid are averaged to it, as the readings are.
    w = w.assign(timestamp=w["timestamp"].dt.floor(grid))
    keys = ["location", "timestamp"] + (["issued_at"] if "issued_at" in w else [])
    w = w.groupby(keys, as_index=False, sort=False)[["outdoor_temp"]].mean()
    loc = w["location"].map({x: k for k, x in enumerate(locations)}).to_numpy()
    i = ((w["timestamp"] - pd.Timestamp(panel.start)) / grid).to_numpy().astype(np.int64)
    if "issued_at" not in w:
        span = max(panel.intervals + 2 * panel.per_day, int(i.max(initial=0)) + 1)
        values = np.full((len(locations), span), np.nan)
        ok = (i >= 0) & (i < span)
        values[loc[ok], i[ok]] = w["outdoor_temp"].to_numpy()[ok]
        return TemperatureSeries(device_loc, fill_gaps(values, _steps(WEATHER_MAX_GAP, panel),
                                                       _steps(WEATHER_HOLD, panel)))
    r_idx = np.ceil(((w["issued_at"] - pd.Timestamp(panel.start)) / grid).to_numpy()).astype(np.int64)
    runs, run = np.unique(r_idx, return_inverse=True)
    lead = i - r_idx
    ok = lead >= 0
    values = np.full((len(locations), len(runs), int(lead.max(initial=0)) + 1), np.nan)
    values[loc[ok], run[ok], lead[ok]] = w["outdoor_temp"].to_numpy()[ok]
    return IssuedForecasts(device_loc, runs, fill_gaps(values, _steps(WEATHER_MAX_GAP, panel),
                                                       _steps(WEATHER_HOLD, panel)))


def _steps(quarter_hours: int, panel: Panel) -> int:
    """Quarter-hours as steps of the panel's grid."""
    return max(quarter_hours * 15 // panel.step_minutes, 0)


class TrainingSource(Protocol):
    """What `from_store` reads: the telemetry store here, or the telemetry
    service through its sidecar (workflows/training_activities.py)."""

    def devices(self) -> list[dict[str, Any]]: ...
    def fleet_window(self, start: datetime, end: datetime, device_ids: list[str]) -> FleetWindow: ...
    def weather_window(self, locations: list[str], start: datetime, end: datetime,
                       as_of: datetime) -> np.ndarray: ...
    def weather_forecasts(self, locations: list[str], start: datetime, end: datetime) -> pd.DataFrame: ...


def from_store(store: TrainingSource, start: datetime, end: datetime) -> BacktestData:
    """The training data as the telemetry store holds it: every registered
    device's quarter-hour power in [start, end), the observed temperature at
    its location, and the temperature forecasts issued in that span."""
    devices = pd.DataFrame(store.devices())
    if devices.empty:
        raise InvalidRequest("the telemetry store has no devices")
    ids = devices["device_id"].astype(str).to_numpy()
    fleet = store.fleet_window(start, end, list(ids))  # rows in `ids` order
    power, stuck = drop_stuck(fleet.values)
    locations = sorted(devices["location"].dropna().astype(str).unique())
    observed = store.weather_window(locations, fleet.start, fleet.end, fleet.end)
    loc = devices["location"].astype(str).map({x: k for k, x in enumerate(locations)}).to_numpy()
    panel = Panel(ids, fleet.start, power, observed[loc], devices)
    forecasts = store.weather_forecasts(locations, fleet.start, fleet.end)
    temperature = temperature_source(forecasts, panel) if len(forecasts) else None
    return BacktestData(panel, temperature, int((~np.isnan(power)).sum()), None, stuck, 0, fleet.values)


# -- the rolling origins ------------------------------------------------------

def origin_indices(panel: Panel, origins: int, horizon: int, issue_time: str) -> list[int]:
    """Grid indices of the last `origins` days' forecasts at `issue_time`
    (UTC) whose horizon ends inside the data."""
    try:
        hh, mm = (int(x) for x in issue_time.split(":"))
        offset = pd.Timedelta(hours=hh, minutes=mm)
    except ValueError as e:
        raise InvalidRequest(f"--issue-time {issue_time!r}: expected HH:MM (UTC)") from e
    if not (0 <= hh < 24 and 0 <= mm < 60 and mm % panel.step_minutes == 0):
        raise InvalidRequest(f"--issue-time {issue_time}: must be a time between 00:00 and 23:59 on the "
                             f"data's {panel.step_minutes}-min grid")
    step, day = pd.Timedelta(panel.step), panel.per_day
    end = pd.Timestamp(panel.timestamp(panel.intervals))
    last = (end - step * horizon).floor("D") + offset
    while last + step * horizon > end:
        last -= pd.Timedelta(days=1)
    idx = [panel.index_of((last - pd.Timedelta(days=k)).to_pydatetime()) for k in range(origins - 1, -1, -1)]
    need = 9 * day  # a week of history for the features and two days to train on before the first origin
    if idx[0] < need:
        raise InvalidRequest(f"{origins} origins at {issue_time} leave {max(idx[0], 0) / day:.1f} of "
                             f"{panel.intervals / day:.1f} days before the first origin; need at least "
                             f"{need / day:.0f} (use fewer --origins or more data)")
    return idx


def _truncated(panel: Panel, end: int) -> Panel:
    temp = panel.outdoor_temp[:, :end] if panel.outdoor_temp is not None else None
    return Panel(panel.device_ids, panel.start, panel.power[:, :end], temp, panel.attributes, panel.countries,
                 panel.step_minutes)


@dataclass
class BacktestResult:
    report: dict[str, Any]
    forecasts: pd.DataFrame
    cube: dict[str, np.ndarray]  # method -> (CUBE_ROWS, devices, origins, horizon)
    actual: np.ndarray  # (devices, origins, horizon)
    model: QuantileModel
    portfolio: pd.DataFrame  # the engine's total per origin and interval (--portfolio-out)
    totals: dict[str, np.ndarray]  # method -> (CUBE_ROWS, origins, horizon); "actual" -> (origins, horizon)


def run(data: BacktestData, *, horizon: int | None = None, origins: int = 14, issue_time: str = "10:00",
        config: TrainingConfig | None = None, peer: bool = True, progress: Progress | None = None,
        source: dict[str, Any] | None = None) -> BacktestResult:
    say = progress or (lambda _: None)
    panel = data.panel
    day = panel.per_day
    horizon = horizon or day
    config = config or TrainingConfig(horizon=horizon)
    idx = origin_indices(panel, origins, horizon, issue_time)
    D, n_origins, H = len(panel.device_ids), len(idx), horizon
    timings = {}

    say(f"training the engine on {D:,} devices, data before {isoformat_z(panel.timestamp(idx[0]))}")
    started = time.monotonic()
    model = fit(_truncated(panel, idx[0]), data.temperature, config, say)
    timings["engine_train_seconds"] = time.monotonic() - started

    grid = np.array(idx)
    rows = Rows.grid(np.repeat(np.arange(D), n_origins), np.tile(grid, D), H)
    started = time.monotonic()
    pred = model.predict_rows(panel, rows, data.temperature, factors=recalibration.NO_FACTORS)
    timings["engine_predict_seconds"] = time.monotonic() - started
    shape = (D, n_origins, H)
    target = rows.target.reshape(shape)
    dev = rows.device.reshape(shape)
    actual = data.actual[dev, target]
    # The first calibration's bands, then each origin's rescaled by the
    # days scored before it (as the service does with its live scores).
    first = np.stack([pred.p10, pred.p50, pred.p90, pred.mean]).reshape(4, *shape)
    days = origin_days(panel, idx)
    first_totals, _ = portfolio_forecasts({"engine": first}, actual, model, device_locations(panel))
    factors, _ = rolling_factors(model, first, actual, device_locations(panel), idx, H, days, first_totals)
    cube = {"engine": rescaled(first, factors, model.block_steps)}
    # A device the model cannot forecast at an origin gets the service's
    # fallback forecast (fallback.py), so the portfolio counts it.
    filled = fill_missing(cube["engine"], panel, idx, H)
    h = np.arange(H)
    naive = {"seasonal_naive_day": day * (1 + h // day), "seasonal_naive_week": np.full(H, 7 * day)}
    for name, back in naive.items():
        point = panel.power[dev, target - back[None, None, :]]
        cube[name] = np.stack([point, point, point, point])
    sq = np.empty((4, *shape))
    for k, o in enumerate(idx):
        sq[:, :, k, :] = baseline.seasonal_quantile_matrix(panel.power, o, H, per_day=day)[0]
    cube["seasonal_quantiles"] = sq
    if peer:
        say(f"mlforecast: training once before the first origin, then {n_origins} rolling windows")
        from intraday.forecasting.peer import aggregate_forecasts, rolling_forecasts

        started = time.monotonic()
        cube["mlforecast"] = rolling_forecasts(panel, idx, H)
        timings["mlforecast_seconds"] = time.monotonic() - started
        say("mlforecast on the portfolio's total as one series")
        started = time.monotonic()
        aggregate = aggregate_forecasts(panel, idx, H)
        timings["mlforecast_aggregate_seconds"] = time.monotonic() - started

    scored = ~np.isnan(actual)
    for c in cube.values():
        scored &= ~np.isnan(c).any(axis=0)
    totals, members = portfolio_forecasts(cube, actual, model, device_locations(panel),
                                          factors=[f.portfolio_tails(D) for f in factors])
    if peer:
        totals["mlforecast_aggregate"] = allocated(aggregate, panel, idx[0], members)
    report = backtest_report_of(data, model, cube, actual, scored, idx, H, issue_time, timings, source or {})
    report["portfolio"] = portfolio_report(totals, cube, actual, members, model, panel)
    report["fallback"] = filled
    report["recalibration"] = recalibration_report(first, cube["engine"], actual, first_totals["engine"],
                                                    totals, factors, days, D)
    def at(i: np.ndarray) -> pd.DatetimeIndex:
        return pd.Timestamp(panel.start) + pd.to_timedelta(i * panel.step_minutes, "min")

    origin = at(np.repeat(idx, H))
    forecasts = pd.DataFrame({
        "device_id": np.repeat(panel.device_ids.astype(str), n_origins * H),
        "origin": np.tile(origin, D),
        "timestamp": at(target.ravel()),
        **{name: cube["engine"][k].ravel() for k, name in enumerate(CUBE_ROWS)},
        "actual": actual.ravel(),
    })
    engine = totals["engine"]
    portfolio_frame = pd.DataFrame({
        "origin": origin,
        "timestamp": at(target[0].ravel()),
        **{name: engine[k].ravel() for k, name in enumerate(CUBE_ROWS)},
        "actual": totals["actual"].ravel(),
        "devices": members.sum(axis=0).ravel(),
    })[["origin", "timestamp", "mean", "p10", "p50", "p90", "actual", "devices"]]
    return BacktestResult(report, forecasts, cube, actual, model, portfolio_frame, totals)


# Days of readings before an origin a device's fallback reads: the
# service's telemetry window (INTRADAY_HISTORY_DAYS) by default.
FALLBACK_WINDOW_DAYS = Settings.model_fields["history_days"].default


def fill_missing(cube: np.ndarray, panel: Panel, idx: list[int], horizon: int) -> dict[str, Any]:
    """Fill, in place, each (device, origin) the model left without a
    forecast in `cube` (4, devices, origins, steps) as the service would:
    the device's own daily profile over the readings before the origin,
    else its peers' forecasts at that origin (fallback.py). Returns how
    many forecasts each way and how many are still missing."""
    counts = {"own_profile": 0, "peers": 0, "still_missing": 0}
    day, lookback = panel.per_day, FALLBACK_WINDOW_DAYS * panel.per_day
    t0 = pd.Timestamp(panel.start)
    start_of_day = int((t0 - t0.floor("D")) / pd.Timedelta(panel.step))
    rated = (pd.to_numeric(panel.attributes["rated_power_kw"], errors="coerce").to_numpy(float)
             if panel.attributes is not None and "rated_power_kw" in panel.attributes
             else np.full(len(panel.device_ids), np.nan))
    for k, o in enumerate(idx):
        missing = np.isnan(cube[:, :, k]).any(axis=(0, 2))
        if not missing.any():
            continue
        model_made = np.flatnonzero(~missing)
        for d in np.flatnonzero(missing):
            first = max(o - lookback, 0)
            table = fallback.own_profile(panel.power[d, first:o], (start_of_day + first) % day, horizon, day)
            kind = "own_profile"
            if table is None:
                table = fallback.from_peers(cube[:, model_made, k],
                                            fallback.rated_ratio(rated[d], rated[model_made]))
                kind = "peers"
            if table is None:
                counts["still_missing"] += 1
                continue
            cube[:, d, k] = table
            counts[kind] += 1
    return counts


