"""The telemetry service's weather: temperatures by location, issued
forecasts, weather batches in, their freshness, and the pull from the
weather provider (a Dapr job)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from clients import metrics
from intraday.config import get_settings
from intraday.errors import InvalidRequest
from intraday.telemetry import openmeteo
from intraday.telemetry.weather import parse_weather
from intraday.telemetry.weather import records_frame as weather_frame
from intraday.timeutil import isoformat_z, to_utc
from services.telemetry import state
from services.telemetry.inputs import MAX_BATCH_DEVICES, check_span, frame_from_request, only_fields

log = logging.getLogger(__name__)
router = APIRouter()


@router.get("/weather/{location}")
async def weather(location: str, start: datetime = Query(...), end: datetime = Query(...),
                  as_of: datetime = Query(...)) -> dict:
    """Outdoor temperature (degC) per quarter-hour in [start, end) as known
    at `as_of`: observed where measured by then, else the latest forecast
    issued by then; null where neither exists. `forecast_issued_at`: when
    the newest forecast known then was issued (null: none was)."""
    start, end, as_of = to_utc(start), to_utc(end), to_utc(as_of)
    check_span(start, end)
    temps = await run_in_threadpool(state.store.weather_window, [location], start, end, as_of)
    issued = (await run_in_threadpool(state.store.newest_forecasts, [location], as_of)).get(location)
    return {"location": location, "start": isoformat_z(start), "freq": "15min",
            "values": [None if math.isnan(v) else v for v in temps[0].tolist()],
            "forecast_issued_at": isoformat_z(issued) if issued else None}


class WeatherForecastsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locations: list[str] = Field(min_length=1, max_length=MAX_BATCH_DEVICES)
    start: datetime
    end: datetime


@router.post("/weather-forecasts")
async def weather_forecasts(request: WeatherForecastsRequest) -> Response:
    """Every temperature forecast issued in [start, end) for the locations,
    as Parquet (location, issued_at, timestamp, outdoor_temp): what a
    training reads forecasts from, as they were issued."""
    start, end = to_utc(request.start), to_utc(request.end)
    check_span(start, end, quarter_hours=False)
    df = await run_in_threadpool(state.store.weather_forecasts, request.locations, start, end)
    out = io.BytesIO()
    df.to_parquet(out, index=False)
    return Response(out.getvalue(), media_type="application/vnd.apache.parquet")


WEATHER_BATCH_KEYS = {"observed": "observations", "forecast": "forecasts"}


def _store_weather(frames: dict[str, pd.DataFrame]) -> dict:
    """Check every batch first, then store them: all or nothing."""
    parsed = {kind: parse_weather(df, kind) for kind, df in frames.items()}
    stored = {}
    for kind, rows in parsed.items():
        state.store.insert_weather(rows)
        metrics.WEATHER_ROWS.labels(kind).inc(len(rows))
        stored[WEATHER_BATCH_KEYS[kind]] = len(rows)
    locations = sorted({loc for rows in parsed.values() for loc in rows["location"].unique()})
    return {"stored": stored, "locations": locations,
            "dropped_copies": sum(len(frames[k]) - len(parsed[k]) for k in frames)}


def _weather_frames(doc: object) -> dict[str, pd.DataFrame]:
    if not isinstance(doc, dict) or not set(doc) & set(WEATHER_BATCH_KEYS.values()):
        raise InvalidRequest('expected {"observations": [...]} and/or {"forecasts": [...]}')
    only_fields(doc, tuple(WEATHER_BATCH_KEYS.values()), "a weather batch")
    return {kind: weather_frame(doc[key]) for kind, key in WEATHER_BATCH_KEYS.items() if key in doc}


@router.post("/ingest/weather")
async def ingest_weather(request: Request,
                         kind: str | None = Query(None, pattern="^(observed|forecast)$")) -> dict:
    """Weather observations and issued forecasts: a JSON body
    `{"observations": [...], "forecasts": [...]}`, or a CSV or Parquet body
    of one `kind`. Every row valid, or 422 naming the bad rows and nothing
    written; a row sent again replaces its copy."""
    content = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content in ("application/json", ""):
        try:
            doc = json.loads(await request.body())
        except ValueError as e:
            raise InvalidRequest(f"body is not JSON: {e}") from None
        frames = _weather_frames(doc)
    else:
        if kind is None:
            raise InvalidRequest("a CSV or Parquet body needs ?kind=observed or ?kind=forecast")
        frames = {kind: (await frame_from_request(request))[0]}
    return await run_in_threadpool(_store_weather, frames)


WEATHER_CHECK_SECONDS = 60.0


def check_weather_freshness() -> dict:
    """Which locations of the fleet's devices have no temperature forecast
    issued within `weather_forecast_max_age_hours`: the metric, and GET
    /weather-freshness. Their devices' forecasts say so in their notes."""
    now = datetime.now(UTC)
    limit = timedelta(hours=get_settings().weather_forecast_max_age_hours)
    locations = sorted({d["location"] for d in state.store.devices() if d.get("location")})
    newest = state.store.newest_forecasts(locations) if locations else {}
    stale = [loc for loc in locations if loc not in newest or now - newest[loc] > limit]
    metrics.WEATHER_STALE_LOCATIONS.set(len(stale))
    return {"checked_at": isoformat_z(now), "max_age_hours": limit.total_seconds() / 3600,
            "locations": {loc: isoformat_z(newest[loc]) if loc in newest else None for loc in locations},
            "stale": stale}


