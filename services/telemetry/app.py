"""Telemetry service: owns the time-series store (chDB opens its path in one
process only), takes readings in, and answers fleet and window queries.

Ways in, all through `intraday.telemetry.ingest` (validation, quarantine,
idempotency):
- `POST /ingest`: a JSON batch `{"batch_id": ..., "readings": [...]}`, or a
  CSV or Parquet body (`?batch_id=`).
- the `telemetry` topic: the same JSON batch as a CloudEvent's data; its
  batch id defaults to the event id, so a redelivered message is a no-op.
After each batch, the DeviceActors of the devices it touched get the new
quarter-hour means (`ExtendWindow`), so their windows stay fresh. Batches
stored while this service was down (`intraday ingest FILE` writes the store
directly then) are caught up at start and every 30 s after.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import math
import threading
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from clients import metrics, sidecar
from intraday.config import get_settings
from intraday.errors import BatchConflict, InvalidRequest, UnknownDevice
from intraday.telemetry import openmeteo, window_batch
from intraday.telemetry.ingest import (
    DeviceRegistry,
    IngestReport,
    ingest_batch,
    parse_batch_id,
    record_unreadable,
    records_frame,
)
from intraday.telemetry.registry import Refused, new_change_id, parse_devices, retire, upsert
from intraday.telemetry.store import TelemetryStore, check_device_id
from intraday.telemetry.weather import parse_weather
from intraday.telemetry.weather import records_frame as weather_frame
from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, is_quarter_hour, isoformat_z, to_utc
from services.http import install_common

log = logging.getLogger(__name__)
MAX_WINDOW = timedelta(days=400)
MAX_BATCH_ROWS = 2_000_000
MAX_BATCH_DEVICES = 2_000  # windows per POST /windows
MAX_BODY_BYTES = 256 * 1024 * 1024
ACTOR_REFRESH_CONCURRENCY = 16
CATCH_UP_SECONDS = 30.0
store: TelemetryStore
registry: DeviceRegistry
# Check-then-insert must not interleave between two batches, nor
# read-merge-write between two registry changes.
ingest_lock = threading.Lock()
registry_lock = threading.Lock()


@asynccontextmanager
async def lifespan(_: FastAPI):
    global store
    global registry
    store = TelemetryStore.from_settings(get_settings())
    store.migrate()
    registry = DeviceRegistry(store)
    await run_in_threadpool(freshness.seed, store)
    catch_up = asyncio.create_task(_catch_up_loop())
    weather = asyncio.create_task(_weather_freshness_loop())
    settings = get_settings()
    if settings.weather_provider_url:
        asyncio.create_task(sidecar.schedule_job(WEATHER_JOB, settings.weather_schedule, {"pull": "weather"}))
    yield
    catch_up.cancel()
    weather.cancel()
    store.close()


class Freshness:
    """Each device's newest quarter-hour, for the staleness metrics: read
    from the store at start (the last `SEED_DAYS`), then kept up by every
    batch this service stores. A device without readings counts as stale
    at any threshold."""

    SEED_DAYS = 35
    THRESHOLDS = {"1h": 3600.0, "24h": 86400.0}

    def __init__(self) -> None:
        self.devices: set[str] = set()
        self.latest: dict[str, float] = {}  # device -> POSIX time its newest quarter-hour ends
        for q in ("0.5", "0.9", "1"):
            metrics.STALENESS.labels(q).set_function(partial(self.age_quantile, float(q)))
        for name, seconds in self.THRESHOLDS.items():
            metrics.STALE_DEVICES.labels(name).set_function(partial(self.stale, seconds))
        metrics.FLEET_DEVICES.set_function(lambda: len(self.devices))

    def seed(self, store: TelemetryStore) -> None:
        self.devices = {d["device_id"] for d in store.devices()}
        since = datetime.now(UTC) - timedelta(days=self.SEED_DAYS)
        self.latest = {d: (t + QUARTER_HOUR).timestamp() for d, t in store.latest_intervals(since).items()}

    def update(self, touched: dict[str, list[str]]) -> None:
        for device_id, (_, last) in touched.items():
            end = (datetime.fromisoformat(last) + QUARTER_HOUR).timestamp()
            self.latest[device_id] = max(end, self.latest.get(device_id, end))
            self.devices.add(device_id)

    def _ages(self) -> np.ndarray:
        now = datetime.now(UTC).timestamp()
        return np.array([now - self.latest[d] if d in self.latest else np.inf for d in self.devices])

    def age_quantile(self, q: float) -> float:
        ages = self._ages()
        return float(np.quantile(ages, q, method="inverted_cdf")) if ages.size else float("nan")

    def stale(self, seconds: float) -> int:
        return int((self._ages() > seconds).sum())

    def report(self, limit: int) -> dict:
        """The fleet's readings' freshness: how many devices reported within
        each threshold, and the `limit` stalest devices (never-reporting first)."""
        now = datetime.now(UTC).timestamp()
        ages = {d: (now - self.latest[d] if d in self.latest else None) for d in self.devices}
        stalest = sorted(ages.items(), key=lambda kv: (kv[1] is not None, -(kv[1] or 0), kv[0]))[:limit]
        known = np.array([a for a in ages.values() if a is not None])
        return {
            "devices": len(ages),
            "quiet": {name: self.stale(seconds) for name, seconds in self.THRESHOLDS.items()},
            "never_reported": sum(a is None for a in ages.values()),
            "median_age_seconds": round(float(np.median(known)), 1) if known.size else None,
            "stalest": [{"device_id": d, "age_seconds": None if a is None else round(a, 1),
                         "newest_reading_end": None if a is None else isoformat_z(
                             datetime.fromtimestamp(self.latest[d], UTC))} for d, a in stalest],
        }


freshness = Freshness()
app = FastAPI(title="intraday telemetry", lifespan=lifespan)
install_common(app, "telemetry")


def _check_span(start: datetime, end: datetime, quarter_hours: bool = True) -> None:
    """422 with the reason unless [start, end) is a span a query may ask
    for: start before end, at most MAX_WINDOW, on quarter-hours."""
    if quarter_hours and not (is_quarter_hour(start) and is_quarter_hour(end)):
        raise HTTPException(422, "start and end must be on quarter-hour boundaries")
    if not start < end or end - start > MAX_WINDOW:
        raise HTTPException(422, f"need start < end and at most {MAX_WINDOW.days} days")


@app.exception_handler(Refused)
async def _refused(_: Request, exc: Refused) -> JSONResponse:
    return JSONResponse({"detail": exc.detail()}, status_code=422)


@app.get("/devices")
async def devices(request: Request, include_retired: bool = Query(False)) -> Response:
    """The fleet's devices (retired ones too with `include_retired`). The
    ETag follows the registry: a request with `If-None-Match` gets 304 while
    nothing changed (the forecaster re-validates its list every few seconds)."""
    version = await run_in_threadpool(store.registry_version)
    etag = '"' + hashlib.sha256(f"{version}/{include_retired}".encode()).hexdigest()[:24] + '"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"etag": etag})
    rows = await run_in_threadpool(store.devices, include_retired)
    return JSONResponse(rows, headers={"etag": etag})


class RetireRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_ids: list[str] = Field(min_length=1, max_length=100_000)
    at: datetime | None = Field(None, description="when they leave the fleet (default now)")
    changed_by: str = Field("telemetry", max_length=200)
    change_id: str = Field("", max_length=200)


def _change_meta(request: Request, doc: dict | None = None) -> tuple[str, str]:
    doc = doc or {}
    changed_by = str(doc.get("changed_by") or request.query_params.get("changed_by") or "telemetry")[:200]
    change_id = str(doc.get("change_id") or request.query_params.get("change_id") or "")[:200]
    return changed_by, change_id or new_change_id()


def _fleet_changed() -> None:
    """What follows the registry in this process: the ingest's device
    check and the staleness metrics' fleet."""
    registry._refresh()
    freshness.devices = {d["device_id"] for d in store.devices()}


