"""A user's own fleet in three files: devices, readings and weather, read,
checked and (for replays of historical data) moved in time, ready for the
registry, the ingest and the weather table (`intraday import`).

Shifting to now: the whole time axis moves by whole weeks, so weekdays and
the time of day stay what they were (a night tariff stays at night, a
Sunday stays a Sunday), by the fewest weeks that bring the data's end to
the current quarter-hour or past it. What then lies in the future is held
back: readings are not stored (the data ends at the current quarter-hour),
and observed temperatures after now are stored as a temperature forecast
issued at the current quarter-hour: a perfect forecast, which only a replay
can have, said so on the command line and in docs/getting-started.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from intraday.errors import InvalidRequest
from intraday.telemetry.ingest_files import CHUNK_ROWS, file_digest, read_chunks
from intraday.telemetry.weather import parse_weather
from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, to_utc

WEEK = timedelta(days=7)


@dataclass(frozen=True)
class Shift:
    """Move times by `by` (whole weeks); keep what lands before `until`."""

    by: timedelta
    until: datetime
    data_end: datetime  # the end of the data's last quarter-hour, before the shift

    @property
    def weeks(self) -> int:
        return self.by // WEEK

    def describe(self) -> str:
        return (f"data ending {self.data_end:%Y-%m-%d %H:%M} UTC moved {self.weeks} weeks "
                f"({self.by.days} days) to end at {self.until:%Y-%m-%d %H:%M} UTC")


def _timestamp_column(path: Path) -> pd.Series:
    if path.suffix.lower() == ".parquet":
        try:
            col = pq.read_table(path, columns=["timestamp"]).column(0).to_pandas()
        except (KeyError, ValueError) as e:
            raise InvalidRequest(f"{path}: no timestamp column ({e})") from None
    else:
        col = pd.concat(c["timestamp"] for c in read_chunks(path) if "timestamp" in c)
    ts = _utc(col)
    if ts.isna().all():
        raise InvalidRequest(f"{path}: no readable timestamps")
    return ts


def _utc(col: pd.Series) -> pd.Series:
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        return pd.Series(col.dt.tz_convert("UTC"))
    if pd.api.types.is_datetime64_dtype(col):
        return pd.Series(col.dt.tz_localize("UTC"))
    return pd.to_datetime(col.astype("string").str.strip(), utc=True, errors="coerce", format="ISO8601")


def plan_shift(readings: Path, now: datetime) -> Shift:
    """The whole weeks that move the readings' end to now or just past it."""
    end = floor_quarter_hour(_timestamp_column(readings).max().to_pydatetime()) + QUARTER_HOUR
    until = floor_quarter_hour(now)
    weeks = max(0, -(-(until - end) // WEEK))  # ceil
    return Shift(weeks * WEEK, until, end)


@dataclass(frozen=True)
class Chunk:
    batch_id: str
    digest: str
    frame: pd.DataFrame
    held_back: int  # rows in the future after the shift, not sent


def reading_chunks(path: Path, shift: Shift | None, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
    """The readings file in chunks, shifted; each chunk's batch id names the
    file, the shift and the cut, so importing the same file again (for the
    same cut) stores nothing new, and a later cut stores only what is new."""
    digest = file_digest(path)
    tag = f"{digest[:24]}" + (f":{shift.weeks}w:{shift.until:%Y%m%dT%H%MZ}" if shift else "")
    for n, df in enumerate(read_chunks(path, chunk_rows)):
        held = 0
        if shift is not None and "timestamp" in df:
            ts = _utc(df["timestamp"]) + shift.by
            keep = (ts < shift.until).to_numpy() | ts.isna().to_numpy()  # a bad time: ingest quarantines it
            held = int((~keep).sum())
            df = df.assign(timestamp=ts.where(ts.notna(), df["timestamp"]))[keep]
        chunk_digest = hashlib.sha256(f"{tag}:{chunk_rows}:{n}".encode()).hexdigest()
        yield Chunk(f"import:{tag}/{n:05d}", chunk_digest, df.reset_index(drop=True), held)


@dataclass(frozen=True)
class WeatherBatches:
    observed: pd.DataFrame | None
    forecast: pd.DataFrame | None
    replayed_as_forecast: int = 0  # observations after now, stored as a forecast issued now


def weather_batches(path: Path, shift: Shift | None, location: str | None, now: datetime) -> WeatherBatches:
    """A weather file as checked batches for the weather table. Rows with an
    `issued_at` are forecasts, rows without observations; without a
    `location` column every row is `location`'s."""
    frames = list(read_chunks(path))
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if df.empty:
        raise InvalidRequest(f"{path}: no weather rows")
    if "location" not in df and not {"latitude", "longitude"} <= set(df.columns):
        if not location:
            raise InvalidRequest(f"{path} has no location column: give --weather-location (the zone of "
                                 "the devices it is for)")
        df = df.assign(location=location)
    for col in ("timestamp", "issued_at"):
        if col in df and shift is not None:
            df[col] = _utc(df[col]) + shift.by
    if "issued_at" in df:
        issued = _utc(df["issued_at"]) if shift is None else df["issued_at"]
        is_forecast = issued.notna().to_numpy()
        if "kind" in df:
            is_forecast = (df["kind"].astype(str) == "forecast").to_numpy()
        observed, forecast = df[~is_forecast].drop(columns=["issued_at", "kind"], errors="ignore"), \
            df[is_forecast].drop(columns=["kind"], errors="ignore")
    else:
        observed, forecast = df.drop(columns=["kind"], errors="ignore"), df.iloc[0:0]
    replayed = 0
    if shift is not None and len(observed):
        ts = _utc(observed["timestamp"])
        future = (ts >= shift.until).to_numpy()
        if future.any():
            replay = observed[future].assign(issued_at=shift.until)
            forecast = pd.concat([forecast, replay], ignore_index=True)
            observed, replayed = observed[~future], int(future.sum())
    at = max(to_utc(now), shift.until) if shift is not None else to_utc(now)
    return WeatherBatches(
        parse_weather(observed.reset_index(drop=True), "observed", at) if len(observed) else None,
        parse_weather(forecast.reset_index(drop=True), "forecast", at) if len(forecast) else None,
        replayed)
