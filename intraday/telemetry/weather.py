"""Weather in, as it really comes: observed outdoor temperatures and issued
temperature forecasts, per location, from the user's provider.

A batch is checked as a whole: every bad row is named with its reason and
nothing is written, or the whole batch goes in (one insert). A row sent
again replaces its earlier copy (the weather table's key is location, kind,
timestamp and issue time), so a retried batch stores nothing twice.

- An observation is `location, timestamp, outdoor_temp_c`: known from its
  own timestamp on (`issued_at` = `timestamp`).
- A forecast is `location, issued_at, timestamp, outdoor_temp_c`: a forecast
  for T issued at I is used only by forecasts that start after I.

A location is a zone name (as the devices' `location`) or `latitude` and
`longitude`, which name their 0.1-degree grid cell (`47.4N8.5E`), as a
device's coordinates do. Temperatures may come hourly or every quarter-hour
(times on a quarter-hour); readers interpolate between values up to three
hours apart (`intraday.forecasting.temperature.fill_gaps`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from intraday.telemetry.registry import LOCATION, Refused, RowError, grid_location

KINDS = ("observed", "forecast")
TEMPERATURE = ("outdoor_temp_c", "outdoor_temp")  # the second: the backtest files' name
MIN_C, MAX_C = -60.0, 60.0
FUTURE_TOLERANCE = timedelta(minutes=5)
MAX_LEAD = timedelta(days=16)  # the longest forecast a provider issues
MAX_BEFORE_ISSUE = timedelta(days=1)  # a run may repeat the hours just before its issue time
MAX_ROWS = 2_000_000
MAX_ERRORS = 50
COLUMNS = ("location", "latitude", "longitude", "timestamp", "issued_at", *TEMPERATURE, "kind")


def _times(col: pd.Series) -> pd.Series:
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        return pd.Series(col.dt.tz_convert("UTC"))
    if pd.api.types.is_datetime64_dtype(col):
        return pd.Series(col.dt.tz_localize("UTC"))
    text = col.astype("string").str.strip()
    return pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")


def _numbers(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_bool_dtype(col):
        return np.full(len(col), np.nan)
    return pd.to_numeric(col.astype("string").str.strip(), errors="coerce").to_numpy(np.float64,
                                                                                     na_value=np.nan)


def parse_weather(df: pd.DataFrame, kind: str, now: datetime | None = None) -> pd.DataFrame:
    """The rows of a weather batch in the weather table's columns
    (location, kind, timestamp, issued_at, outdoor_temp_c), identical
    copies dropped; `Refused` names every bad row (1-based)."""
    if kind not in KINDS:
        raise Refused(f"kind {kind!r}: observed or forecast", [])
    now = now or datetime.now(UTC)
    if df.empty:
        raise Refused("no rows in the batch", [])
    if len(df) > MAX_ROWS:
        raise Refused(f"{len(df):,} rows in one batch; send at most {MAX_ROWS:,}", [])
    cols = [str(c) for c in df.columns]
    unknown = [c for c in cols if c not in COLUMNS]
    if unknown:
        raise Refused(f"unknown column(s) {', '.join(unknown)}; weather rows have location (or latitude "
                      "and longitude), timestamp, outdoor_temp_c"
                      + (" and issued_at" if kind == "forecast" else ""), [])
    temp_col = next((c for c in TEMPERATURE if c in cols), None)
    need = ["timestamp"] + (["issued_at"] if kind == "forecast" else [])
    missing = [c for c in need if c not in cols] + ([] if temp_col else ["outdoor_temp_c"])
    if "location" not in cols and not {"latitude", "longitude"} <= set(cols):
        missing.append("location (or latitude and longitude)")
    if missing:
        raise Refused(f"missing column(s) {', '.join(missing)}", [])
    if "kind" in cols and not (df["kind"].astype(str) == kind).all():
        raise Refused(f"rows of another kind than {kind!r} in the batch (send observations and "
                      "forecasts as batches of their own)", [])

    n = len(df)
    problems: list[list[str]] = [[] for _ in range(n)]

    def flag(mask: np.ndarray, reason: str | Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask):
            problems[i].append(reason(int(i)) if callable(reason) else reason)

    location = np.full(n, "", dtype=object)
    if "location" in cols:
        text = df["location"].astype("string").fillna("").str.strip().to_numpy(dtype=object)
        location[:] = text
    if {"latitude", "longitude"} <= set(cols):
        lat, lon = _numbers(df["latitude"]), _numbers(df["longitude"])
        has = ~np.isnan(lat) & ~np.isnan(lon)
        bad = has & ((np.abs(lat) > 90) | (np.abs(lon) > 180))
        flag(bad, "latitude or longitude out of range")
        use = has & ~bad & (location == "")
        location[use] = [grid_location(a, b) for a, b in zip(lat[use], lon[use], strict=True)]
    empty = location == ""
    flag(empty, "no location (a zone name, or latitude and longitude)")
    flag(~empty & ~np.array([bool(LOCATION.match(x)) for x in location]),
         lambda i: f"location {str(location[i])[:80]!r} is not 1-64 characters of letters, digits, '_.:,+-'")

    ts = _times(df["timestamp"])
    bad_ts = ts.isna().to_numpy()
    flag(bad_ts, "timestamp is missing or not an ISO 8601 time")
    off_grid = ~bad_ts & (ts != ts.dt.floor("15min")).to_numpy()
    flag(off_grid, "timestamp is not on a quarter-hour (hh:00, :15, :30, :45); average finer values first")
    temp = _numbers(df[temp_col])
    flag(np.isnan(temp), f"{temp_col} is missing or not a number")
    flag(~np.isnan(temp) & ((temp < MIN_C) | (temp > MAX_C)),
         lambda i: f"{temp_col} {temp[i]:g} is outside {MIN_C:g}..{MAX_C:g} degC")
    latest = pd.Timestamp(now + FUTURE_TOLERANCE)
    if kind == "observed":
        issued = ts
        flag(~bad_ts & (ts > latest).to_numpy(), "an observation from the future")
    else:
        issued = _times(df["issued_at"])
        bad_issue = issued.isna().to_numpy()
        flag(bad_issue, "issued_at is missing or not an ISO 8601 time")
        ok = ~bad_issue & ~bad_ts
        flag(ok & (issued > latest).to_numpy(), "issued_at is in the future")
        lead = (ts - issued).to_numpy()
        flag(ok & (lead > np.timedelta64(MAX_LEAD)),
             f"timestamp more than {MAX_LEAD.days} days after issued_at")
        flag(ok & (lead < -np.timedelta64(MAX_BEFORE_ISSUE)), "timestamp more than a day before issued_at")

    frame = pd.DataFrame({
        "location": location, "kind": kind,
        "timestamp": ts.dt.floor("s"), "issued_at": issued.dt.floor("s"), "outdoor_temp_c": temp,
    })
    valid = np.array([not p for p in problems])
    key = ["location", "timestamp", "issued_at"]
    rows = frame[valid]
    repeated = rows.duplicated(key)  # a later row of a key seen before
    copy = rows.duplicated([*key, "outdoor_temp_c"])  # ... with the same temperature: dropped
    clash = np.zeros(n, bool)
    clash[rows.index[repeated & ~copy]] = True
    flag(clash, "same location and time as an earlier row, another temperature")
    errors = [RowError(i + 1, str(location[i]), p) for i in range(n) for p in problems[i]]
    if errors:
        raise Refused(f"{len(errors)} problem(s) in the weather batch, nothing written", errors)
    return rows[~copy.to_numpy()].reset_index(drop=True)


def records_frame(records: Any) -> pd.DataFrame:
    """A JSON list of weather objects as a DataFrame of what was sent."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise Refused("expected a list of objects", [])
    df = pd.DataFrame.from_records(records)
    return df.astype(object) if len(df) else df