def _apply(change, *args):
    with registry_lock:
        result = change(store, *args)
    if result.written:
        _fleet_changed()
    log.info("registry change %s by %s: %d written, %d unchanged", result.change_id, result.changed_by,
             result.written, result.unchanged)
    return result


@app.post("/devices")
async def register_devices(request: Request) -> dict:
    """Add or update devices: a JSON body `{"devices": [{device_id, ...}],
    "changed_by", "change_id"}`, or a CSV or Parquet body (`?changed_by=`).
    All rows valid, or 422 naming every bad row and nothing written."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    doc = None
    if kind in ("application/json", ""):
        try:
            doc = json.loads(await request.body())
        except ValueError as e:
            raise InvalidRequest(f"body is not JSON: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list) \
                or not all(isinstance(d, dict) for d in doc["devices"]):
            raise InvalidRequest('expected {"devices": [{"device_id": "...", ...}, ...]}')
        df = pd.DataFrame.from_records(doc["devices"]).astype(object)
    else:
        df, _ = await _frame_from_request(request)
    changed_by, change_id = _change_meta(request, doc)
    rows = parse_devices(df)
    return (await run_in_threadpool(_apply, upsert, rows, changed_by, change_id)).to_dict()


@app.post("/devices/retire")
async def retire_devices(body: RetireRequest, request: Request) -> dict:
    """Retire devices from `at` (default now): they leave the fleet list and
    the portfolio then, their history stays. Unknown ids: 422, nothing done."""
    changed_by, change_id = _change_meta(request, body.model_dump())
    at = to_utc(body.at) if body.at else None
    return (await run_in_threadpool(_apply, retire, body.device_ids, changed_by, change_id, at)).to_dict()


@app.get("/devices/{device_id}")
async def device(device_id: str) -> dict:
    found = await run_in_threadpool(store.device, device_id)
    if found is None:
        raise UnknownDevice(device_id)
    return found


@app.get("/devices/{device_id}/window")
async def window(device_id: str, start: datetime = Query(...), end: datetime = Query(...)) -> dict:
    """Mean power (kW) per quarter-hour in [start, end); null marks a gap."""
    start, end = to_utc(start), to_utc(end)
    _check_span(start, end)
    w = await run_in_threadpool(store.window, device_id, start, end)
    return {
        "device_id": device_id,
        "start": isoformat_z(w.start),
        "freq": "15min",
        "values": [None if math.isnan(v) else v for v in w.values.tolist()],
    }


class WindowsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_ids: list[str] = Field(min_length=1, max_length=MAX_BATCH_DEVICES)
    start: datetime
    end: datetime
    # Ship only [cut, end) (what the features read); the older part is
    # summed up per device in the query (store.recent_windows).
    cut: datetime | None = None


@app.post("/windows")
async def windows(request: WindowsRequest) -> Response:
    """The windows of many devices in one query, as the single-device
    endpoint gives them, as an Arrow IPC stream (`application/vnd.apache.
    arrow.stream`): one row per device in the order asked, `values` the
    quarter-hours from `cut` (default `start`) to `end` as float32 (NaN for
    gaps; 11.5 KB per device-month, and read without parsing),
    `first_reading` (the index of the device's first reading in [start,
    end) relative to `cut`; negative before it, the row's length when none)
    and `missing_before` (quarter-hours of [start, cut) without a reading).
    The schema's metadata holds the grid's `start` and `intervals`."""
    start, end = to_utc(request.start), to_utc(request.end)
    _check_span(start, end)
    cut = to_utc(request.cut) if request.cut is not None else start
    if not start <= cut < end or (cut - start) % QUARTER_HOUR:
        raise HTTPException(422, "cut must be a quarter-hour step from start, before end")
    try:
        ids = [check_device_id(d) for d in request.device_ids]
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
    fleet, first, missing = await run_in_threadpool(store.recent_windows, start, cut, end, ids)
    return Response(window_batch.encode(fleet, first, missing, cut > start),
                    media_type=window_batch.MEDIA_TYPE)


@app.get("/weather/{location}")
async def weather(location: str, start: datetime = Query(...), end: datetime = Query(...),
                  as_of: datetime = Query(...)) -> dict:
    """Outdoor temperature (degC) per quarter-hour in [start, end) as known
    at `as_of`: observed where measured by then, else the latest forecast
    issued by then; null where neither exists. `forecast_issued_at`: when
    the newest forecast known then was issued (null: none was)."""
    start, end, as_of = to_utc(start), to_utc(end), to_utc(as_of)
    _check_span(start, end)
    temps = await run_in_threadpool(store.weather_window, [location], start, end, as_of)
    issued = (await run_in_threadpool(store.newest_forecasts, [location], as_of)).get(location)
    return {"location": location, "start": isoformat_z(start), "freq": "15min",
            "values": [None if math.isnan(v) else v for v in temps[0].tolist()],
            "forecast_issued_at": isoformat_z(issued) if issued else None}


@app.get("/portfolio/actuals")
async def portfolio_actuals(start: datetime = Query(...), end: datetime = Query(...)) -> dict:
    """The fleet's measured total per quarter-hour in [start, end) (kW, the
    sum of the devices' means) and how many devices it holds; null where no
    device reported yet."""
    start, end = to_utc(start), to_utc(end)
    _check_span(start, end)
    total, devices = await run_in_threadpool(store.portfolio_actuals, start, end)
    return {"start": isoformat_z(start), "freq": "15min",
            "total_kw": [None if math.isnan(v) else round(v, 3) for v in total.tolist()],
            "devices": devices.tolist()}


@app.get("/portfolio/freshness")
async def portfolio_freshness(limit: int = Query(20, ge=0, le=10_000)) -> dict:
    """How fresh the fleet's readings are: devices quiet for over an hour or
    a day, and the stalest devices with the end of their newest reading."""
    return freshness.report(limit)


class WeatherForecastsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locations: list[str] = Field(min_length=1, max_length=MAX_BATCH_DEVICES)
    start: datetime
    end: datetime


@app.post("/weather-forecasts")
async def weather_forecasts(request: WeatherForecastsRequest) -> Response:
    """Every temperature forecast issued in [start, end) for the locations,
    as Parquet (location, issued_at, timestamp, outdoor_temp): what a
    training reads forecasts from, as they were issued."""
    start, end = to_utc(request.start), to_utc(request.end)
    _check_span(start, end, quarter_hours=False)
    df = await run_in_threadpool(store.weather_forecasts, request.locations, start, end)
    out = io.BytesIO()
    df.to_parquet(out, index=False)
    return Response(out.getvalue(), media_type="application/vnd.apache.parquet")


@app.get("/devices/{device_id}/readings")
async def raw_readings(
    device_id: str, start: datetime = Query(...), end: datetime = Query(...)
) -> list[dict]:
    """Raw readings in [start, end], at most 7 days, as stored."""
    start, end = to_utc(start), to_utc(end)
    if not start <= end or end - start > timedelta(days=7):
        raise HTTPException(422, "need start <= end and at most 7 days")
    if await run_in_threadpool(store.device, device_id) is None:
        raise UnknownDevice(device_id)
    rows = await run_in_threadpool(store.stored_readings, [device_id], start, end)
    rows["timestamp"] = rows["timestamp"].map(isoformat_z)
    return json.loads(rows.sort_values("timestamp").to_json(orient="records"))


# -- ingest -----------------------------------------------------------------

def _ingest(df: pd.DataFrame, source: str, batch_id: str | None, row_offset: int = 0,
            payload: str = "") -> IngestReport:
    if len(df) > MAX_BATCH_ROWS:
        raise InvalidRequest(f"batch has {len(df):,} rows; send at most {MAX_BATCH_ROWS:,} per batch")
    with ingest_lock:
        report = ingest_batch(store, df, source=source, batch_id=batch_id, registry=registry,
                              row_offset=row_offset, payload=payload)
    for outcome in ("inserted", "duplicates", "already_stored", "quarantined"):
        metrics.INGEST_ROWS.labels(outcome).inc(getattr(report, outcome))
    if report.status == "rejected":
        metrics.INGEST_ROWS.labels("rejected").inc(report.rows)
    freshness.update(report.touched)
    return report


async def _frame_from_request(request: Request) -> tuple[pd.DataFrame, str | None]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body over {MAX_BODY_BYTES // 2**20} MiB; split the batch")
    batch_id = parse_batch_id(request.query_params.get("batch_id"))
    if kind in ("application/json", ""):
        try:
            doc = json.loads(body)
        except ValueError as e:
            raise InvalidRequest(f"body is not JSON: {e}") from None
        if not isinstance(doc, dict) or "readings" not in doc:
            raise InvalidRequest('expected {"batch_id": "...", "readings": [{...}, ...]}')
        return records_frame(doc["readings"]), parse_batch_id(doc.get("batch_id")) or batch_id
    if kind == "text/csv":
        try:
            df = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise InvalidRequest(f"body is not readable CSV: {e}") from None
        return df, batch_id
    if kind in ("application/vnd.apache.parquet", "application/x-parquet"):
        try:
            df = pd.read_parquet(io.BytesIO(body))
        except Exception as e:  # pyarrow raises several types for bad bytes
            raise InvalidRequest(f"body is not readable Parquet: {e}") from None
        return df, batch_id
    raise HTTPException(415, f"content-type {kind!r}: send application/json, text/csv or "
                             "application/vnd.apache.parquet")


def _public(report: IngestReport) -> dict:
    out = report.to_dict()
    out.pop("touched")
    return out


@app.post("/ingest")
async def ingest(request: Request, row_offset: int = Query(0, ge=0)) -> JSONResponse:
    """Validate and store a batch of readings; answers with the batch report
    (200), or 422 with the report when the batch is rejected as a whole."""
    df, batch_id = await _frame_from_request(request)
    try:
        report = await run_in_threadpool(_ingest, df, "http", batch_id, row_offset)
    except BatchConflict as e:
        raise HTTPException(409, str(e)) from None
    if report.status == "rejected":
        return JSONResponse({"detail": _public(report)}, status_code=422)
    try:
        await _refresh_actors(report)
    except sidecar.SidecarError as e:  # stored; the catch-up loop retries the refresh
        log.warning("batch %s stored; actor refresh failed: %s", report.batch_id, e)
    return JSONResponse(_public(report))


@app.get("/ingest/{batch_id:path}")
async def ingest_report(batch_id: str) -> dict:
    """The stored report of a batch, and its quarantined rows."""
    found = await run_in_threadpool(store.batch, batch_id)
    if found is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    q = await run_in_threadpool(store.quarantined, batch_id)
    report = json.loads(found["report"])
    report.pop("touched", None)
    refreshed = await run_in_threadpool(store.actors_refreshed_at, batch_id)
    return {"report": report, "quarantined_rows": q.to_dict(orient="records"),
            "actors_refreshed_at": isoformat_z(refreshed) if refreshed else None}


# -- weather ------------------------------------------------------------------

WEATHER_BATCH_KEYS = {"observed": "observations", "forecast": "forecasts"}


def _store_weather(frames: dict[str, pd.DataFrame]) -> dict:
    """Check every batch first, then store them: all or nothing."""
    parsed = {kind: parse_weather(df, kind) for kind, df in frames.items()}
    stored = {}
    for kind, rows in parsed.items():
        store.insert_weather(rows)
        metrics.WEATHER_ROWS.labels(kind).inc(len(rows))
        stored[WEATHER_BATCH_KEYS[kind]] = len(rows)
    locations = sorted({loc for rows in parsed.values() for loc in rows["location"].unique()})
    return {"stored": stored, "locations": locations,
            "dropped_copies": sum(len(frames[k]) - len(parsed[k]) for k in frames)}


def _weather_frames(doc: object) -> dict[str, pd.DataFrame]:
    if not isinstance(doc, dict) or not set(doc) & set(WEATHER_BATCH_KEYS.values()):
        raise InvalidRequest('expected {"observations": [...]} and/or {"forecasts": [...]}')
    return {kind: weather_frame(doc[key]) for kind, key in WEATHER_BATCH_KEYS.items() if key in doc}


@app.post("/ingest/weather")
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
        frames = {kind: (await _frame_from_request(request))[0]}
    return await run_in_threadpool(_store_weather, frames)


WEATHER_CHECK_SECONDS = 60.0


def check_weather_freshness() -> dict:
    """Which locations of the fleet's devices have no temperature forecast
    issued within `weather_forecast_max_age_hours`: the metric, and GET
    /weather-freshness. Their devices' forecasts say so in their notes."""
    now = datetime.now(UTC)
    limit = timedelta(hours=get_settings().weather_forecast_max_age_hours)
    locations = sorted({d["location"] for d in store.devices() if d.get("location")})
    newest = store.newest_forecasts(locations) if locations else {}
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


