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
import json
import logging
import math
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pandas as pd
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from clients import metrics, sidecar
from intraday import failpoints
from intraday.config import get_settings
from intraday.errors import BatchConflict, InvalidRequest, UnknownDevice
from intraday.telemetry import window_batch
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
from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, isoformat_z, to_utc
from services.http import install_common
from services.telemetry import state
from services.telemetry.inputs import (
    MAX_BATCH_DEVICES,
    MAX_BATCH_ROWS,
    READINGS_FIELDS,
    check_span,
    frame_from_request,
    only_fields,
)
from services.telemetry.routes import weather as weather_routes
from services.telemetry.routes.weather import (
    WEATHER_JOB,
    _store_weather,
    _weather_frames,
    _weather_freshness_loop,
)

log = logging.getLogger(__name__)
ACTOR_REFRESH_CONCURRENCY = 16
CATCH_UP_SECONDS = 30.0


@asynccontextmanager
async def lifespan(_: FastAPI):
    state.store = TelemetryStore.from_settings(get_settings())
    state.store.migrate()
    state.registry = DeviceRegistry(state.store)
    await run_in_threadpool(state.freshness.seed, state.store)
    catch_up = asyncio.create_task(_catch_up_loop())
    weather = asyncio.create_task(_weather_freshness_loop())
    settings = get_settings()
    if settings.weather_provider_url:
        asyncio.create_task(sidecar.schedule_job(WEATHER_JOB, settings.weather_schedule, {"pull": "weather"}))
    yield
    catch_up.cancel()
    weather.cancel()
    state.store.close()


app = FastAPI(title="intraday telemetry", lifespan=lifespan)
install_common(app, "telemetry")
app.include_router(weather_routes.router)


@app.exception_handler(Refused)
async def _refused(_: Request, exc: Refused) -> JSONResponse:
    return JSONResponse({"detail": exc.detail()}, status_code=422)


@app.get("/devices")
async def devices(request: Request, include_retired: bool = Query(False)) -> Response:
    """The fleet's devices (retired ones too with `include_retired`). The
    ETag follows the registry: a request with `If-None-Match` gets 304 while
    nothing changed (the forecaster re-validates its list every few seconds)."""
    version = await run_in_threadpool(state.store.registry_version)
    etag = '"' + hashlib.sha256(f"{version}/{include_retired}".encode()).hexdigest()[:24] + '"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"etag": etag})
    rows = await run_in_threadpool(state.store.devices, include_retired)
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
    state.registry._refresh()
    state.freshness.devices = {d["device_id"] for d in state.store.devices()}


def _apply(change, *args):
    with state.registry_lock:
        result = change(state.store, *args)
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
        only_fields(doc, ("devices", "changed_by", "change_id"), "a devices change")
        df = pd.DataFrame.from_records(doc["devices"]).astype(object)
    else:
        df, _ = await frame_from_request(request)
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
    found = await run_in_threadpool(state.store.device, device_id)
    if found is None:
        raise UnknownDevice(device_id)
    return found


@app.get("/devices/{device_id}/window")
async def window(device_id: str, start: datetime = Query(...), end: datetime = Query(...)) -> dict:
    """Mean power (kW) per quarter-hour in [start, end); null marks a gap."""
    start, end = to_utc(start), to_utc(end)
    check_span(start, end)
    w = await run_in_threadpool(state.store.window, device_id, start, end)
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
    check_span(start, end)
    cut = to_utc(request.cut) if request.cut is not None else start
    if not start <= cut < end or (cut - start) % QUARTER_HOUR:
        raise HTTPException(422, "cut must be a quarter-hour step from start, before end")
    try:
        ids = [check_device_id(d) for d in request.device_ids]
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
    fleet, first, missing = await run_in_threadpool(state.store.recent_windows, start, cut, end, ids)
    return Response(window_batch.encode(fleet, first, missing, cut > start),
                    media_type=window_batch.MEDIA_TYPE)


@app.get("/portfolio/actuals")
async def portfolio_actuals(start: datetime = Query(...), end: datetime = Query(...)) -> dict:
    """The fleet's measured total per quarter-hour in [start, end) (kW, the
    sum of the devices' means) and how many devices it holds; null where no
    device reported yet."""
    start, end = to_utc(start), to_utc(end)
    check_span(start, end)
    total, devices = await run_in_threadpool(state.store.portfolio_actuals, start, end)
    return {"start": isoformat_z(start), "freq": "15min",
            "total_kw": [None if math.isnan(v) else round(v, 3) for v in total.tolist()],
            "devices": devices.tolist()}


@app.get("/portfolio/freshness")
async def portfolio_freshness(limit: int = Query(20, ge=0, le=10_000)) -> dict:
    """How fresh the fleet's readings are: devices quiet for over an hour or
    a day, and the stalest devices with the end of their newest reading."""
    return state.freshness.report(limit)


