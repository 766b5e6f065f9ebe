"""A user's own fleet from three files (intraday/telemetry/onboarding.py and
`intraday import`): the replay's shift by whole weeks, what it holds back,
and the import run as a user would, twice, into a store of its own."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from intraday.errors import InvalidRequest
from intraday.telemetry import onboarding
from intraday.telemetry.backends import ChdbBackend
from intraday.telemetry.loader import write_fleet
from intraday.telemetry.store import TelemetryStore

ROOT = Path(__file__).resolve().parents[2]
INTRADAY = str(ROOT / ".venv" / "bin" / "intraday")
NOW = datetime(2026, 12, 2, 9, 40, tzinfo=UTC)  # a Wednesday


def readings_file(tmp_path: Path, end: str = "2018-12-16T23:00Z", days: int = 10) -> Path:
    ts = pd.date_range(end=pd.Timestamp(end) - pd.Timedelta(minutes=15), periods=days * 96, freq="15min")
    path = tmp_path / "readings.parquet"
    pd.DataFrame({"device_id": "ch-1", "timestamp": ts, "power": 1.0}).to_parquet(path)
    return path


def test_the_shift_is_whole_weeks_and_ends_the_data_at_now(tmp_path):
    path = readings_file(tmp_path)
    shift = onboarding.plan_shift(path, NOW)
    assert shift.by % timedelta(days=7) == timedelta(0)
    assert shift.until == datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    assert shift.until <= shift.data_end + shift.by < shift.until + timedelta(days=7)
    chunks = list(onboarding.reading_chunks(path, shift, chunk_rows=300))
    frame = pd.concat(c.frame for c in chunks)
    original = pd.read_parquet(path)["timestamp"]
    kept = frame["timestamp"]
    # The data ends at the current quarter-hour.
    assert kept.max() == pd.Timestamp(shift.until) - pd.Timedelta(minutes=15)
    assert sum(c.held_back for c in chunks) + len(frame) == len(original)
    # Weekday and time of day as they were.
    assert (kept.dt.dayofweek.to_numpy() == original.iloc[: len(kept)].dt.dayofweek.to_numpy()).all()
    assert (kept.dt.time.to_numpy() == original.iloc[: len(kept)].dt.time.to_numpy()).all()
    # The same file, shift and cut: the same batches (an import run again stores nothing new).
    assert [c.batch_id for c in onboarding.reading_chunks(path, shift, chunk_rows=300)] == \
        [c.batch_id for c in chunks]


def test_observations_after_now_become_a_forecast_issued_now(tmp_path):
    path = readings_file(tmp_path)
    shift = onboarding.plan_shift(path, NOW)
    weather = tmp_path / "weather.csv"
    ts = pd.date_range("2018-12-06T00:00Z", "2018-12-16T22:00Z", freq="1h")
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%MZ"), "outdoor_temp_c": 1.5}).to_csv(
        weather, index=False)
    with pytest.raises(InvalidRequest, match="--weather-location"):
        onboarding.weather_batches(weather, shift, None, NOW)
    batches = onboarding.weather_batches(weather, shift, "CH", NOW)
    assert (batches.observed["timestamp"] < pd.Timestamp(shift.until)).all()
    assert (batches.forecast["issued_at"] == pd.Timestamp(shift.until)).all()
    assert (batches.forecast["timestamp"] >= pd.Timestamp(shift.until)).all()
    assert batches.replayed_as_forecast == len(batches.forecast) > 0
    assert len(batches.observed) + len(batches.forecast) == len(ts)


def _import(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "INTRADAY_DATA_DIR": str(data_dir),
           "INTRADAY_PG_DSN": "postgresql://nobody@127.0.0.1:9/none",  # no audit store: said, not fatal
           "INTRADAY_GATEWAY_URL": "http://127.0.0.1:9"}
    return subprocess.run([INTRADAY, "import", *args], capture_output=True, text=True, timeout=300, env=env)


def test_import_twice_stores_everything_once(tmp_path):
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    files = tmp_path / "fleet.parquet"
    write_fleet(files, 6, end - timedelta(days=9), end, seed=3)
    devices = tmp_path / "fleet.devices.parquet"
    args = ("--devices", str(devices), "--readings", str(files),
            "--weather", str(tmp_path / "fleet.weather.parquet"))
    # The generator's readings carry outdoor_temp, which ingest accepts and ignores.
    first = _import(tmp_path / "data", *args)
    assert first.returncode in (0, 3), first.stderr
    assert "6 added" in first.stdout and "audit store not reachable" in first.stderr
    second = _import(tmp_path / "data", *args)
    assert second.returncode == 0, second.stderr
    assert "6 unchanged" in second.stdout and "already imported" in second.stdout
    store = TelemetryStore(ChdbBackend(tmp_path / "data" / "telemetry"))
    try:
        rows = store.query("SELECT count() AS n, uniqExact(device_id, timestamp) AS keys"
                           " FROM {db}.power_consumption").to_pylist()[0]
        assert rows["n"] == rows["keys"] > 0  # nothing doubled
        forecasts = store.query("SELECT count() FROM {db}.weather WHERE kind = 'forecast'")
        forecasts = forecasts.column(0)[0].as_py()
        assert forecasts > 0 and len(store.devices()) == 6
    finally:
        store.close()


def test_a_refused_devices_file_names_the_row_and_imports_nothing(tmp_path):
    devices = tmp_path / "devices.csv"
    devices.write_text("device_id,location,setpoint_c\nch-1,CH,21\nch-2,CH,99\n")
    r = _import(tmp_path / "data", "--devices", str(devices), "--readings", str(readings_file(tmp_path)))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines[-1].startswith("intraday: ")
    assert "row 2 (ch-2): setpoint_c 99" in lines[-1]
    store = TelemetryStore(ChdbBackend(tmp_path / "data" / "telemetry"))
    try:
        store.migrate()
        assert store.device_count() == 0
        assert store.query("SELECT count() FROM {db}.power_consumption").column(0)[0].as_py() == 0
    finally:
        store.close()
