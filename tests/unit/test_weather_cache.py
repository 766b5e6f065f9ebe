"""The forecaster's weather cache is read ahead at each quarter-hour, so a
forecast from a future start (what trading asks for) never waits for the
telemetry service's weather on its path."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from clients import weather
from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour


@pytest.fixture
def asked(monkeypatch):
    """The telemetry service's weather endpoint as the cache calls it:
    every (location, as_of) it is asked for."""
    calls: list[tuple[str, datetime]] = []

    async def fetch(location, start, end, as_of):
        calls.append((location, as_of))
        return np.full(int((end - start) / QUARTER_HOUR), 5.0), as_of - timedelta(hours=3)

    monkeypatch.setattr(weather, "fetch_temperature", fetch)
    weather._cache.clear()
    weather._issued.clear()
    return calls


def test_the_quarter_hours_weather_is_read_ahead_for_every_location(asked):
    async def locations() -> set[str]:
        return {"de-frankfurt", "de-hamburg"}

    async def main() -> None:
        warm = asyncio.create_task(weather.keep_warm(locations))
        while len(asked) < 2:
            await asyncio.sleep(0.01)
        now = datetime.now(UTC)
        turn = floor_quarter_hour(now)
        assert sorted(asked) == [("de-frankfurt", turn), ("de-hamburg", turn)]
        # A forecast of the next day from the next quarter-hour: served from the cache.
        start = floor_quarter_hour(now) + QUARTER_HOUR
        values = await weather.on_window("de-hamburg", start - timedelta(days=30), start, 96)
        assert len(asked) == 2 and np.isfinite(values[-96:]).all()
        assert weather.stale_forecast_note("de-hamburg", start) is None  # its issue time was kept too
        warm.cancel()

    asyncio.run(main())


def test_a_failed_read_ahead_is_left_to_the_requests(asked):
    async def broken() -> set[str]:
        raise RuntimeError("telemetry service down")

    async def main() -> None:
        warm = asyncio.create_task(weather.keep_warm(broken))
        await asyncio.sleep(0.05)
        assert not warm.done() and asked == []  # still running: it tries again at the next quarter-hour
        warm.cancel()

    asyncio.run(main())
