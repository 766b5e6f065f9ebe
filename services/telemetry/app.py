"""Telemetry service: owns the time-series store (chDB opens its path in one
process only) and answers fleet and window queries."""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from fastapi import FastAPI, HTTPException, Query
from fastapi.concurrency import run_in_threadpool

from intraday.config import get_settings
from intraday.errors import UnknownDevice
from intraday.telemetry.store import TelemetryStore
from intraday.timeutil import is_quarter_hour, isoformat_z, to_utc
from services.http import install_common

MAX_WINDOW = timedelta(days=400)
store: TelemetryStore


@asynccontextmanager
async def lifespan(_: FastAPI):
    global store
    store = TelemetryStore.from_settings(get_settings())
    store.migrate()
    yield
    store.close()


app = FastAPI(title="intraday telemetry", lifespan=lifespan)
install_common(app, "telemetry")


@app.get("/devices")
async def devices() -> list[dict]:
    return await run_in_threadpool(store.devices)


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
    if not (is_quarter_hour(start) and is_quarter_hour(end)):
        raise HTTPException(422, "start and end must be on quarter-hour boundaries")
    if not start < end or end - start > MAX_WINDOW:
        raise HTTPException(422, f"need start < end and at most {MAX_WINDOW.days} days")
    w = await run_in_threadpool(store.window, device_id, start, end)
    return {
        "device_id": device_id,
        "start": isoformat_z(w.start),
        "freq": "15min",
        "values": [None if math.isnan(v) else v for v in w.values.tolist()],
    }