@app.get("/weather-freshness")
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
    devices = await run_in_threadpool(store.devices)
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


@app.post("/weather/pull")
async def weather_pull() -> dict:
    """Pull the weather provider's forecasts now (what the Dapr job does on
    its schedule)."""
    try:
        return await pull_weather()
    except (openmeteo.ProviderError, httpx.HTTPError) as e:
        raise HTTPException(502, f"the weather provider failed: {e}") from None


@app.post(f"/job/{WEATHER_JOB}")
async def scheduled_weather() -> dict:
    """The Dapr job's trigger: a pull; a failure is logged and counted
    (intraday_weather_pulls{outcome="failed"}), and the next run tries again."""
    try:
        return await pull_weather()
    except (InvalidRequest, openmeteo.ProviderError, httpx.HTTPError) as e:
        return {"error": str(e)}


@app.get("/dapr/subscribe")
async def subscriptions() -> list[dict]:
    return [{"pubsubname": sidecar.PUBSUB, "topic": "telemetry", "route": "/telemetry"},
            {"pubsubname": sidecar.PUBSUB, "topic": "weather", "route": "/weather-events"}]


@app.post("/weather-events")
async def on_weather(request: Request) -> dict:
    """A batch from the `weather` topic (`{"observations": [...],
    "forecasts": [...]}` as the CloudEvent's data). SUCCESS when stored,
    DROP (kept in the ingest ledger with its payload and reason) when it can
    never be, RETRY when the store failed."""
    event = await request.json()
    try:
        result = await run_in_threadpool(_store_weather, _weather_frames(event.get("data")))
    except InvalidRequest as e:
        await run_in_threadpool(record_unreadable, store, f"weather-invalid:{event.get('id', 'unknown')}",
                                "weather-stream", str(e), json.dumps(event))
        log.warning("dropped weather message %s: %s", event.get("id"), e)
        return {"status": "DROP"}
    log.info("weather message %s: %s", event.get("id"), result["stored"])
    return {"status": "SUCCESS"}


