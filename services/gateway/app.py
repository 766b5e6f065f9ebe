"""Gateway: the public REST API. It validates requests, then reaches the
forecaster and telemetry services by Dapr service invocation."""

from __future__ import annotations

from datetime import datetime

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services import sidecar
from services.http import install_common
from workflows.contracts import ForecastRequest

app = FastAPI(title="intraday gateway")
install_common(app, "gateway")


class PriceTick(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price_eur_mwh: float = Field(allow_inf_nan=False)
    market: str = "DE-intraday"
    at: datetime | None = None


def _relay(r) -> Response:
    return Response(r.content, status_code=r.status_code, media_type="application/json")


@app.post("/forecast/intraday")
async def forecast_intraday(
    body: ForecastRequest,
    wait: bool = Query(False, description="wait for and return the finished forecast"),
    timeout: float = Query(60.0, gt=0, le=120),
) -> Response:
    r = await sidecar.invoke(
        "forecaster", "POST", "forecasts",
        params={"wait": str(wait).lower(), "timeout": timeout},
        content=body.model_dump_json(exclude_none=True),
        headers={"content-type": "application/json"},
        timeout=timeout + 5,
    )
    return _relay(r)


@app.post("/forecast/fleet")
async def forecast_fleet(
    request: Request,
    wait: bool = Query(False, description="wait for and return the finished portfolio forecast"),
    timeout: float = Query(60.0, gt=0, le=300),
) -> Response:
    """The portfolio of many devices (body `{devices?, forecast_start?,
    horizon_hours?, requested_by?}`; no devices: the whole fleet) as one
    workflow; validated by the forecaster."""
    r = await sidecar.invoke(
        "forecaster", "POST", "fleet-forecasts",
        params={"wait": str(wait).lower(), "timeout": timeout},
        content=await request.body(), headers={"content-type": "application/json"},
        timeout=timeout + 5,
    )
    return _relay(r)


@app.get("/forecast/{forecast_id}")
async def get_forecast(forecast_id: str) -> Response:
    return _relay(await sidecar.invoke("forecaster", "GET", f"forecasts/{forecast_id}"))


@app.post("/warm")
async def warm(request: Request) -> Response:
    """Load the served model and the most-traded devices' actors ahead of a burst."""
    return _relay(await sidecar.invoke("forecaster", "POST", "warm", content=await request.body(),
                                       headers={"content-type": "application/json"}, timeout=300))


@app.get("/devices")
async def devices() -> Response:
    return _relay(await sidecar.invoke("telemetry", "GET", "devices"))


@app.post("/prices", status_code=202)
async def publish_price(tick: PriceTick) -> dict:
    """Put a price tick on the `prices` topic (simulated feeds, feed adapters)."""
    await sidecar.publish_async("prices", tick.model_dump(mode="json", exclude_none=True))
    return {"published": True}


@app.exception_handler(sidecar.SidecarError)
async def _sidecar_error(_: Request, exc: sidecar.SidecarError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=502)
