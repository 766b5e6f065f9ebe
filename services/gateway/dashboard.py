"""The trader's dashboard at `/ui`: one page (services/gateway/ui/) drawn
with Plotly (its JavaScript served from the `plotly` package, no CDN) over
four JSON routes, each needing `forecast:read` like the API:

- `GET /ui/api/overview`: the latest portfolio forecast with its band, the
  fleet's measured total over the same span, positions, the latest
  decisions (the newest with its orders), the price feed with the ticks
  that moved the rule, the served model and the latest trainings.
- `GET /ui/api/devices/{id}`: a device's latest forecast against its readings.
- `GET /ui/api/freshness`: how many devices are quiet, and the stalest ones.
- `GET /ui/api/events`: server-sent events when a fleet forecast, a
  decision, a price tick or a training is recorded.

Live updates come from the audit store, not from pub/sub: a gateway
subscribing to `orders` would share the messages with its other replicas
(one consumer group per app id), so a page on one replica would miss what
another received. One watcher per replica reads the newest ids every
second while a page listens, whatever the number of pages; the overview is
built once per change for all of them. Everything drawn is an aggregate
(the portfolio, not 10,000 lines), so the page is the same at any fleet size.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from importlib import metadata, resources
from pathlib import Path as FilePath
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from psycopg_pool import ConnectionPool

from clients import sidecar
from intraday.audit import dashboard as reads
from intraday.errors import UnknownDevice
from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, isoformat_z

log = logging.getLogger("gateway.dashboard")
UI = FilePath(__file__).with_name("ui")
PLOTLY_VERSION = metadata.version("plotly")
PLOTLY_JS = resources.files("plotly") / "package_data" / "plotly.min.js"
WATCH_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
MODEL_CACHE_SECONDS = 30.0
ACTUALS_CACHE_SECONDS = 15.0
HISTORY = timedelta(hours=24)  # readings drawn before the forecast starts


class Watcher:
    """Reads what changed last (`reads.marks`) every WATCH_SECONDS while
    anyone listens, and hands each change to every listener."""

    def __init__(self, read_marks: Callable[[], dict]):
        self._read = read_marks
        self._listeners: set[asyncio.Queue] = set()
        self._task: asyncio.Task | None = None
        self.marks: dict | None = None

    async def listen(self) -> AsyncIterator[str]:
        queue: asyncio.Queue = asyncio.Queue(maxsize=64)
        self._listeners.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        try:
            yield _event("hello", {"marks": self.marks})
            while True:
                try:
                    kind, data = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield _event(kind, data)
        finally:
            self._listeners.discard(queue)

    async def _run(self) -> None:
        while self._listeners:
            marks: dict | None
            try:
                marks = await run_in_threadpool(self._read)
            except Exception as e:  # the database restarting: try again, say nothing to the pages
                log.warning("dashboard watcher: %s", str(e)[:200])
                marks = self.marks
            if self.marks is not None and marks is not None:
                for kind, value in marks.items():
                    if value is not None and value != self.marks.get(kind):
                        self._publish(kind, {"id": value})
            self.marks = marks
            await asyncio.sleep(WATCH_SECONDS)

    def _publish(self, kind: str, data: dict) -> None:
        for queue in list(self._listeners):
            if queue.full():  # a page that does not read: it loses its oldest event, not the others
                queue.get_nowait()
            queue.put_nowait((kind, data))


def _event(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


class _Timed:
    """A value fetched at most every `seconds` (per key)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._values: dict = {}

    async def get(self, key, fetch):
        hit = self._values.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.seconds:
            return hit[1]
        value = await fetch()
        self._values = {key: (time.monotonic(), value)}
        return value


