"""DeviceActor state: a small versioned dataclass and its exact serializer.

The SDK's default JSON serializer turns date-like strings into datetimes and
cannot carry NaN gaps; this one stores the telemetry window as raw float64
bytes (base64), so values, NaN gaps and timestamps round-trip bit for bit.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from dapr.serializers import Serializer

from intraday.forecasting.types import TelemetryWindow
from intraday.timeutil import isoformat_z

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class DeviceState:
    device_id: str
    window: TelemetryWindow
    model_version: str
    refreshed_at: datetime
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "DeviceState",
            "schema_version": self.schema_version,
            "device_id": self.device_id,
            "window_start": isoformat_z(self.window.start),
            "window_f64le": base64.b64encode(self.window.values.astype("<f8").tobytes()).decode(),
            "model_version": self.model_version,
            "refreshed_at": isoformat_z(self.refreshed_at),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DeviceState:
        if d.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"unsupported DeviceState schema {d.get('schema_version')!r}")
        values = np.frombuffer(base64.b64decode(d["window_f64le"]), dtype="<f8").copy()
        window = TelemetryWindow(d["device_id"], datetime.fromisoformat(d["window_start"]), values)
        return cls(
            device_id=d["device_id"],
            window=window,
            model_version=d["model_version"],
            refreshed_at=datetime.fromisoformat(d["refreshed_at"]),
        )


class StateSerializer(Serializer):
    """DeviceState by its own encoding; anything else as plain JSON (no
    date guessing: ISO strings stay strings)."""

    def serialize(self, obj: object, custom_hook=None) -> bytes:
        if isinstance(obj, DeviceState):
            obj = obj.to_json()
        return json.dumps(obj, separators=(",", ":")).encode()

    def deserialize(self, data: bytes, data_type=object, custom_hook=None) -> Any:
        value = json.loads(data)
        if isinstance(value, dict) and value.get("type") == "DeviceState":
            return DeviceState.from_json(value)
        return value