@app.post("/telemetry")
async def on_telemetry(request: Request) -> dict:
    """A batch from the `telemetry` topic. SUCCESS when stored (or stored
    before), DROP when it can never be stored (kept in the ingest ledger
    with its payload), RETRY when the store or an actor failed."""
    event = await request.json()
    data = event.get("data")
    try:
        if not isinstance(data, dict) or "readings" not in data:
            raise InvalidRequest('expected data {"batch_id": "...", "readings": [...]}')
        batch_id = parse_batch_id(data.get("batch_id")) or parse_batch_id(event.get("id"))
        df = records_frame(data["readings"])
        report = await run_in_threadpool(_ingest, df, "stream", batch_id, 0, json.dumps(data))
    except InvalidRequest as e:
        await run_in_threadpool(record_unreadable, store, f"stream-invalid:{event.get('id', 'unknown')}",
                                "stream", str(e), json.dumps(event))
        log.warning("dropped telemetry message %s: %s", event.get("id"), e)
        return {"status": "DROP"}
    except BatchConflict as e:
        log.error("dropped telemetry message %s: %s", event.get("id"), e)
        return {"status": "DROP"}
    if report.status == "rejected":
        log.warning("dropped telemetry batch %s: %s", report.batch_id, "; ".join(report.errors))
        return {"status": "DROP"}
    try:
        await _refresh_actors(report)
    except sidecar.SidecarError as e:
        log.warning("telemetry batch %s stored; actor refresh failed, retrying: %s", report.batch_id, e)
        return {"status": "RETRY"}
    return {"status": "SUCCESS"}


