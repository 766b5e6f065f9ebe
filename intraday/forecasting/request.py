"""What makes a forecast request sane, checked before any work starts."""

from __future__ import annotations

from datetime import datetime, timedelta

from intraday.errors import InvalidRequest
from intraday.timeutil import QUARTER_HOUR, is_quarter_hour, to_utc

EARLIEST_START = timedelta(days=7)  # backcasts up to a week old, for evaluation
LATEST_START = timedelta(days=7)


def horizon_intervals(horizon_hours: float, max_horizon_hours: float) -> int:
    if not 0 < horizon_hours <= max_horizon_hours:
        raise InvalidRequest(
            f"horizon_hours must be in (0, {max_horizon_hours:g}], got {horizon_hours:g}"
        )
    n = horizon_hours / (QUARTER_HOUR / timedelta(hours=1))
    if abs(n - round(n)) > 1e-9:
        raise InvalidRequest(f"horizon_hours must be a multiple of 0.25, got {horizon_hours:g}")
    return int(round(n))


def check_forecast_start(forecast_start: datetime, now: datetime) -> datetime:
    forecast_start = to_utc(forecast_start)
    if not is_quarter_hour(forecast_start):
        raise InvalidRequest(
            f"forecast_start {forecast_start.isoformat()} is not on a quarter-hour boundary"
        )
    if not now - EARLIEST_START <= forecast_start <= now + LATEST_START:
        raise InvalidRequest(
            f"forecast_start {forecast_start.isoformat()} is outside the supported range "
            f"[now - {EARLIEST_START.days} d, now + {LATEST_START.days} d]"
        )
    return forecast_start


def forecast_id(device_id: str, forecast_start: datetime, horizon: int, model_version: str) -> str:
    """The workflow instance id: the same device, start, horizon and model give
    the same id, so a repeated request finds the existing forecast."""
    return f"fc-{device_id}-{to_utc(forecast_start):%Y%m%dT%H%MZ}-{horizon}-{model_version}"
