"""Telemetry store: one API over chDB (in-process) and a ClickHouse server.

The same SQL (with `{name:Type}` parameters) runs on both backends. chDB lets
only one process open a database path, so in the running system the telemetry
service owns the store and everything else asks that service.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa

from intraday.config import REPO_ROOT, Settings
from intraday.forecasting.types import TelemetryWindow
from intraday.timeutil import QUARTER_HOUR, to_utc

SQL_DIR = REPO_ROOT / "sql" / "clickhouse"
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
READING_COLUMNS = ["device_id", "timestamp", "power", "heating_electricity", "dhw_electricity"]
DEVICE_COLUMNS = [
    "device_id", "location", "building_type", "heat_pump_type", "rated_power_kw", "installed_date",
]


class Backend(Protocol):
    def command(self, sql: str) -> None: ...
    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table: ...
    def insert_df(self, table: str, df: pd.DataFrame) -> None: ...
    def close(self) -> None: ...


class ChdbBackend:
    """chDB session on a directory; queries are serialized by a lock because
    one session is shared by the service's worker threads."""

    def __init__(self, path: Path):
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        self._session = session.Session(str(path))
        self._lock = threading.Lock()

    def command(self, sql: str) -> None:
        with self._lock:
            self._session.query(sql)

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        with self._lock:
            return self._session.query(sql, "ArrowTable", params=params or {})

    def insert_df(self, table: str, df: pd.DataFrame) -> None:
        # chDB's Python() table function reads the DataFrame named `frame`
        # from this frame's locals, without a copy through a file.
        frame = df  # noqa: F841
        cols = ", ".join(df.columns)
        with self._lock:
            self._session.query(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM Python(frame)")

    def close(self) -> None:
        with self._lock:
            self._session.close()


class ClickHouseBackend:
    """A ClickHouse server through clickhouse-connect (production)."""

    def __init__(self, url: str):
        import clickhouse_connect

        self._client = clickhouse_connect.get_client(dsn=url)

    def command(self, sql: str) -> None:
        self._client.command(sql)

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        return self._client.query_arrow(sql, parameters=params or {})

    def insert_df(self, table: str, df: pd.DataFrame) -> None:
        db, _, name = table.rpartition(".")
        self._client.insert_df(name, df, database=db or None)

    def close(self) -> None:
        self._client.close()


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID.match(device_id):
        raise ValueError(
            f"invalid device id {device_id!r}: 1-64 characters of letters, digits, '_.:-'"
        )
    return device_id


class TelemetryStore:
    def __init__(self, backend: Backend, database: str = "intraday"):
        self._backend = backend
        self.db = database

    @classmethod
    def from_settings(cls, settings: Settings) -> TelemetryStore:
        if settings.telemetry_backend == "clickhouse":
            backend: Backend = ClickHouseBackend(settings.clickhouse_url)
        else:
            backend = ChdbBackend(settings.chdb_path)
        return cls(backend, settings.clickhouse_database)

    def close(self) -> None:
        self._backend.close()

    def migrate(self) -> None:
        """Apply sql/clickhouse/*.sql in order; every statement is re-runnable."""
        self._backend.command(f"CREATE DATABASE IF NOT EXISTS {self.db}")
        for path in sorted(SQL_DIR.glob("*.sql")):
            text = re.sub(r"--[^\n]*", "", path.read_text()).replace("{db}", self.db)
            for statement in (s.strip() for s in text.split(";")):
                if statement:
                    self._backend.command(statement)

    # -- writes ---------------------------------------------------------

    def insert_readings(self, df: pd.DataFrame) -> int:
        df = df[READING_COLUMNS]
        self._backend.insert_df(f"{self.db}.power_consumption", df)
        return len(df)

    def upsert_devices(self, df: pd.DataFrame) -> int:
        df = df[DEVICE_COLUMNS]
        self._backend.insert_df(f"{self.db}.devices", df)
        return len(df)

    # -- reads ----------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        table = self._backend.query_arrow(
            f"SELECT device_id, location, building_type, heat_pump_type, rated_power_kw,"
            f" toString(installed_date) AS installed_date"
            f" FROM {self.db}.devices FINAL ORDER BY device_id"
        )
        return table.to_pylist()

    def device(self, device_id: str) -> dict[str, Any] | None:
        table = self._backend.query_arrow(
            f"SELECT device_id, location, building_type, heat_pump_type, rated_power_kw,"
            f" toString(installed_date) AS installed_date"
            f" FROM {self.db}.devices FINAL WHERE device_id = {{device_id:String}}",
            {"device_id": check_device_id(device_id)},
        )
        rows = table.to_pylist()
        return rows[0] if rows else None

    def device_count(self) -> int:
        table = self._backend.query_arrow(f"SELECT count() AS n FROM {self.db}.devices FINAL")
        return int(table.column("n")[0].as_py())

    def window(self, device_id: str, start: datetime, end: datetime) -> TelemetryWindow:
        """Mean power per quarter-hour in [start, end) on a regular grid, with
        NaN where no reading arrived."""
        start, end = to_utc(start), to_utc(end)
        n = int((end - start) / QUARTER_HOUR)
        if n <= 0:
            raise ValueError(f"empty window: start {start} is not before end {end}")
        table = self._backend.query_arrow(
            f"SELECT toUInt32((toUnixTimestamp(interval_start) - {{start:Int64}}) / 900) AS i,"
            f" sum(power_sum) / sum(samples) AS power"
            f" FROM {self.db}.power_consumption_15min"
            f" WHERE device_id = {{device_id:String}}"
            f"   AND interval_start >= toDateTime({{start:Int64}}, 'UTC')"
            f"   AND interval_start < toDateTime({{end:Int64}}, 'UTC')"
            f" GROUP BY interval_start",
            {
                "device_id": check_device_id(device_id),
                "start": int(start.timestamp()),
                "end": int(end.timestamp()),
            },
        )
        values = np.full(n, np.nan)
        idx = table.column("i").to_numpy().astype(np.int64)
        values[idx] = table.column("power").to_numpy()
        return TelemetryWindow(device_id, start, values)