def router(reader: Any, pool: Callable[[], ConnectionPool]) -> APIRouter:
    """The dashboard's routes; `reader` is the gateway's `forecast:read`
    dependency, `pool` its audit database pool."""
    api = APIRouter()
    caller = Depends(reader)  # (no Annotated alias: these annotations are strings, resolved at module level)

    def read(fn, *args):
        with pool().connection() as conn:
            return fn(conn, *args)

    watcher = Watcher(lambda: read(reads.marks))
    models, actuals = _Timed(MODEL_CACHE_SECONDS), _Timed(ACTUALS_CACHE_SECONDS)
    scored = _Timed(MODEL_CACHE_SECONDS)  # new with a training or a scoring run (its mark)
    built: dict = {}
    building = asyncio.Lock()

    @api.get("/ui", include_in_schema=False)
    @api.get("/ui/", include_in_schema=False)
    async def page() -> HTMLResponse:
        html = (UI / "index.html").read_text().replace("{{PLOTLY_VERSION}}", PLOTLY_VERSION)
        return HTMLResponse(html, headers={"cache-control": "no-cache"})

    @api.get(f"/ui/static/plotly-{PLOTLY_VERSION}.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        return FileResponse(str(PLOTLY_JS), media_type="text/javascript",
                            headers={"cache-control": "public, max-age=31536000, immutable"})

    @api.get("/ui/static/{name}", include_in_schema=False)
    async def static(name: str = Path(pattern=r"^[a-z]+\.(js|css)$")) -> FileResponse:
        path = UI / name
        if not path.is_file():
            raise HTTPException(404, f"no file {name!r} in the dashboard")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return FileResponse(str(path), media_type=media, headers={"cache-control": "no-cache"})

    async def _model() -> dict:
        r = await sidecar.invoke("forecaster", "GET", "models", params={"limit": 5})
        if not r.is_success:
            return {"error": f"the forecaster answered {r.status_code}"}
        listing = r.json()
        manifest = next((m for m in listing["models"] if m.get("version") == listing["promoted"]), None)
        summary = None
        if manifest is not None:
            t = manifest.get("training", {})
            summary = {"version": manifest["version"], "created_at": manifest.get("created_at"),
                       "devices": t.get("devices"), "data_start": t.get("data_start"),
                       "data_end": t.get("data_end"), "holdout": t.get("holdout"),
                       "validation": manifest.get("validation", {}).get("full_history")}
        return {"promoted": listing["promoted"], "served": summary, "versions": len(listing["models"]),
                "trainings": listing["trainings"]}

    async def _live() -> dict:
        r = await sidecar.invoke("forecaster", "GET", "scores")
        return r.json() if r.is_success else {"error": f"the forecaster answered {r.status_code}"}

    async def _actuals(start: datetime, end: datetime) -> dict | None:
        r = await sidecar.invoke("telemetry", "GET", "portfolio/actuals",
                                 params={"start": isoformat_z(start), "end": isoformat_z(end)})
        return r.json() if r.is_success else None

    async def _overview() -> dict:
        now = datetime.now(UTC)
        marks = await run_in_threadpool(read, reads.marks)
        key = tuple(marks.values())
        async with building:
            hit = built.get("value")
            if hit is not None and hit[0] == key and time.monotonic() - hit[1] < ACTUALS_CACHE_SECONDS:
                return hit[2]
            portfolio = await run_in_threadpool(read, reads.latest_portfolio)
            if portfolio is not None:
                start = datetime.fromisoformat(portfolio["forecast_start"])
                end = start + portfolio["horizon_intervals"] * QUARTER_HOUR
            else:
                start = floor_quarter_hour(now)
                end = start + timedelta(hours=24)
            shown = start - HISTORY
            until = min(end, floor_quarter_hour(now) + QUARTER_HOUR)
            decisions, positions, prices = await asyncio.gather(
                run_in_threadpool(read, reads.decisions, 20),
                run_in_threadpool(read, reads.positions, shown, end),
                run_in_threadpool(read, reads.prices, 300))
            value = {
                "now": isoformat_z(now), "marks": marks, "window": [isoformat_z(shown), isoformat_z(end)],
                "portfolio": portfolio,
                "actuals": await actuals.get((shown, until), lambda: _actuals(shown, until)),
                "positions": positions, "decisions": decisions, "prices": prices,
                "model": await models.get(marks["training"], _model),
                "scores": await scored.get((marks["training"], marks["scores"]), _live),
            }
            built["value"] = (key, time.monotonic(), value)
            return value

    @api.get("/ui/api/overview")
    async def overview(_=caller) -> JSONResponse:
        """The dashboard's page data: portfolio, actuals, positions, decisions, prices, model."""
        return JSONResponse(await _overview())

    @api.get("/ui/api/devices/{device_id}")
    async def device(
        device_id: str = Path(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"), _=caller,
    ) -> JSONResponse:
        """A device's registry entry, its latest forecast and the readings around it."""
        known = await sidecar.invoke("telemetry", "GET", f"devices/{device_id}")
        if known.status_code == 404:
            raise UnknownDevice(device_id)
        forecast = await run_in_threadpool(read, reads.latest_device_forecast, device_id)
        now = datetime.now(UTC)
        if forecast is not None:
            start = datetime.fromisoformat(forecast["forecast_start"])
            end = start + forecast["horizon_intervals"] * QUARTER_HOUR
        else:
            start, end = floor_quarter_hour(now), floor_quarter_hour(now) + timedelta(hours=24)
        shown, until = start - HISTORY, min(end, floor_quarter_hour(now) + QUARTER_HOUR)
        window = await sidecar.invoke("telemetry", "GET", f"devices/{device_id}/window",
                                      params={"start": isoformat_z(shown), "end": isoformat_z(until)})
        return JSONResponse({"device": known.json(), "forecast": forecast,
                             "actuals": window.json() if window.is_success else None})

    @api.get("/ui/api/freshness")
    async def freshness(_=caller) -> JSONResponse:
        """The fleet's quiet and never-reporting devices, for the dashboard."""
        r = await sidecar.invoke("telemetry", "GET", "portfolio/freshness", params={"limit": 12})
        return JSONResponse(r.json(), status_code=200 if r.is_success else 502)

    @api.get("/ui/api/events", include_in_schema=False)  # endless: not for schema-driven clients
    async def events(_=caller) -> StreamingResponse:
        return StreamingResponse(watcher.listen(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    return api
