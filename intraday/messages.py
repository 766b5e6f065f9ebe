"""The messages on the topics, and their JSON Schemas (`schemas/`).

`forecasts` carries one message per device forecast, version 2: columnar,
the interval grid as start + step + count and `mean`, `p10`, `p50`, `p90`
as arrays of whole watts (about 2.5 KB for 96 intervals, against about
20 KB for version 1's object per interval). Consumers deduplicate on
`forecast_id`: a publish retried after a lost acknowledgement sends the
same message again. `read_forecast` turns one back into a `Forecast` (kW).

`prices`, `orders`, `telemetry` and `weather` keep their shapes. Every
topic's schema is in `schemas/`, checked against real messages in tests
(every `forecasts` and `orders` message `tests.stack.topic_messages`
reads; the ones test_trading, test_telemetry and test_own_fleet publish)
and in tests/unit/test_messages.py.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from intraday.forecasting.types import Forecast
from intraday.timeutil import isoformat_z

FORECAST_SCHEMA_VERSION = 2
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
TOPICS = ("forecasts", "prices", "orders", "telemetry", "weather")
STEP_MINUTES = 15  # the serving grid (a forecast's intervals are quarter-hours)


def _watts(kw: np.ndarray) -> np.ndarray:
    """kW as whole watts (int64; orjson writes NumPy arrays natively)."""
    return np.rint(np.asarray(kw, dtype=np.float64) * 1000.0).astype(np.int64)


def forecast_message(forecast_id: str, f: Forecast, missing_intervals: int | None, requested_by: str,
                     requested_at: str, trace_id: str | None) -> dict[str, Any]:
    """The `forecasts` message of one device forecast. Arrays are NumPy
    (int64 watts): `sidecar.publish_bulk` writes them with orjson;
    `jsonable` makes lists of them for other encoders."""
    return {
        "schema_version": FORECAST_SCHEMA_VERSION,
        "forecast_id": forecast_id,
        "device_id": f.device_id,
        "model_version": f.model_version,
        "start": isoformat_z(f.forecast_start),
        "step_minutes": STEP_MINUTES,
        "count": f.horizon_intervals,
        "unit": "W",
        "mean": _watts(f.mean), "p10": _watts(f.p10), "p50": _watts(f.p50), "p90": _watts(f.p90),
        "data_window": {"start": isoformat_z(f.data_window_start), "end": isoformat_z(f.data_window_end),
                        "missing_intervals": missing_intervals},
        "history_days": None if f.history_days is None else round(float(f.history_days), 2),
        "notes": list(f.notes),
        "requested_by": requested_by,
        "requested_at": requested_at,
        "trace_id": trace_id,
    }


def forecast_message_of(result: dict[str, Any]) -> dict[str, Any]:
    """The `forecasts` message of a request's result (`Forecast.to_result`):
    what the single-device workflow publishes."""
    f = Forecast.from_dict(result)
    return jsonable(forecast_message(result["forecast_id"], f, result["data_window"].get("missing_intervals"),
                                     result["requested_by"], result["requested_at"], result.get("trace_id")))


def jsonable(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in message.items()}


def read_forecast(message: dict[str, Any]) -> Forecast:
    """A `forecasts` message as a `Forecast` (kW, to the watt it carried)."""
    if message.get("schema_version") != FORECAST_SCHEMA_VERSION:
        raise ValueError(f"forecasts message schema_version {message.get('schema_version')!r}, "
                         f"expected {FORECAST_SCHEMA_VERSION}")
    if message["step_minutes"] != STEP_MINUTES:
        raise ValueError(f"step_minutes {message['step_minutes']}, expected {STEP_MINUTES}")

    def kw(name: str) -> np.ndarray:
        values = np.asarray(message[name], dtype=np.float64) / 1000.0
        if len(values) != message["count"]:
            raise ValueError(f"{name} holds {len(values)} values, count says {message['count']}")
        return values

    window = message["data_window"]
    return Forecast(
        device_id=message["device_id"], forecast_start=datetime.fromisoformat(message["start"]),
        model_version=message["model_version"],
        p10=kw("p10"), p50=kw("p50"), p90=kw("p90"), mean=kw("mean"),
        data_window_start=datetime.fromisoformat(window["start"]),
        data_window_end=datetime.fromisoformat(window["end"]),
        history_days=message.get("history_days"), notes=tuple(message.get("notes", ())))


@cache
def schema(topic: str) -> dict[str, Any]:
    if topic not in TOPICS:
        raise KeyError(f"no schema for topic {topic!r} (topics: {', '.join(TOPICS)})")
    schema: dict[str, Any] = json.loads((SCHEMAS / f"{topic}.schema.json").read_text())
    return schema


def validate(topic: str, message: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError if `message` is not a valid message
    of `topic`."""
    import jsonschema

    jsonschema.validate(message, schema(topic), format_checker=jsonschema.FormatChecker())
