"""Outdoor temperature for forecasts, fetched from the telemetry service and
shared by every device at a location: a burst of forecasts costs one request
per location and quarter-hour, whatever their forecast starts.

A forecast reads the weather as known at `as_of` = min(now, forecast_start):
observations up to then and the latest forecast issued by then, so a
forecast for a past start sees what was known at that start.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import numpy as np

from clients.sidecar import fetch_temperature
from intraday.config import get_settings
from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, isoformat_z

WEATHER_DAYS = 8  # observed temperature the features read before forecast_start
BEFORE, AFTER = timedelta(days=9), timedelta(days=10)  # the span one request fetches around as_of
MAX_ENTRIES = 256
# (location, as_of) -> (span start, values)
_cache: OrderedDict[tuple, tuple[datetime, np.ndarray]] = OrderedDict()
# (location, as_of) -> when the newest forecast known then was issued (None:
# none was); bounded like the cache
_issued: OrderedDict[tuple, datetime | None] = OrderedDict()


def known_at(start: datetime) -> datetime:
    """What a forecast starting at `start` may know: the weather as of
    min(now, start), on the quarter-hour."""
    return floor_quarter_hour(min(datetime.now(UTC), start))


async def temperatures(location: str, start: datetime, end: datetime, as_of: datetime) -> np.ndarray:
    """Per quarter-hour in [start, end) as known at `as_of`; NaN where
    nothing is known."""
    as_of = floor_quarter_hour(as_of)
    first = as_of.replace(hour=0, minute=0) - BEFORE
    last = as_of.replace(hour=0, minute=0) + AFTER
    key = (location, as_of)
    if start < first or end > last:  # outside the shared span: ask for exactly this
        values, issued = await fetch_temperature(location, start, end, as_of)
        _remember(key, issued)
        return values
    if key not in _cache:
        values, issued = await fetch_temperature(location, first, last, as_of)
        _cache[key] = (first, values)
        _remember(key, issued)
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    _cache.move_to_end(key)
    span_start, values = _cache[key]
    i = int((start - span_start) / QUARTER_HOUR)
    return values[i : i + int((end - start) / QUARTER_HOUR)]


def _remember(key: tuple, issued: datetime | None) -> None:
    _issued[key] = issued
    _issued.move_to_end(key)
    while len(_issued) > MAX_ENTRIES:
        _issued.popitem(last=False)


async def on_window(location: str, window_start: datetime, start: datetime, horizon: int) -> np.ndarray:
    """A device's temperature input: on its window's grid from `window_start`
    through the end of the horizon, as known at forecast_start (or now, for
    a start in the future); NaN before the last WEATHER_DAYS and where
    nothing is known. The DeviceActor and a fleet shard both read it here."""
    first = max(window_start, start - timedelta(days=WEATHER_DAYS))
    end = start + horizon * QUARTER_HOUR
    values = await temperatures(location, first, end, known_at(start))
    out = np.full(int((end - window_start) / QUARTER_HOUR), np.nan)
    i = int((first - window_start) / QUARTER_HOUR)
    out[i : i + len(values)] = values
    return out


async def keep_warm(locations: Callable[[], Awaitable[set[str]]], after_s: float = 2.0) -> None:
    """At each quarter-hour (`after_s` past it), read the weather every
    location's forecasts will ask for until the next one (as known now), so
    no request waits for it: a cache miss is a telemetry call of 20-35 ms
    on a lone request's path (bench/results/load.json). Runs until
    cancelled; a failed read is left to the request that needs it."""
    import asyncio
    import logging

    log = logging.getLogger(__name__)
    while True:
        now = datetime.now(UTC)
        turn = floor_quarter_hour(now) + QUARTER_HOUR + timedelta(seconds=after_s)
        try:
            as_of = known_at(now + QUARTER_HOUR)  # a future start: known as of now
            # At most half the cache: requests for other times keep their room.
            for location in sorted(await locations())[: MAX_ENTRIES // 2]:
                await temperatures(location, as_of, as_of + QUARTER_HOUR, as_of)
        except Exception as e:  # noqa: BLE001 - the requests fetch what is missing
            log.warning("weather not pre-read (%s); requests read it", str(e)[:200])
        await asyncio.sleep(max((turn - datetime.now(UTC)).total_seconds(), 1.0))


def stale_forecast_note(location: str, start: datetime) -> str | None:
    """A note for a forecast of a device at `location` whose newest
    temperature forecast (as read by `on_window` for this start) is older
    than INTRADAY_WEATHER_FORECAST_MAX_AGE_HOURS. None when it is fresh, or
    when none was ever issued (the engine's note says the horizon has no
    temperature then)."""
    as_of = known_at(start)
    issued = _issued.get((location, as_of))
    limit = get_settings().weather_forecast_max_age_hours
    if issued is None or as_of - issued <= timedelta(hours=limit):
        return None
    return (f"the newest temperature forecast for {location} was issued {isoformat_z(issued)}, "
            f"{(as_of - issued).total_seconds() / 3600:.0f} h before this forecast (limit {limit:g} h): "
            "its weather input is stale")
