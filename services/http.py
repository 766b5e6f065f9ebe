"""What every service's HTTP app shares: domain errors as 4xx with a reason,
a /health endpoint, /metrics (Prometheus) with a request-latency histogram
per route, server spans (OpenTelemetry) and JSON logs."""

from __future__ import annotations

import hmac
import logging
import os
import re
import time

import aiohttp
import grpc
import httpx
import orjson
import psycopg
import psycopg_pool
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from clients import tracing
from clients.metrics import REQUEST_SECONDS
from intraday.errors import InsufficientHistory, InvalidRequest, UnknownDevice


class FastJSONResponse(JSONResponse):
    """JSON written by orjson: a forecast's view (96 intervals) takes the
    standard library about 1 ms, a second of the forecaster's GIL for 1,000
    concurrent requests (py-spy, bench/load.py's concurrent scenario), and
    orjson a twentieth of that. The same JSON but for float formatting and
    whitespace; NaN, which the standard response refuses, becomes null."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def install_common(app: FastAPI, service: str) -> None:

    @app.exception_handler(UnknownDevice)
    async def _unknown_device(_: Request, exc: UnknownDevice) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(InvalidRequest)
    @app.exception_handler(InsufficientHistory)
    async def _invalid(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(ValueError)
    async def _value_error(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(httpx.HTTPError)
    @app.exception_handler(aiohttp.ClientError)
    @app.exception_handler(grpc.RpcError)
    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg_pool.PoolTimeout)
    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        # A dependency (a peer service, the sidecar, the workflow engine, the
        # database) did not answer: nothing was done; the caller may retry.
        details = getattr(exc, "details", None)
        reason = (details() if callable(details) else str(exc)) or type(exc).__name__
        logging.getLogger(service).warning("dependency unavailable: %s", reason[:300])
        return JSONResponse({"detail": f"{service}: a dependency is unavailable ({reason[:300]}); "
                                       "nothing was done, try again"},
                            status_code=503, headers={"retry-after": "5"})

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the service answers (no key needed)."""
        return {"status": "ok", "service": service}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    if service != "gateway":  # the gateway's callers are people, with API keys
        app.add_middleware(_FromSidecarOnly)
    app.add_middleware(_RequestMetrics, service=service)
    tracing.instrument_app(app)
    app.add_middleware(PlainPathsOnly)  # added last: the outermost, before anything reads the path


class _RequestMetrics:
    """Pure ASGI middleware (no per-request task, unlike BaseHTTPMiddleware):
    observes each request's duration under its route template, so
    /forecast/{forecast_id} is one series, not one per id."""

    def __init__(self, app, service: str):
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            if path != "/metrics":
                REQUEST_SECONDS.labels(self.service, scope["method"], path, str(status["code"])) \
                    .observe(time.perf_counter() - t0)


OPEN_PATHS = ("/health", "/metrics")  # probes and scrapes


class PlainPathsOnly:
    """400 for a path with an encoded separator or dot (`%2F`, `%5C`,
    `%2E`), a backslash, or a dot segment (`/./`, `/../`), before routing
    and before anything else reads the path. Dapr 1.18.2's access-control
    policies match path prefixes, and such paths can slip past them (fixed
    upstream only in 1.18.6); no route of this project needs them."""

    ENCODED = re.compile(rb"%2[fFeE]|%5[cC]|\\")

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            raw = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
            if self.ENCODED.search(raw) or any(s in (b".", b"..") for s in raw.split(b"/")):
                return await JSONResponse(
                    {"detail": "the path may not hold encoded separators or dots (%2F, %5C, %2E), "
                               "backslashes or dot segments"}, status_code=400)(scope, receive, send)
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a request body over `max_bytes`, announced (Content-Length)
    or streamed, before the app reads it whole."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        await JSONResponse({"detail": f"request body over {self.max_bytes:,} bytes"},
                           status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    pass


class _FromSidecarOnly:
    """With APP_API_TOKEN set, the app answers only calls that carry it in
    `dapr-api-token`, as its sidecar's do (it sends the token on every call
    to the app): 401 otherwise. Probes and scrapes stay open."""

    def __init__(self, app):
        self.app = app
        token = os.environ.get("APP_API_TOKEN")
        self.token = token.encode() if token else None

    async def __call__(self, scope, receive, send):
        if self.token is None or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        presented = dict(scope["headers"]).get(b"dapr-api-token", b"")
        if hmac.compare_digest(presented, self.token):
            return await self.app(scope, receive, send)
        await JSONResponse({"detail": "only this app's Dapr sidecar may call it (app API token)"},
                           status_code=401)(scope, receive, send)


def serve(service: str, port: int) -> None:
    """Run `services.<service>.app:app` on `port` (INTRADAY_APP_PORT: another
    replica's, scripts/stack.sh): its secrets read from the secret
    store first (they are settings), then tracing and logging set up
    before the app module is imported (so every client it makes is traced)."""
    import uvicorn

    from clients import secrets
    from intraday.config import get_settings

    loaded = secrets.load(service)
    get_settings.cache_clear()
    tracing.setup(service)
    if loaded:
        logging.getLogger(service).info("settings %s from the secret store %s", ", ".join(loaded),
                                        os.environ["INTRADAY_SECRET_STORE"])
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    port = int(os.environ.get("INTRADAY_APP_PORT") or port)
    uvicorn.run(f"services.{service}.app:app", host=get_settings().http_host, port=port, log_config=None,
                access_log=False)
