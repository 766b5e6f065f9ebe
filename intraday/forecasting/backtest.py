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
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from intraday.errors import InvalidRequest
from intraday.forecasting import baseline, metrics
from intraday.forecasting.features import (
    DAY,
    WEEK,
    IssuedForecasts,
    Panel,
    Rows,
    TemperatureSeries,
    TemperatureSource,
    drop_stuck,
)
from intraday.forecasting.model import QuantileModel, TrainingConfig, fit
from intraday.timeutil import isoformat_z

REPORT_SCHEMA = 1
FREQ = "15min"
REQUIRED = ("device_id", "timestamp", "power")
OPTIONAL = ("heating_electricity", "dhw_electricity", "outdoor_temp")
METHODS = ("engine", "seasonal_naive_day", "seasonal_naive_week", "seasonal_quantiles", "mlforecast")

Progress = Callable[[str], None]


@dataclass
class BacktestData:
    panel: Panel
    temperature: TemperatureSource | None
    readings: int
    resampled_from: str | None
    stuck_dropped: int


# -- input --------------------------------------------------------------------

def _read(path: Path, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    if not path.exists():
        raise InvalidRequest(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            names = [c for c in pq.read_schema(path).names if columns is None or c in columns]
            return pq.read_table(path, columns=names).to_pandas()
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
              freq: str = FREQ) -> BacktestData:
    """Readings as a quarter-hour panel. Finer readings are averaged to the
    quarter-hour; coarser data, duplicate (device_id, timestamp) rows,
    negative or non-numeric power are errors."""
    if pd.Timedelta(freq) != pd.Timedelta(FREQ):
        raise InvalidRequest(f"--freq {freq}: the engine forecasts quarter-hours; use --freq {FREQ}")
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
    dup = df.duplicated(["device_id", "timestamp"], keep=False)
    if dup.any():
        ex = df[dup].iloc[0]
        raise InvalidRequest(f"{path}: {int(dup.sum())} rows share a (device_id, timestamp), e.g. "
                             f"{ex.device_id} at {isoformat_z(ex.timestamp)}; remove duplicates first")
    df = df.sort_values(["device_id", "timestamp"], kind="stable")
    step = df.groupby("device_id", sort=False)["timestamp"].diff().dropna()
    if step.empty:
        raise InvalidRequest(f"{path}: every device has a single reading; nothing to forecast from")
    resolution = step.median()
    quarter = pd.Timedelta(FREQ)
    if resolution > quarter:
        raise InvalidRequest(f"{path}: readings are {resolution} apart (median), coarser than {FREQ}; "
                             "the engine needs quarter-hour data")
    df["timestamp"] = df["timestamp"].dt.floor(FREQ)
    resampled = None
    if resolution < quarter or df.duplicated(["device_id", "timestamp"]).any():
        resampled = str(resolution)
        df = df.groupby(["device_id", "timestamp"], sort=True, as_index=False).mean(numeric_only=True)
    df = df.dropna(subset=["power"])
    if df.empty:
        raise InvalidRequest(f"{path}: no power readings")

    ids, dev = np.unique(df["device_id"].to_numpy(), return_inverse=True)
    start = df["timestamp"].min()
    i = ((df["timestamp"] - start) / quarter).to_numpy().astype(np.int64)
    n = int(i.max()) + 1
    power = np.full((len(ids), n), np.nan)
    power[dev, i] = df["power"].to_numpy()
    power, stuck = drop_stuck(power)
    temp = None
    if "outdoor_temp" in df:
        temp = np.full((len(ids), n), np.nan)
        temp[dev, i] = df["outdoor_temp"].to_numpy()
    attributes = _attributes(devices, ids) if devices else None
    panel = Panel(ids, start.to_pydatetime(), power, temp, attributes)
    temperature = load_weather(weather, panel) if weather else None
    return BacktestData(panel, temperature, len(df), resampled, stuck)


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
    w = _read(path, ("timestamp", "outdoor_temp", "location", "issued_at"))
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
        device_loc = np.array([known.get(str(x), -1) for x in panel.attributes["location"]])
    else:
        w = w.assign(location="")
        locations, device_loc = [""], np.zeros(len(panel.device_ids), np.int64)
    loc = w["location"].map({x: k for k, x in enumerate(locations)}).to_numpy()
    quarter = pd.Timedelta(FREQ)
    i = ((w["timestamp"].dt.floor(FREQ) - pd.Timestamp(panel.start)) / quarter).to_numpy().astype(np.int64)
    if "issued_at" not in w:
        span = max(panel.intervals + 2 * DAY, int(i.max(initial=0)) + 1)
        values = np.full((len(locations), span), np.nan)
        ok = (i >= 0) & (i < span)
        values[loc[ok], i[ok]] = w["outdoor_temp"].to_numpy()[ok]
        return TemperatureSeries(device_loc, values)
    r_idx = np.ceil((w["issued_at"] - pd.Timestamp(panel.start)) / quarter).to_numpy().astype(np.int64)
    runs, run = np.unique(r_idx, return_inverse=True)
    lead = i - r_idx
    ok = lead >= 0
    values = np.full((len(locations), len(runs), int(lead.max(initial=0)) + 1), np.nan)
    values[loc[ok], run[ok], lead[ok]] = w["outdoor_temp"].to_numpy()[ok]
    return IssuedForecasts(device_loc, runs, values)


def from_store(store, start: datetime, end: datetime) -> BacktestData:
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
    return BacktestData(panel, temperature, int((~np.isnan(power)).sum()), None, stuck)


# -- the rolling origins ------------------------------------------------------

def origin_indices(panel: Panel, origins: int, horizon: int, issue_time: str) -> list[int]:
    """Grid indices of the last `origins` days' forecasts at `issue_time`
    (UTC) whose horizon ends inside the data."""
    try:
        hh, mm = (int(x) for x in issue_time.split(":"))
        offset = pd.Timedelta(hours=hh, minutes=mm)
    except ValueError as e:
        raise InvalidRequest(f"--issue-time {issue_time!r}: expected HH:MM (UTC)") from e
    if not (0 <= hh < 24 and mm in (0, 15, 30, 45)):
        raise InvalidRequest(f"--issue-time {issue_time}: must be a quarter-hour between 00:00 and 23:45")
    end = pd.Timestamp(panel.timestamp(panel.intervals))
    last = (end - pd.Timedelta(minutes=15) * horizon).floor("D") + offset
    while last + pd.Timedelta(minutes=15) * horizon > end:
        last -= pd.Timedelta(days=1)
    idx = [panel.index_of((last - pd.Timedelta(days=k)).to_pydatetime()) for k in range(origins - 1, -1, -1)]
    need = 2 * DAY  # the engine needs a few days to train on before the first origin
    if idx[0] < WEEK + need:
        raise InvalidRequest(f"{origins} origins at {issue_time} leave {max(idx[0], 0) / DAY:.1f} of "
                             f"{panel.intervals / DAY:.1f} days before the first origin; need at least "
                             f"{(WEEK + need) / DAY:.0f} (use fewer --origins or more data)")
    return idx


def _truncated(panel: Panel, end: int) -> Panel:
    temp = panel.outdoor_temp[:, :end] if panel.outdoor_temp is not None else None
    return Panel(panel.device_ids, panel.start, panel.power[:, :end], temp, panel.attributes)


@dataclass
class BacktestResult:
    report: dict
    forecasts: pd.DataFrame
    cube: dict[str, np.ndarray]  # method -> (3, devices, origins, horizon)
    actual: np.ndarray  # (devices, origins, horizon)
    model: QuantileModel


def run(data: BacktestData, *, horizon: int = DAY, origins: int = 14, issue_time: str = "10:00",
        config: TrainingConfig | None = None, peer: bool = True, progress: Progress | None = None,
        source: dict | None = None) -> BacktestResult:
    say = progress or (lambda _: None)
    panel = data.panel
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
    pred = model.predict_rows(panel, rows, data.temperature)
    timings["engine_predict_seconds"] = time.monotonic() - started
    shape = (D, n_origins, H)
    cube = {"engine": np.stack([pred.p10, pred.p50, pred.p90]).reshape(3, *shape)}
    target = rows.target.reshape(shape)
    dev = rows.device.reshape(shape)
    actual = panel.power[dev, target]
    h = np.arange(H)
    naive = {"seasonal_naive_day": DAY * (1 + h // DAY), "seasonal_naive_week": np.full(H, WEEK)}
    for name, back in naive.items():
        point = panel.power[dev, target - back[None, None, :]]
        cube[name] = np.stack([point, point, point])
    sq = np.empty((3, *shape))
    for k, o in enumerate(idx):
        sq[:, :, k, :] = baseline.seasonal_quantile_matrix(panel.power, o, H)[0]
    cube["seasonal_quantiles"] = sq
    if peer:
        say(f"mlforecast: training once before the first origin, then {n_origins} rolling windows")
        from intraday.forecasting.peer import rolling_forecasts

        started = time.monotonic()
        cube["mlforecast"] = rolling_forecasts(panel, idx, H)
        timings["mlforecast_seconds"] = time.monotonic() - started

    scored = ~np.isnan(actual)
    for c in cube.values():
        scored &= ~np.isnan(c).any(axis=0)
    report = _report(data, model, cube, actual, scored, idx, H, issue_time, timings, source or {})
    forecasts = pd.DataFrame({
        "device_id": np.repeat(panel.device_ids.astype(str), n_origins * H),
        "origin": pd.Timestamp(panel.start) + pd.to_timedelta(np.tile(np.repeat(idx, H), D) * 15, "min"),
        "timestamp": pd.Timestamp(panel.start) + pd.to_timedelta(target.ravel() * 15, "min"),
        "p10": cube["engine"][0].ravel(), "p50": cube["engine"][1].ravel(), "p90": cube["engine"][2].ravel(),
        "actual": actual.ravel(),
    })
    return BacktestResult(report, forecasts, cube, actual, model)


def _report(data, model, cube, actual, scored, idx, H, issue_time, timings, source) -> dict:
    panel = data.panel
    methods = {}
    for name, c in cube.items():
        per_device = {}
        for d, device in enumerate(panel.device_ids):
            m = scored[d]
            per_device[str(device)] = metrics.scores(actual[d][m], c[0, d][m], c[1, d][m], c[2, d][m])
        methods[name] = {
            "overall": metrics.scores(actual[scored], c[0][scored], c[1][scored], c[2][scored]),
            "per_device": per_device,
        }
    engine = methods["engine"]["overall"]["wape"]
    comparison = {
        f"engine_wape_vs_{name}": engine / m["overall"]["wape"] - 1.0
        for name, m in methods.items() if name != "engine"
    }
    return {
        "schema_version": REPORT_SCHEMA,
        "generated_at": isoformat_z(datetime.now(UTC)),
        "data": {
            **source,
            "devices": int(len(panel.device_ids)),
            "start": isoformat_z(panel.start),
            "end": isoformat_z(panel.timestamp(panel.intervals)),
            "freq": FREQ,
            "readings": int(data.readings),
            "resampled_from": data.resampled_from,
            "stuck_readings_dropped": int(data.stuck_dropped),
            "temperature_forecast": data.temperature is not None,
        },
        "setup": {
            "horizon_intervals": H,
            "issue_time_utc": issue_time,
            "origins": [isoformat_z(panel.timestamp(o)) for o in idx],
            "training": "each method is trained once on the data before the first origin; "
                        "at every origin, features use only data before that origin",
            "engine_model": model.manifest.get("training", {}),
        },
        "cells": {"total": int(actual.size), "scored": int(scored.sum()),
                  "no_actual": int(np.isnan(actual).sum())},
        "timings": timings,
        "methods": methods,
        "comparison": comparison,
    }
