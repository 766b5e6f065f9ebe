"""The audit store's (PostgreSQL) connection pool, one per process, shared
by the activities that write forecasts and the routes that read them."""

from __future__ import annotations

from psycopg_pool import ConnectionPool

from intraday.config import get_settings

_pool: ConnectionPool | None = None


def audit_pool() -> ConnectionPool:
    global _pool
    if _pool is None:
        _pool = ConnectionPool(get_settings().pg_dsn, min_size=1, max_size=8, open=True,
                               kwargs={"autocommit": True})
    return _pool
