"""What the forecasting benchmarks share: the generated fleets they run on
(cached as files), subsets of them, a progress line on stderr."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from intraday.forecasting import backtest

ROOT = Path(__file__).resolve().parents[1]
END = datetime(2026, 2, 1, tzinfo=UTC)  # the same cached file as bench/telemetry.py


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fleet_files(devices: int, days: int, end: datetime = END, name: str = "fleet") -> tuple[Path, Path, Path]:
    """The generated fleet as `fleet generate --out` writes it (duplicated
    messages, stuck sensors and gaps included: the backtest reads it as is)."""
    stem = ROOT / ".data" / "bench" / f"{name}-{devices}x{days}-seed7"
    raw = stem.with_suffix(".parquet")
    if not raw.exists():
        log(f"generating {raw.relative_to(ROOT)}")
        subprocess.run([sys.executable, "-m", "intraday.cli", "fleet", "generate", "--devices", str(devices),
                        "--days", str(days), "--seed", "7", "--end", end.isoformat(), "--out", str(raw)],
                       check=True, cwd=ROOT)
    return raw, Path(f"{stem}.devices.parquet"), Path(f"{stem}.weather.parquet")


def subset(data: backtest.BacktestData, n: int) -> backtest.BacktestData:
    return pick(data, np.arange(min(n, len(data.panel.device_ids))))


def pick(data: backtest.BacktestData, rows: np.ndarray) -> backtest.BacktestData:
    """The devices at `rows` of the panel, with their attributes and weather."""
    p = data.panel
    panel = type(p)(p.device_ids[rows], p.start, p.power[rows],
                    None if p.outdoor_temp is None else p.outdoor_temp[rows],
                    None if p.attributes is None else p.attributes.iloc[rows].reset_index(drop=True),
                    None if p.countries is None else p.countries[rows], p.step_minutes)
    t = data.temperature
    if t is not None:
        temperature = type(t)(t.location[rows], t.runs, t.values) if hasattr(t, "runs") else \
            type(t)(t.location[rows], t.values)
    else:
        temperature = None
    observed = None if data.observed is None else data.observed[rows]
    return backtest.BacktestData(panel, temperature, data.readings, data.resampled_from, data.stuck_dropped,
                                 data.duplicates_dropped, observed)
