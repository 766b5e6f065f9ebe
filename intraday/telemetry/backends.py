"""Where the telemetry store's SQL runs: chDB in this process, or a ClickHouse
server over HTTP. Both take SQL and Arrow tables and give Arrow tables back;
the store (intraday/telemetry/store.py) writes the same SQL for either."""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from intraday.errors import StoreInUse


class Backend(Protocol):
    def command(self, sql: str) -> None: ...
    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table: ...
    def insert(self, table: str, data: pa.Table, settings: dict[str, Any] | None = None) -> None: ...
    def close(self) -> None: ...


def _settings_clause(settings: dict[str, Any] | None) -> str:
    if not settings:
        return ""
    return " SETTINGS " + ", ".join(f"{k} = {v!r}" for k, v in settings.items())


def _check_not_in_use(path: Path) -> None:
    """chDB locks `<path>/status` for the life of the process that opened it;
    fail with a clear error instead of chDB's opaque one."""
    status = path / "status"
    if not status.exists():
        return
    with open(status, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreInUse(
                f"telemetry store {path} is open in another process (the telemetry service?)"
            ) from None
        fcntl.flock(f, fcntl.LOCK_UN)


class ChdbBackend:
    """chDB session on a directory; queries are serialized by a lock because
    one session is shared by the service's worker threads."""

    def __init__(self, path: Path):
        from chdb import session

        path.mkdir(parents=True, exist_ok=True)
        _check_not_in_use(path)
        self._session = session.Session(str(path))
        # Results cross in process memory: compressing them only costs time
        # (the fleet window's transfer drops from 1.4 s to 0.5 s without it).
        self._session.query("SET output_format_arrow_compression_method = 'none'")
        self._lock = threading.Lock()

    def command(self, sql: str) -> None:
        with self._lock:
            self._session.query(sql)

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        params = {k: _chdb_param(v) for k, v in (params or {}).items()}
        with self._lock:
            result = self._session.query(sql, "Arrow", params=params)
        # Read the result in place, but keep chDB's result object alive as
        # long as any column points into it. chDB's own ArrowTable
        # conversion reads it in place without that, and with uncompressed
        # Arrow the columns then point into memory freed under them.
        if not len(result):
            return pa.table({})
        view = np.frombuffer(result.get_memview().view(), dtype=np.uint8)
        owned = pa.foreign_buffer(view.ctypes.data, view.nbytes, base=result)
        return pa.ipc.open_file(owned).read_all()

    def insert(self, table: str, data: pa.Table, settings: dict[str, Any] | None = None) -> None:
        # chDB's Python() table function reads the Arrow table named `frame`
        # from this frame's locals, without a copy through a file.
        frame = data  # noqa: F841
        cols = ", ".join(data.column_names)
        with self._lock:
            self._session.query(
                f"INSERT INTO {table} ({cols}) SELECT {cols} FROM Python(frame)"
                + _settings_clause(settings)
            )

    def close(self) -> None:
        with self._lock:
            self._session.close()


def _chdb_param(value: Any) -> Any:
    """chDB takes parameters as text: arrays as ClickHouse literals."""
    if isinstance(value, list | tuple):
        quoted = (str(v).replace("\\", "\\\\").replace("'", "\\'") for v in value)
        return "[" + ",".join(f"'{v}'" for v in quoted) + "]"
    return value


class ClickHouseBackend:
    """A ClickHouse server through clickhouse-connect (production)."""

    def __init__(self, url: str, settings: dict[str, Any] | None = None):
        import clickhouse_connect

        self._client = clickhouse_connect.get_client(dsn=url, settings=settings or {})

    def command(self, sql: str) -> None:
        self._client.command(sql)

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        return self._client.query_arrow(sql, parameters=params or {})

    def insert(self, table: str, data: pa.Table, settings: dict[str, Any] | None = None) -> None:
        db, _, name = table.rpartition(".")
        self._client.insert_arrow(name, data, database=db or None, settings=settings)

    def close(self) -> None:
        self._client.close()