async def _weather_freshness_loop() -> None:
    while True:
        try:
            await run_in_threadpool(check_weather_freshness)
        except Exception as e:  # noqa: BLE001 - keep the loop alive, say why
            log.warning("weather freshness not checked: %s", e)
        await asyncio.sleep(WEATHER_CHECK_SECONDS)


@router.get("/weather-freshness")
async def weather_freshness_now() -> dict:
    """Per location of the fleet, its newest temperature forecast's issue
    time, and those older than the limit (or with none): `stale`."""
    return await run_in_threadpool(check_weather_freshness)


WEATHER_JOB = "intraday-weather"  # the Dapr job that pulls the provider's forecasts


async def pull_weather() -> dict:
    """The provider's temperature forecasts for every location of the
    fleet's devices (intraday/telemetry/openmeteo.py), stored as any other
    weather batch: checked, then written. Locations that cannot be asked
    for (a zone without coordinates) are reported, as is the freshness."""
    settings = get_settings()
    if not settings.weather_provider_url:
        raise InvalidRequest("no weather provider: set INTRADAY_WEATHER_PROVIDER_URL")
    devices = await run_in_threadpool(state.store.devices)
    wanted = openmeteo.plan(devices)
    stored = {"observations": 0, "forecasts": 0}
    fetched_at = datetime.now(UTC)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for k in range(0, len(wanted.points), openmeteo.POINTS_PER_REQUEST):
                points = wanted.points[k : k + openmeteo.POINTS_PER_REQUEST]
                params = openmeteo.request_params(points, settings.weather_past_hours,
                                                  model=settings.weather_model)
                r = await client.get(settings.weather_provider_url, params=params)
                try:
                    body = r.json()
                except ValueError:
                    raise openmeteo.ProviderError(f"the weather provider answered {r.status_code} with no "
                                                  f"JSON: {r.text[:200]}") from None
                observed, forecast = openmeteo.parse(body, wanted.locations[k : k + len(points)], fetched_at)
                frames = {"forecast": forecast}
                if len(observed):
                    frames["observed"] = observed
                result = await run_in_threadpool(_store_weather, frames)
                for key, n in result["stored"].items():
                    stored[key] += n
    except (openmeteo.ProviderError, httpx.HTTPError) as e:
        metrics.WEATHER_PULLS.labels("failed").inc()
        log.error("weather pull failed: %s", e)
        raise
    metrics.WEATHER_PULLS.labels("ok").inc()
    freshness = await run_in_threadpool(check_weather_freshness)
    log.info("weather pulled for %d locations: %s", len(wanted.locations), stored)
    return {"locations": wanted.locations, "without_coordinates": wanted.without_coordinates,
            "stored": stored, "fetched_at": isoformat_z(fetched_at), "stale": freshness["stale"]}


@router.post("/weather/pull")
async def weather_pull() -> dict:
    """Pull the weather provider's forecasts now (what the Dapr job does on
    its schedule)."""
    try:
        return await pull_weather()
    except (openmeteo.ProviderError, httpx.HTTPError) as e:
        raise HTTPException(502, f"the weather provider failed: {e}") from None


@router.post(f"/job/{WEATHER_JOB}")
async def scheduled_weather() -> dict:
    """The Dapr job's trigger: a pull; a failure is logged and counted
    (intraday_weather_pulls{outcome="failed"}), and the next run tries again."""
    try:
        return await pull_weather()
    except (InvalidRequest, openmeteo.ProviderError, httpx.HTTPError) as e:
        return {"error": str(e)}
