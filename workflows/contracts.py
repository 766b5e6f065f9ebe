"""Wire contracts of the forecast workflow: what it takes and returns."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

# How long a single forecast may take to be made, from its workflow's start.
DEADLINE = timedelta(seconds=60)


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
    # When make_forecast gives up (ISO 8601, UTC): set by the workflow, DEADLINE
    # after its start; None in the input of version 2, whose timer was the deadline.
    deadline: str | None = None


class StepError(BaseModel):
    """A step's domain error, returned as a value so that the workflow fails
    with this reason at once instead of retrying what cannot succeed."""

    error: str
    kind: str  # "invalid_request" | "unknown_device" | "insufficient_history" | "deadline"


class ForecastRequest(BaseModel):
    """Body of POST /forecast/intraday (gateway) and POST /forecasts
    (forecaster). Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    forecast_start: datetime | None = Field(
        None, description="UTC quarter-hour; default: the next quarter-hour"
    )
    horizon_hours: float = Field(24.0, description="multiple of 0.25, at most 48")
    requested_by: str = Field("api", max_length=64)


class TrainingRequest(BaseModel):
    """Body of POST /models/train (gateway) and POST /trainings (forecaster):
    a training of the served model's successor. Unknown fields are rejected."""

    model_config = ConfigDict(extra="forbid")

    days: int = Field(30, ge=10, le=400, description="the training window: the last D days of telemetry")
    end: datetime | None = Field(None, description="the window's end, a UTC quarter-hour in the past; "
                                                   "default: the last quarter-hour")
    holdout_days: int = Field(7, ge=1, le=30, description="days held out to score candidate and champion")
    train_rows: int = Field(1_500_000, ge=10_000, le=20_000_000, description="training rows sampled")
    trees: int = Field(60, ge=10, le=2_000, description="boosting rounds of the P50 model (P10/P90: half)")
    force: bool = Field(False, description="promote the candidate whatever its scores")
    requested_by: str = Field("api", max_length=64)