async def _refresh_actors(report: IngestReport) -> None:
    """Send the batch's new quarter-hour means to the touched devices'
    actors, and record that it was done."""
    await _refresh_spans(report.touched)
    await run_in_threadpool(store.mark_actors_refreshed, {report.batch_id: len(report.touched)})


async def _refresh_spans(touched: dict[str, list[str]]) -> None:
    """Send each device's quarter-hour means over its span [first, last] to
    its actor; only the part inside the window actors keep. One window
    query for all of them."""
    horizon = _actor_horizon()
    spans = {
        device_id: (max(datetime.fromisoformat(lo), horizon), datetime.fromisoformat(hi) + QUARTER_HOUR)
        for device_id, (lo, hi) in touched.items()
    }
    spans = {d: (a, b) for d, (a, b) in spans.items() if a < b}
    if not spans:
        return
    start = min(a for a, _ in spans.values())
    end = max(b for _, b in spans.values())
    fleet = await run_in_threadpool(store.fleet_window, start, end, list(spans))
    sem = asyncio.Semaphore(ACTOR_REFRESH_CONCURRENCY)

    async def one(row: int, device_id: str) -> None:
        a, b = spans[device_id]
        values = fleet.values[row, (a - start) // QUARTER_HOUR : (b - start) // QUARTER_HOUR]
        async with sem:
            await sidecar.call_actor_async("DeviceActor", device_id, "ExtendWindow", {
                "start": isoformat_z(a),
                "values": [None if math.isnan(v) else v for v in values.tolist()],
            })

    await asyncio.gather(*(one(row, str(d)) for row, d in enumerate(fleet.device_ids)))


def _actor_horizon() -> datetime:
    return floor_quarter_hour(datetime.now(UTC)) - timedelta(days=get_settings().history_days)


async def catch_up_actors() -> int:
    """Refresh the actors for every batch stored without it: written while
    this service was down (`intraday ingest FILE`, a generated fleet) or
    whose refresh failed. Spans of one device across batches are merged
    into one call. Returns the number of batches caught up."""
    pending = await run_in_threadpool(store.actors_pending, _actor_horizon())
    if not pending:
        return 0
    touched: dict[str, list[str]] = {}
    for batch in pending:
        for device_id, (lo, hi) in batch["touched"].items():
            old = touched.get(device_id)
            touched[device_id] = [min(old[0], lo), max(old[1], hi)] if old else [lo, hi]
    await _refresh_spans(touched)
    await run_in_threadpool(store.mark_actors_refreshed,
                            {b["batch_id"]: len(b["touched"]) for b in pending})
    log.info("caught up actor windows for %d batches, %d devices", len(pending), len(touched))
    return len(pending)


async def _catch_up_loop() -> None:
    """Catch up at start and every `CATCH_UP_SECONDS`. A failure (at start:
    the forecaster or placement not up yet) is retried sooner, backing off
    from 2 s."""
    delay = 2.0
    while True:
        try:
            while await catch_up_actors():
                pass
            delay = CATCH_UP_SECONDS
        except Exception as e:  # noqa: BLE001 - keep the loop alive, say why
            log.warning("actor catch-up failed, retrying in %.0f s: %s", delay, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, CATCH_UP_SECONDS)
            continue
        await asyncio.sleep(delay)