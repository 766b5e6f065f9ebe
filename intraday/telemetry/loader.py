"""Load a generated fleet into the store, or write it to Parquet files.

Readings go through the same validated, idempotent ingest as any other data
(batch ids derived from the generation parameters, so running the same
generation twice stores nothing new); late readings arrive after the rest,
as they would in production.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from intraday.telemetry import fleet
from intraday.telemetry.ingest import DeviceRegistry, IngestReport, ingest_batch
from intraday.telemetry.store import DEVICE_COLUMNS, TelemetryStore
from intraday.timeutil import isoformat_z

Progress = Callable[[str], None]

OUT_SCHEMA = pa.schema([
    ("device_id", pa.string()),
    ("timestamp", pa.timestamp("ms", tz="UTC")),
    ("power", pa.float64()),
    ("heating_electricity", pa.float64()),
    ("dhw_electricity", pa.float64()),
    ("outdoor_temp", pa.float64()),
])


@dataclass
class GenerationSummary:
    devices: int = 0
    readings: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    weather_rows: int = 0
    seconds: float = 0.0
    ingest: IngestReport | None = None
    files: list[str] = field(default_factory=list)

    def add_faults(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.faults[k] = self.faults.get(k, 0) + v


def _progress_line(done: int, total: int, rows: int, started: float) -> str:
    elapsed = time.monotonic() - started
    eta = elapsed / done * (total - done) if done else 0.0
    return (f"  devices {done:>6}/{total}  readings {rows:>12,}  "
            f"{elapsed:6.1f} s elapsed, ~{eta:5.0f} s left")


def load_fleet(
    store: TelemetryStore, n_devices: int, start: datetime, end: datetime, seed: int,
    faults: fleet.FaultRates = fleet.FaultRates(), progress: Progress | None = None,
    cold_snap: fleet.ColdSnap | None = None,
) -> GenerationSummary:
    started = time.monotonic()
    summary = GenerationSummary()
    devices = fleet.fleet_devices(n_devices, seed)
    store.upsert_devices(devices[DEVICE_COLUMNS])
    weather = fleet.fleet_weather(start, end, seed)
    store.insert_weather(weather)
    summary.weather_rows = len(weather)
    prefix = f"fleet:{seed}:{n_devices}:{isoformat_z(start)}:{isoformat_z(end)}"
    registry = DeviceRegistry(store)
    report = IngestReport(batch_id=prefix, source="generator", status="duplicate_batch")
    late = []
    for n, chunk in enumerate(fleet.generate(n_devices, start, end, seed, faults)):
        part = ingest_batch(store, chunk.readings.drop(columns="outdoor_temp"), source="generator",
                            batch_id=f"{prefix}/{n:05d}", registry=registry)
        report.add(part)
        late.append(chunk.late.drop(columns="outdoor_temp"))
        summary.devices += len(chunk.devices)
        summary.readings += len(chunk.readings) + len(chunk.late)
        summary.add_faults(chunk.faults)
        if progress:
            progress(_progress_line(summary.devices, n_devices, summary.readings, started))
    for n, frame in enumerate(late):
        if len(frame):
            report.add(ingest_batch(store, frame, source="generator",
                                    batch_id=f"{prefix}/late-{n:05d}", registry=registry))
    summary.ingest = report
    summary.seconds = time.monotonic() - started
    return summary


def write_fleet(
    out: Path, n_devices: int, start: datetime, end: datetime, seed: int,
    faults: fleet.FaultRates = fleet.FaultRates(), progress: Progress | None = None,
    cold_snap: fleet.ColdSnap | None = None,
) -> GenerationSummary:
    """Readings in the backtest's input format to `out` (late readings at the
    end of the file, out of order), with `<stem>.devices.parquet` and
    `<stem>.weather.parquet` (the temperature forecasts) beside it. Files are written under a temporary
    name and renamed when complete."""
    started = time.monotonic()
    summary = GenerationSummary()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    late = []
    with pq.ParquetWriter(partial, OUT_SCHEMA) as writer:
        for chunk in fleet.generate(n_devices, start, end, seed, faults, cold_snap=cold_snap):
            writer.write_table(_out_table(chunk.readings))
            late.append(chunk.late)
            summary.devices += len(chunk.devices)
            summary.readings += len(chunk.readings) + len(chunk.late)
            summary.add_faults(chunk.faults)
            if progress:
                progress(_progress_line(summary.devices, n_devices, summary.readings, started))
        for frame in late:
            if len(frame):
                writer.write_table(_out_table(frame))
    partial.replace(out)
    devices_path = out.with_name(out.stem + ".devices.parquet")
    weather_path = out.with_name(out.stem + ".weather.parquet")
    devices = fleet.fleet_devices(n_devices, seed)[DEVICE_COLUMNS]
    pq.write_table(pa.Table.from_pandas(devices, preserve_index=False), devices_path)
    weather = backtest_weather(fleet.fleet_weather(start, end, seed, cold_snap))
    pq.write_table(pa.Table.from_pandas(weather, preserve_index=False), weather_path)
    summary.weather_rows = len(weather)
    summary.files = [str(out), str(devices_path), str(weather_path)]
    summary.seconds = time.monotonic() - started
    return summary


def backtest_weather(weather: pd.DataFrame) -> pd.DataFrame:
    """The issued temperature forecasts in the backtest's `--weather` format
    (observations are the readings' `outdoor_temp`)."""
    fc = weather[weather["kind"] == "forecast"]
    return fc.rename(columns={"outdoor_temp_c": "outdoor_temp"})[
        ["location", "timestamp", "issued_at", "outdoor_temp"]].reset_index(drop=True)


def _out_table(frame: pd.DataFrame) -> pa.Table:
    frame = frame.assign(device_id=frame["device_id"].astype(str))
    return pa.Table.from_pandas(frame[OUT_SCHEMA.names], schema=OUT_SCHEMA, preserve_index=False)