@app.get("/devices/{device_id}/readings")
async def raw_readings(
    device_id: str, start: datetime = Query(...), end: datetime = Query(...)
) -> list[dict]:
    """Raw readings in [start, end], at most 7 days, as stored."""
    start, end = to_utc(start), to_utc(end)
    if not start <= end or end - start > timedelta(days=7):
        raise HTTPException(422, "need start <= end and at most 7 days")
    if await run_in_threadpool(state.store.device, device_id) is None:
        raise UnknownDevice(device_id)
    rows = await run_in_threadpool(state.store.stored_readings, [device_id], start, end)
    rows["timestamp"] = rows["timestamp"].map(isoformat_z)
    return json.loads(rows.sort_values("timestamp").to_json(orient="records"))


# -- ingest -----------------------------------------------------------------

def _ingest(df: pd.DataFrame, source: str, batch_id: str | None, row_offset: int = 0,
            payload: str = "") -> IngestReport:
    if len(df) > MAX_BATCH_ROWS:
        raise InvalidRequest(f"batch has {len(df):,} rows; send at most {MAX_BATCH_ROWS:,} per batch")
    with state.ingest_lock:
        report = ingest_batch(state.store, df, source=source, batch_id=batch_id, registry=state.registry,
                              row_offset=row_offset, payload=payload)
    for outcome in ("inserted", "duplicates", "already_stored", "quarantined"):
        metrics.INGEST_ROWS.labels(outcome).inc(getattr(report, outcome))
    if report.status == "rejected":
        metrics.INGEST_ROWS.labels("rejected").inc(report.rows)
    state.freshness.update(report.touched)
    return report


def _public(report: IngestReport) -> dict:
    out = report.to_dict()
    out.pop("touched")
    return out


@app.post("/ingest")
async def ingest(request: Request, row_offset: int = Query(0, ge=0)) -> JSONResponse:
    """Validate and store a batch of readings; answers with the batch report
    (200), or 422 with the report when the batch is rejected as a whole."""
    df, batch_id = await frame_from_request(request)
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
    found = await run_in_threadpool(state.store.batch, batch_id)
    if found is None:
        raise HTTPException(404, f"no batch {batch_id!r}")
    q = await run_in_threadpool(state.store.quarantined, batch_id)
    report = json.loads(found["report"])
    report.pop("touched", None)
    refreshed = await run_in_threadpool(state.store.actors_refreshed_at, batch_id)
    return {"report": report, "quarantined_rows": q.to_dict(orient="records"),
            "actors_refreshed_at": isoformat_z(refreshed) if refreshed else None}


# -- weather ------------------------------------------------------------------


@app.get("/dapr/subscribe")
async def subscriptions() -> list[dict]:
    # A message refused (DROP) or failed until the sidecar's retries run out
    # goes to `dead-letter` (services/gateway/dead_letters.py).
    return [{"pubsubname": sidecar.PUBSUB, "topic": "telemetry", "route": "/telemetry",
             "deadLetterTopic": sidecar.DEAD_LETTER_TOPIC},
            {"pubsubname": sidecar.PUBSUB, "topic": "weather", "route": "/weather-events",
             "deadLetterTopic": sidecar.DEAD_LETTER_TOPIC}]


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
        await run_in_threadpool(record_unreadable, state.store,
                                f"weather-invalid:{event.get('id', 'unknown')}",
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
    failpoints.reach(failpoints.TELEMETRY_ON_BATCH)
    event = await request.json()
    data = event.get("data")
    try:
        if not isinstance(data, dict) or "readings" not in data:
            raise InvalidRequest('expected data {"batch_id": "...", "readings": [...]}')
        only_fields(data, READINGS_FIELDS, "a readings message")
        batch_id = parse_batch_id(data.get("batch_id")) or parse_batch_id(event.get("id"))
        df = records_frame(data["readings"])
        report = await run_in_threadpool(_ingest, df, "stream", batch_id, 0, json.dumps(data))
    except InvalidRequest as e:
        await run_in_threadpool(record_unreadable, state.store,
                                f"stream-invalid:{event.get('id', 'unknown')}",
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
    await run_in_threadpool(state.store.mark_actors_refreshed, {report.batch_id: len(report.touched)})


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
    fleet = await run_in_threadpool(state.store.fleet_window, start, end, list(spans))
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
    pending = await run_in_threadpool(state.store.actors_pending, _actor_horizon())
    if not pending:
        return 0
    touched: dict[str, list[str]] = {}
    for batch in pending:
        for device_id, (lo, hi) in batch["touched"].items():
            old = touched.get(device_id)
            touched[device_id] = [min(old[0], lo), max(old[1], hi)] if old else [lo, hi]
    await _refresh_spans(touched)
    await run_in_threadpool(state.store.mark_actors_refreshed,
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