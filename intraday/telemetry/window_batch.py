"""Many devices' windows on the wire (the telemetry service's `POST
/windows`, read by the forecaster's fleet shards, trainings and scoring):
an Arrow IPC stream, one row per device, float32 values.

Float32 loses nothing a window holds: TelemetryWindow keeps its values at
float32 precision, so a window read this way equals one read as JSON. A
window may come cut (TelemetryWindow.cut): only the quarter-hours the
features read, with where the device's first reading was and how many of
the older quarter-hours had none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from intraday.forecasting.types import FleetWindow, TelemetryWindow
from intraday.timeutil import isoformat_z

MEDIA_TYPE = "application/vnd.apache.arrow.stream"


def encode(fleet: FleetWindow, first_reading: np.ndarray, missing_before: np.ndarray, cut: bool) -> bytes:
    """`cut`: the windows start later than asked (their rows carry what the
    older part held)."""
    n = fleet.values.shape[1]
    values = pa.FixedSizeListArray.from_arrays(pa.array(fleet.values.astype(np.float32).ravel()), n)
    columns = [("values", values.type), ("first_reading", pa.int32()), ("missing_before", pa.int32())]
    meta = {"start": isoformat_z(fleet.start), "intervals": str(n), "cut": "true" if cut else "false"}
    schema = pa.schema(columns, metadata=meta)
    batch = pa.record_batch([values, pa.array(first_reading.astype(np.int32)),
                             pa.array(missing_before.astype(np.int32))], schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch)
    data: bytes = sink.getvalue().to_pybytes()
    return data


@dataclass(frozen=True)
class WindowBatch:
    """(devices x intervals) float64 `values` from `start` (rows in the
    order asked), with each row's `first_reading` and `missing_before`."""

    start: datetime
    values: np.ndarray
    first_reading: np.ndarray
    missing_before: np.ndarray
    cut: bool

    def windows(self, device_ids: list[str]) -> list[TelemetryWindow]:
        if not self.cut:
            return [TelemetryWindow(d, self.start, self.values[k]) for k, d in enumerate(device_ids)]
        return [TelemetryWindow(d, self.start, self.values[k], first_reading=int(self.first_reading[k]),
                                missing_before=int(self.missing_before[k]))
                for k, d in enumerate(device_ids)]


def decode(body: bytes, devices: int) -> WindowBatch:
    reader = pa.ipc.open_stream(body)
    table = reader.read_all()
    meta = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
    n = int(meta["intervals"])
    if table.num_rows != devices:
        raise ValueError(f"{table.num_rows} windows for {devices} devices")
    flat = table.column("values").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return WindowBatch(datetime.fromisoformat(meta["start"]), flat.astype(np.float64).reshape(devices, n),
                       table.column("first_reading").to_numpy().astype(np.int64),
                       table.column("missing_before").to_numpy().astype(np.int64), meta.get("cut") == "true")
