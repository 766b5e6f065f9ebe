"""The register of workflow instances the forecaster started
(sql/postgres/012_workflow_runs.sql, 013), which the watchdog reads."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb


def register(conn: psycopg.Connection, instance_id: str, workflow: str, payload: dict[str, Any],
             due_in: timedelta) -> None:
    """An instance just started (or started again): open, due in `due_in`."""
    conn.execute(
        "INSERT INTO workflow_runs (instance_id, workflow, input, due_at) VALUES (%s, %s, %s, now() + %s)"
        " ON CONFLICT (instance_id) DO UPDATE SET workflow = excluded.workflow, input = excluded.input,"
        " started_at = now(), running_at = NULL, due_at = excluded.due_at, settled_at = NULL, outcome = NULL",
        (instance_id, workflow, Jsonb(payload), due_in))


def overdue(conn: psycopg.Connection, limit: int = 200) -> list[dict[str, Any]]:
    """Open instances past their due time, the oldest first."""
    rows = conn.execute(
        "SELECT instance_id, workflow, input, started_at, running_at, due_at, redriven FROM workflow_runs"
        " WHERE settled_at IS NULL AND due_at < now() ORDER BY due_at LIMIT %s", (limit,)).fetchall()
    columns = ("instance_id", "workflow", "input", "started_at", "running_at", "due_at", "redriven")
    return [dict(zip(columns, r, strict=True)) for r in rows]


def settle(conn: psycopg.Connection, instance_id: str, outcome: str) -> None:
    conn.execute("UPDATE workflow_runs SET settled_at = now(), outcome = %s WHERE instance_id = %s",
                 (outcome[:500], instance_id))


def extend(conn: psycopg.Connection, instance_id: str, until: datetime) -> None:
    """Still rightly running (its audit owed): look again at `until`."""
    conn.execute("UPDATE workflow_runs SET due_at = %s WHERE instance_id = %s", (until, instance_id))


def redriven(conn: psycopg.Connection, instance_id: str, due_in: timedelta) -> None:
    conn.execute("UPDATE workflow_runs SET redriven = redriven + 1, started_at = now(), running_at = NULL,"
                 " due_at = now() + %s WHERE instance_id = %s", (due_in, instance_id))


def running(conn: psycopg.Connection, instance_id: str) -> float | None:
    """The instance began running (its first step): stamped once; the
    seconds it waited since its start, or None if it is not registered
    (yet: the register follows the start)."""
    row = conn.execute(
        "UPDATE workflow_runs SET running_at = coalesce(running_at, clock_timestamp()) WHERE instance_id = %s"
        " RETURNING extract(epoch FROM running_at - started_at)", (instance_id,)).fetchone()
    return None if row is None else max(0.0, float(row[0]))


def forecasts_recorded(conn: psycopg.Connection, forecast_ids: list[str], every: bool = True) -> bool:
    """Every one (or, not `every`, any) of these device forecasts is in the audit store."""
    row = conn.execute("SELECT count(*) FROM forecast_requests WHERE request_id = ANY(%s)",
                       (forecast_ids,)).fetchone()
    found = int(row[0]) if row is not None else 0
    return found == len(set(forecast_ids)) if every else found > 0


def fleet_recorded(conn: psycopg.Connection, fleet_forecast_id: str) -> bool:
    return conn.execute("SELECT 1 FROM fleet_forecasts WHERE fleet_forecast_id = %s",
                        (fleet_forecast_id,)).fetchone() is not None


def training_recorded(conn: psycopg.Connection, training_id: str) -> bool:
    return conn.execute("SELECT 1 FROM model_trainings WHERE training_id = %s",
                        (training_id,)).fetchone() is not None
