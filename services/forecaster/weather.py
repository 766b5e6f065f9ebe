"""Outdoor temperature for forecasts, fetched from the telemetry service and
shared by every device at a location: a burst of forecasts for one
quarter-hour costs one request per location."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

import numpy as np

from intraday.timeutil import floor_quarter_hour
from services.sidecar import fetch_temperature

_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
MAX_ENTRIES = 512


async def temperatures(location: str, start: datetime, end: datetime, now: datetime) -> np.ndarray:
    """Per quarter-hour in [start, end): observed by `now`, else the latest
    forecast issued by then (known to the quarter-hour)."""
    key = (location, start, end, floor_quarter_hour(now))
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    values = await fetch_temperature(location, start, end, key[3])
    _cache[key] = values
    while len(_cache) > MAX_ENTRIES:
        _cache.popitem(last=False)
    return values
