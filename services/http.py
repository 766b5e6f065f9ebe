"""What every service's HTTP app shares: domain errors as 4xx with a reason,
and a /health endpoint."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from intraday.errors import InsufficientHistory, InvalidRequest, UnknownDevice


def install_common(app: FastAPI, service: str) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"
    )

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

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "service": service}


def serve(app_path: str, port: int) -> None:
    import uvicorn

    uvicorn.run(app_path, host="127.0.0.1", port=port, log_level="warning", access_log=False)
