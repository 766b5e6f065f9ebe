"""Gateway: the public REST API. It authenticates every caller by API key
(`Authorization: Bearer <key>`, scopes per route: intraday/auth.py),
validates requests, then reaches the forecaster and telemetry services by
Dapr service invocation. The key's holder is what a forecast records as
`requested_by`."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, Path, Query, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from clients import sidecar
from intraday import auth
from intraday.audit import db
from intraday.config import get_settings
from intraday.errors import InvalidRequest
from intraday.telemetry.registry import new_change_id
from intraday.tokens import TokenKeysUnavailable, TokenVerifier
from intraday.trading.rules import check_tick_time
from services.gateway import dashboard, dead_letters, ratelimit
from services.http import BodyLimit, install_common
from workflows.contracts import ForecastRequest, TrainingRequest

log = logging.getLogger(__name__)
pool: ConnectionPool
# The largest body a caller may send: a fleet request naming 100,000
# devices is about 1.5 MB.
MAX_BODY_BYTES = 2 * 1024 * 1024


_tokens: TokenVerifier | None = None  # the identity provider's, when INTRADAY_JWT_JWKS_URL is set


@asynccontextmanager
async def lifespan(_: FastAPI):
    global pool, _tokens
    settings = get_settings()
    pool = ConnectionPool(settings.pg_dsn, min_size=1, max_size=4, open=True, kwargs={"autocommit": True})
    if settings.jwt_jwks_url:
        _tokens = TokenVerifier(settings.jwt_jwks_url, settings.jwt_issuer, settings.jwt_audience,
                                settings.jwt_scope_claim)
    yield
    pool.close()


class Problem(BaseModel):
    """Every error's body: the reason (a sentence; for a malformed request,
    FastAPI's list of what is wrong where; for a rejected ingest, its report)."""

    detail: str | list | dict


# Declared on every route, so that the schema says what errors look like
# (FastAPI would otherwise declare only its own 422 shape).
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem, "description": what} for code, what in (
    (400, "a path with encoded separators or dots, backslashes or dot segments"),
    (401, "no valid API key"), (403, "the key lacks the route's scope"), (404, "unknown device or forecast"),
    (413, "body too large"), (422, "invalid request, with the reason"),
    (429, "over the key's rate; see Retry-After"), (502, "a service behind the gateway failed"))}
app = FastAPI(title="intraday gateway", lifespan=lifespan, responses=ERRORS)
install_common(app, "gateway")
app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
_bearer = HTTPBearer(auto_error=False, description="an API key: `intraday keys create NAME --scopes ...`")
_verified: dict[bytes, tuple[float, auth.Principal]] = {}  # sha256(key) -> (when, principal)
_limiter = ratelimit.SharedRateLimiter()


def _principal(key: str) -> auth.Principal:
    """The caller's principal: an API key's, from PostgreSQL at most every
    `api_key_cache_seconds` per key (so a revoked key is refused within
    that); an identity provider's token's, from its claims."""
    if _tokens is not None and not auth.is_api_key(key):
        return _tokens.verify(key)
    settings = get_settings()
    digest = hashlib.sha256(key.encode()).digest()
    cached = _verified.get(digest)
    if cached is not None and time.monotonic() - cached[0] < settings.api_key_cache_seconds:
        return cached[1]
    with pool.connection() as conn:
        principal = auth.verify(conn, settings.api_key_pepper, key)
        auth.touch(conn, [principal.key_id])
    _verified[digest] = (time.monotonic(), principal)
    return principal


def scope(name: str):
    """A dependency: the caller's principal, if its key holds scope `name`."""
    # Security (a Depends) names the scope in the route's OpenAPI security requirement.
    async def caller(credentials: HTTPAuthorizationCredentials | None = Security(_bearer, scopes=[name]),
                     ) -> auth.Principal:
        if credentials is None:
            raise auth.AuthError("an API key (or an identity provider's token) is required: "
                                 "Authorization: Bearer <key>")
        principal = await run_in_threadpool(_principal, credentials.credentials)
        principal.require(name)
        await _limiter.take(principal.key_id, principal.rate_per_minute or get_settings().api_rate_per_minute)
        return principal
    return caller


ForecastRequester = Annotated[auth.Principal, Depends(scope("forecast:request"))]
ForecastReader = Annotated[auth.Principal, Depends(scope("forecast:read"))]
app.include_router(dashboard.router(scope("forecast:read"), lambda: pool))
app.include_router(dead_letters.router(scope("messages:admin"), lambda: pool))


