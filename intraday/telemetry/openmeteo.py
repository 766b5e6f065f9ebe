"""Temperature forecasts from Open-Meteo's forecast API
(`GET /v1/forecast`, its documented request and response), for the
locations of the fleet's devices.

Each location is asked for at one point: a grid cell (`47.4N8.5E`, what a
device's coordinates name) at its centre, a zone (`Zurich`) at the mean of
its devices' coordinates; a zone none of whose devices has coordinates
cannot be asked for, and is said so. Many points go in one request
(comma-separated coordinates; the answer is a list in the same order).

What comes back is stored as the weather table holds it: the hours from the
fetch on as a forecast issued at the fetch (its quarter-hour), the hours
before it (`past_hours`, the provider's best estimate of what happened) as
observations. Open-Meteo does not say when its model run was issued; the
fetch time is when this system knew the values, which is what a forecast
may use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from intraday.telemetry.registry import grid_center
from intraday.timeutil import floor_quarter_hour

VARIABLE = "temperature_2m"


class ProviderError(RuntimeError):
    """The provider refused the request, or answered what its documentation
    does not describe."""
POINTS_PER_REQUEST = 50


@dataclass
class Plan:
    """The points to ask for, and the locations that cannot be asked for."""

    locations: list[str] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)
    without_coordinates: list[str] = field(default_factory=list)


def plan(devices: list[dict[str, Any]]) -> Plan:
    """One point per location of the devices (the registry's entries)."""
    coordinates: dict[str, list[tuple[float, float]]] = {}
    for d in devices:
        location = d.get("location")
        if not location:
            continue
        spot = coordinates.setdefault(location, [])
        if d.get("latitude") is not None and d.get("longitude") is not None:
            spot.append((float(d["latitude"]), float(d["longitude"])))
    out = Plan()
    for location in sorted(coordinates):
        centre = grid_center(location)
        if centre is None and coordinates[location]:
            lat, lon = np.mean(coordinates[location], axis=0)
            centre = (round(float(lat), 4), round(float(lon), 4))
        if centre is None:
            out.without_coordinates.append(location)
        else:
            out.locations.append(location)
            out.points.append(centre)
    return out


def request_params(points: list[tuple[float, float]], past_hours: int = 6, forecast_hours: int = 48,
                   model: str = "best_match") -> dict[str, str]:
    """The query of one request for these points: hourly temperature in UTC
    as Unix times."""
    return {
        "latitude": ",".join(f"{lat:.4f}" for lat, _ in points),
        "longitude": ",".join(f"{lon:.4f}" for _, lon in points),
        "hourly": VARIABLE,
        "timezone": "GMT",
        "timeformat": "unixtime",
        "past_hours": str(past_hours),
        "forecast_hours": str(forecast_hours),
        "models": model,
    }


def _times(raw: list[Any], offset: int) -> pd.DatetimeIndex:
    """Unix times are UTC; ISO 8601 times are local to the requested time
    zone (GMT here), without a suffix, `offset` seconds ahead of UTC."""
    if raw and isinstance(raw[0], int | float):
        return pd.to_datetime(np.asarray(raw, dtype=np.int64), unit="s", utc=True)
    local = pd.DatetimeIndex(pd.to_datetime(list(raw), format="ISO8601", utc=True))
    return local - pd.Timedelta(seconds=offset)


def parse(body: Any, locations: list[str], fetched_at: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A response (one object, or a list in the order of the points) as
    observations before the fetch and a forecast issued at it:
    (location, timestamp, [issued_at,] outdoor_temp_c) frames."""
    if isinstance(body, dict) and body.get("error"):
        raise ProviderError(f"Open-Meteo refused the request: {body.get('reason', body)}")
    answers = body if isinstance(body, list) else [body]
    if len(answers) != len(locations):
        raise ProviderError(f"Open-Meteo answered {len(answers)} locations for {len(locations)} asked")
    issued = floor_quarter_hour(fetched_at)
    frames = []
    for location, answer in zip(locations, answers, strict=True):
        try:
            hourly = answer["hourly"]
            unit = answer.get("hourly_units", {}).get(VARIABLE, "°C")
            when = _times(hourly["time"], int(answer.get("utc_offset_seconds", 0)))
            temp = pd.to_numeric(pd.Series(hourly[VARIABLE], dtype=object), errors="coerce").to_numpy(float)
        except (KeyError, TypeError, ValueError) as e:
            raise ProviderError(f"Open-Meteo's answer for {location} is not in the documented format: "
                                 f"{e!r}") from None
        if unit not in ("°C", "celsius"):
            raise ProviderError(f"Open-Meteo answered {VARIABLE} in {unit!r}, not degrees Celsius")
        frames.append(pd.DataFrame({"location": location, "timestamp": when, "outdoor_temp_c": temp}))
    rows = pd.concat(frames, ignore_index=True).dropna(subset=["outdoor_temp_c"])
    rows = rows[rows["timestamp"] == rows["timestamp"].dt.floor("15min")]
    past = rows["timestamp"] < pd.Timestamp(issued)
    forecast = rows[~past].assign(issued_at=pd.Timestamp(issued))
    return rows[past].reset_index(drop=True), forecast.reset_index(drop=True)

