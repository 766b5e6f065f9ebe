"""Wire contracts of the forecast workflow: what it takes and returns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ForecastJob(BaseModel):
    """Input of `forecast_workflow` and of each of its activities."""

    model_config = ConfigDict(frozen=True)

    forecast_id: str
    device_id: str
    forecast_start: str  # ISO 8601, UTC
    horizon_intervals: int
    model_version: str
    requested_by: str
    requested_at: str  # ISO 8601, UTC
    traceparent: str | None = None


class StepError(BaseModel):
    """A step's domain error, returned as a value so that the workflow fails
    with this reason at once instead of retrying what cannot succeed."""

    error: str
    kind: str  # "invalid_request" | "unknown_device" | "insufficient_history"