@app.exception_handler(auth.AuthError)
async def _unauthenticated(_: Request, exc: auth.AuthError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


@app.exception_handler(auth.RateLimited)
async def _rate_limited(_: Request, exc: auth.RateLimited) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=429,
                        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))})


@app.exception_handler(TokenKeysUnavailable)
async def _keys_unavailable(_: Request, exc: TokenKeysUnavailable) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})


@app.exception_handler(auth.Forbidden)
async def _forbidden(_: Request, exc: auth.Forbidden) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=403)


class PriceTick(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price_eur_mwh: float = Field(allow_inf_nan=False)
    tick_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    """The feed's own id for the tick: the message is published under it, so
    a tick sent twice (a retried request) is decided once. Without it, each
    request is a tick of its own."""
    market: str = "DE-intraday"
    at: datetime | None = None

    @field_validator("at")
    @classmethod
    def _near_now(cls, at: datetime | None) -> datetime | None:
        """Within minutes of now (intraday.trading.rules.check_tick_time)."""
        if at is None:
            return None
        if at.tzinfo is None:
            raise ValueError("at needs a time zone (e.g. 2026-01-31T12:00:00Z)")
        return check_tick_time(at.astimezone(UTC), datetime.now(UTC))


def _relay(r) -> Response:
    return Response(r.content, status_code=r.status_code, media_type="application/json")


@app.post("/forecast/intraday")
async def forecast_intraday(
    body: ForecastRequest,
    caller: ForecastRequester,
    wait: bool = Query(False, description="wait for and return the finished forecast"),
    timeout: float = Query(60.0, gt=0, le=120),
) -> Response:
    """A device's forecast; `requested_by` is the caller's key holder."""
    r = await sidecar.invoke(
        "forecaster", "POST", "forecasts",
        params={"wait": str(wait).lower(), "timeout": timeout},
        content=body.model_copy(update={"requested_by": caller.name}).model_dump_json(exclude_none=True),
        headers={"content-type": "application/json"},
        timeout=timeout + 5,
    )
    return _relay(r)


@app.post("/forecast/fleet")
async def forecast_fleet(
    request: Request,
    caller: ForecastRequester,
    wait: bool = Query(False, description="wait for and return the finished portfolio forecast"),
    timeout: float = Query(60.0, gt=0, le=300),
) -> Response:
    """The portfolio of many devices (body `{devices?, forecast_start?,
    horizon_hours?}`; no devices: the whole fleet) as one workflow;
    validated by the forecaster; `requested_by` is the caller's key holder."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return JSONResponse({"detail": "the body is not JSON"}, status_code=422)
    if not isinstance(body, dict):
        return JSONResponse({"detail": "the body must be a JSON object"}, status_code=422)
    r = await sidecar.invoke(
        "forecaster", "POST", "fleet-forecasts",
        params={"wait": str(wait).lower(), "timeout": timeout},
        json={**body, "requested_by": caller.name},
        timeout=timeout + 5,
    )
    return _relay(r)


@app.get("/forecast/{forecast_id}")
async def get_forecast(
    _: ForecastReader,
    forecast_id: str = Path(max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
                            description="fc-... (a device forecast) or fl-... (a fleet forecast)"),
) -> Response:
    """`{forecast_id, status, result?, error?}`: `result` has the intervals, `model_version`,
    `data_window` and `trace_id` (the trace that made it). A finished forecast is read from the
    audit store (its workflow instance is purged 10 s after completion), one in progress or failed
    from its workflow."""
    return _relay(await sidecar.invoke("forecaster", "GET", f"forecasts/{forecast_id}"))


@app.post("/warm")
async def warm(request: Request, _: Annotated[auth.Principal, Depends(scope("models:admin"))]) -> Response:
    """Load the served model and the most-traded devices' actors ahead of a burst."""
    return _relay(await sidecar.invoke("forecaster", "POST", "warm", content=await request.body(),
                                       headers={"content-type": "application/json"}, timeout=300))


ModelsAdmin = Annotated[auth.Principal, Depends(scope("models:admin"))]


@app.post("/models/train")
async def train(
    body: TrainingRequest,
    caller: ModelsAdmin,
    wait: bool = Query(False, description="wait for and return the training's decision"),
    timeout: float = Query(900.0, gt=0, le=3600),
) -> Response:
    """Train a candidate on the telemetry window, score it and the served
    model on the same held-out days, promote it only if better (or `force`),
    and record the decision; `requested_by` is the caller's key holder."""
    r = await sidecar.invoke(
        "forecaster", "POST", "trainings", params={"wait": str(wait).lower(), "timeout": timeout},
        content=body.model_copy(update={"requested_by": caller.name}).model_dump_json(exclude_none=True),
        headers={"content-type": "application/json"}, timeout=timeout + 5)
    return _relay(r)


@app.get("/models/trainings/{training_id}")
async def get_training(
    _: ForecastReader,
    training_id: str = Path(max_length=200, pattern=r"^train-[A-Za-z0-9_.:-]+$"),
) -> Response:
    """A training's status while it runs, then its recorded decision."""
    return _relay(await sidecar.invoke("forecaster", "GET", f"trainings/{training_id}"))


@app.get("/models")
async def models(_: ForecastReader, limit: int = Query(20, ge=1, le=500)) -> Response:
    """Stored versions, the promoted one, and the latest trainings' decisions
    (champion and challenger, both sets of metrics)."""
    return _relay(await sidecar.invoke("forecaster", "GET", "models", params={"limit": limit}))


@app.get("/scores")
async def live_scores(_: ForecastReader) -> Response:
    """Live accuracy: the published forecasts of the last 7 delivery days
    scored against their readings (portfolio and device WAPE, bias,
    pinball and P10-P90 coverage, per day and per 6-hour horizon block;
    alerts when the week's portfolio coverage leaves 70-90 % or its bias
    passes 5 %), beside the served model's held-out scores from training."""
    return _relay(await sidecar.invoke("forecaster", "GET", "scores"))


@app.post("/scores/run")
async def run_scoring(_: ModelsAdmin) -> Response:
    """Score the published forecasts that are due now (the hourly job's
    work), and say how many were scored."""
    return _relay(await sidecar.invoke("forecaster", "POST", "scores/run", timeout=600))


@app.get("/devices")
async def devices(_: ForecastReader, include_retired: bool = Query(False)) -> Response:
    """The fleet's devices with their registry entries (retired ones too
    with `include_retired`)."""
    return _relay(await sidecar.invoke("telemetry", "GET", "devices",
                                       params={"include_retired": str(include_retired).lower()}))


FleetAdmin = Annotated[auth.Principal, Depends(scope("fleet:admin"))]
_SEND_KINDS = ("application/json", "text/csv", "application/vnd.apache.parquet", "application/x-parquet")


def _content_type(request: Request) -> str:
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind not in _SEND_KINDS:
        raise InvalidRequest(f"content-type {kind!r}: send application/json, text/csv or "
                             "application/vnd.apache.parquet")
    return kind


async def _registry_change(path: str, request: Request, caller: auth.Principal) -> Response:
    """Send a registry change to the telemetry service under a new change id
    and the caller's name, then record it in the audit store."""
    kind, change_id = _content_type(request), new_change_id()
    body, params = await request.body(), {"changed_by": caller.name, "change_id": change_id}
    if kind == "application/json":
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            return JSONResponse({"detail": "the body is not JSON"}, status_code=422)
        if not isinstance(doc, dict):
            return JSONResponse({"detail": "the body must be a JSON object"}, status_code=422)
        body = json.dumps({**doc, **params}).encode()
    r = await sidecar.invoke("telemetry", "POST", path, content=body, params=params,
                             headers={"content-type": kind}, timeout=120)
    if r.status_code == 200:
        change = r.json()
        try:
            await run_in_threadpool(_record_change, change)
        except psycopg.Error as e:  # applied: the rows carry the change id and who made it
            log.error("registry change %s applied, not recorded in the audit store: %s", change_id, e)
            change["audit"] = f"not recorded: {e}"
        return JSONResponse(change)
    return _relay(r)


def _record_change(change: dict) -> None:
    with pool.connection() as conn:
        db.record_device_change(conn, change)


@app.post("/devices")
async def register_devices(request: Request, caller: FleetAdmin) -> Response:
    """Add or update devices: `{"devices": [{device_id, location, latitude,
    longitude, country, building_type, heat_pump_type, rated_power_kw,
    heated_area_m2, setpoint_c, installed_date, tariff}]}`, or the same
    columns as CSV or Parquet. Absent values keep what is stored. Every row
    valid, or 422 naming each bad row, and nothing written."""
    return await _registry_change("devices", request, caller)


@app.post("/devices/retire")
async def retire_devices(request: Request, caller: FleetAdmin) -> Response:
    """`{"device_ids": [...], "at"?: time}`: they leave the fleet (and the
    portfolio) from `at` (default now); their history stays."""
    return await _registry_change("devices/retire", request, caller)


@app.get("/devices/freshness")
async def device_freshness(_: ForecastReader, limit: int = Query(20, ge=0, le=10_000)) -> Response:
    """How fresh the fleet's readings are: devices quiet for over an hour or
    a day, and the `limit` stalest devices with their newest reading."""
    return _relay(await sidecar.invoke("telemetry", "GET", "portfolio/freshness", params={"limit": limit}))


# A device id as the registry takes it (a NUL byte, say, would reach the
# audit store's JSON and fail there: a 500 the fuzzer found).
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


@app.get("/devices/changes")
async def device_changes(_: ForecastReader,
                         device_id: str | None = Query(None, max_length=64, pattern=DEVICE_ID_PATTERN),
                         limit: int = Query(50, ge=1, le=1000)) -> list[dict]:
    """Who changed the registry, when and what: the latest changes, or
    those of one device."""
    def read() -> list[dict]:
        with pool.connection() as conn:
            return db.read_device_changes(conn, device_id, limit)
    return await run_in_threadpool(read)


@app.post("/readings")
async def send_readings(request: Request, _: Annotated[auth.Principal, Depends(scope("readings:write"))],
                        batch_id: str | None = Query(None, max_length=200),
                        row_offset: int = Query(0, ge=0, description="the batch's first row in its "
                                                "file (a chunk of one), for the rows the report names"),
                        ) -> Response:
    """Meter readings into the telemetry store: `{"batch_id"?, "readings":
    [{device_id, timestamp, power, ...}]}`, or CSV or Parquet; the batch
    report (rows quarantined with their reasons), 422 when it is refused."""
    params: dict[str, str | int] = {"batch_id": batch_id} if batch_id else {}
    if row_offset:
        params["row_offset"] = row_offset
    return _relay(await sidecar.invoke("telemetry", "POST", "ingest", content=await request.body(),
                                       params=params, headers={"content-type": _content_type(request)},
                                       timeout=120))


WeatherWriter = Annotated[auth.Principal, Depends(scope("weather:write"))]


async def _weather(request: Request, kind: str) -> Response:
    content = _content_type(request)
    body = await request.body()
    if content == "application/json":
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            return JSONResponse({"detail": "the body is not JSON"}, status_code=422)
        key = "observations" if kind == "observed" else "forecasts"
        if not isinstance(doc, dict) or set(doc) != {key}:
            return JSONResponse({"detail": f'expected {{"{key}": [...]}}'}, status_code=422)
    return _relay(await sidecar.invoke("telemetry", "POST", "ingest/weather", content=body,
                                       params={"kind": kind}, headers={"content-type": content},
                                       timeout=120))


@app.post("/weather")
async def send_weather(request: Request, _: WeatherWriter) -> Response:
    """Observed temperatures: `{"observations": [{location (or latitude and
    longitude), timestamp, outdoor_temp_c}]}`, or CSV or Parquet."""
    return await _weather(request, "observed")


@app.post("/weather-forecasts")
async def send_weather_forecasts(request: Request, _: WeatherWriter) -> Response:
    """Issued temperature forecasts: `{"forecasts": [{location (or latitude
    and longitude), issued_at, timestamp, outdoor_temp_c}]}`, or CSV or
    Parquet. A forecast for T issued at I is used only by forecasts that
    start after I."""
    return await _weather(request, "forecast")


@app.post("/prices", status_code=202)
async def publish_price(tick: PriceTick,
                        _: Annotated[auth.Principal, Depends(scope("prices:publish"))]) -> dict:
    """Put a price tick on the `prices` topic (simulated feeds, feed adapters)."""
    message_id = f"tick-{tick.tick_id}" if tick.tick_id else None
    await sidecar.publish_async("prices", tick.model_dump(mode="json", exclude_none=True),
                                message_id=message_id)
    return {"published": True, "message_id": message_id}


@app.exception_handler(sidecar.SidecarError)
async def _sidecar_error(_: Request, exc: sidecar.SidecarError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=502)
