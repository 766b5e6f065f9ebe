"""Audit records: forecast requests and results, trade decisions, positions.

Every write is idempotent on its natural key (the workflow instance id, the
decision id), so a retried step never writes a second row.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types.json import Jsonb

from intraday import failpoints
from intraday.config import REPO_ROOT
from intraday.forecasting.types import Forecast
from intraday.timeutil import isoformat_z
from intraday.trading.rules import TradeDecision

SQL_DIR = REPO_ROOT / "sql" / "postgres"


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, connect_timeout=5)


def migrate(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for path in sorted(SQL_DIR.glob("*.sql")):
            conn.execute(path.read_text())


@dataclass(frozen=True)
class ForecastRecord:
    """One device forecast as the audit trail keeps it: the id it is known
    by, the numbers and the data window they came from, and the request."""

    request_id: str
    forecast: Forecast
    missing_intervals: int | None
    requested_by: str
    requested_at: datetime
    trace_id: str | None = None
    fleet_forecast_id: str | None = None


_REQUEST_COLUMNS = ("request_id", "device_id", "forecast_start", "horizon_intervals", "model_version",
                    "data_window_start", "data_window_end", "requested_by", "requested_at", "trace_id",
                    "history_days", "missing_intervals", "notes", "fleet_forecast_id")
_SERIES_COLUMNS = ("request_id", "p10", "p50", "p90", "mean")
_STAGE_TYPES = ("text", "text", "timestamptz", "int4", "text", "timestamptz", "timestamptz", "text",
                "timestamptz", "text", "float8", "int4", "text[]", "text", "float8[]", "float8[]",
                "float8[]", "float8[]")


class _Float8ArrayDumper(Dumper):
    """A 1-D float64 NumPy array as PostgreSQL's binary float8[]: the header,
    then each element's length (8) and big-endian bits, built by NumPy in
    one go (psycopg's list dumper formats element by element, under the
    GIL: the largest part of a fleet shard's Python time,
    bench/results/fleet-profile.json). Exact: the same bits."""

    format = Format.BINARY
    oid = 1022  # float8[]
    _ELEMENTS = np.dtype([("length", ">i4"), ("value", ">f8")])

    def dump(self, obj: np.ndarray) -> bytes:
        values = np.asarray(obj, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"a float8[] from NumPy has one dimension, not {values.ndim}")
        body = np.empty(len(values), self._ELEMENTS)
        body["length"], body["value"] = 8, values
        return struct.pack(">iiiii", 1, 0, 701, len(values), 1) + body.tobytes()


def record_forecasts(conn: psycopg.Connection, records: list[ForecastRecord]) -> list[str]:
    """Write many forecasts in one transaction: COPY into a staging table,
    then insert the ids not yet recorded (a retried step writes nothing
    twice). Returns the ids that were new."""
    if not records:
        return []
    with conn.transaction(), conn.cursor() as cur:
        cur.adapters.register_dumper(np.ndarray, _Float8ArrayDumper)  # this cursor's COPY only
        cur.execute("CREATE TEMP TABLE audit_stage (LIKE forecast_requests INCLUDING DEFAULTS,"
                    " p10 double precision[], p50 double precision[], p90 double precision[],"
                    " mean double precision[]) ON COMMIT DROP")
        columns = _REQUEST_COLUMNS + _SERIES_COLUMNS[1:]
        # Binary COPY: formatting 400 floats per device as text costs 7x more.
        with cur.copy(f"COPY audit_stage ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_STAGE_TYPES)
            for r in records:
                f = r.forecast
                copy.write_row((
                    r.request_id, f.device_id, f.forecast_start, f.horizon_intervals, f.model_version,
                    f.data_window_start, f.data_window_end, r.requested_by, r.requested_at, r.trace_id,
                    None if f.history_days is None else float(f.history_days),
                    None if r.missing_intervals is None else int(r.missing_intervals),
                    list(f.notes), r.fleet_forecast_id,
                    f.p10, f.p50, f.p90, f.mean,
                ))
        names = ", ".join(_REQUEST_COLUMNS)
        cur.execute(f"INSERT INTO forecast_requests ({names}) SELECT {names} FROM audit_stage"
                    " ON CONFLICT (request_id) DO NOTHING RETURNING request_id")
        new = [row[0] for row in cur.fetchall()]
        series = ", ".join(_SERIES_COLUMNS)
        cur.execute(f"INSERT INTO forecast_series ({series}) SELECT {series} FROM audit_stage"
                    " WHERE request_id = ANY(%s)", (new,))
        failpoints.reach(failpoints.AUDIT_BEFORE_COMMIT)
    return new


def record_forecast(
    conn: psycopg.Connection,
    request_id: str,
    forecast: dict[str, Any],
    requested_by: str,
    requested_at: datetime,
) -> bool:
    """Write one forecast (its wire form, with the trace that made it);
    False when this request id was already recorded (nothing is written then)."""
    record = ForecastRecord(request_id, Forecast.from_dict(forecast),
                            forecast["data_window"].get("missing_intervals"), requested_by,
                            requested_at, forecast.get("trace_id"))
    return bool(record_forecasts(conn, [record]))


def read_forecast(conn: psycopg.Connection, request_id: str) -> dict[str, Any] | None:
    """A recorded forecast in the wire form the workflow returned (None if
    it is not recorded): what `GET /forecast/{id}` serves once the workflow
    instance is purged."""
    return read_results(conn, [request_id]).get(request_id)


def read_results(conn: psycopg.Connection, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Recorded forecasts in their wire form, by id, in one query (those not
    recorded are left out)."""
    return {rid: forecast.to_result(rid, missing, by, isoformat_z(at), trace)
            for rid, (forecast, missing, by, at, trace) in _read_recorded(conn, request_ids).items()}


def read_forecasts(conn: psycopg.Connection, request_ids: list[str]) -> dict[str, Forecast]:
    """Recorded forecasts by id (those not recorded are left out)."""
    return {rid: row[0] for rid, row in _read_recorded(conn, request_ids).items()}


def _read_recorded(conn: psycopg.Connection, request_ids: list[str]) -> dict[str, tuple[Any, ...]]:
    """id -> (Forecast, missing intervals, requested_by, requested_at, trace_id)."""
    rows = conn.execute(
        """SELECT r.request_id, r.device_id, r.forecast_start, r.model_version, r.data_window_start,
                  r.data_window_end, r.history_days, r.notes, r.missing_intervals,
                  r.requested_by, r.requested_at, r.trace_id, s.p10, s.p50, s.p90, s.mean
           FROM forecast_requests r LEFT JOIN forecast_series s USING (request_id)
           WHERE r.request_id = ANY(%s)""", (request_ids,),
    ).fetchall()
    out = {}
    for (request_id, device, start, version, window_start, window_end, history_days, notes, missing,
         requested_by, requested_at, trace_id, *series) in rows:
        if series[0] is None:  # recorded before forecast_series: one row per interval
            old = conn.execute("SELECT p10, p50, p90, coalesce(mean, 'NaN') FROM forecast_results"
                               " WHERE request_id = %s ORDER BY interval_start", (request_id,)).fetchall()
            series = [list(c) for c in zip(*old, strict=True)] if old else [[], [], [], []]
        p10, p50, p90, mean = (np.array(s, np.float64) for s in series)
        forecast = Forecast(device, start, version, p10, p50, p90, mean,
                            data_window_start=window_start, data_window_end=window_end,
                            history_days=history_days, notes=tuple(notes or ()))
        out[request_id] = (forecast, missing, requested_by, requested_at, trace_id)
    return out


def record_fleet_forecast(conn: psycopg.Connection, fleet_forecast_id: str, row: dict[str, Any]) -> bool:
    """A fleet forecast's own row (its device forecasts are recorded by
    `record_forecasts`); False if this id was already recorded."""
    cur = conn.execute(
        """INSERT INTO fleet_forecasts (fleet_forecast_id, forecast_start, horizon_intervals,
               model_version, data_end, device_ids, forecast_ids, failed, portfolio, requested_by,
               requested_at, trace_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (fleet_forecast_id) DO NOTHING""",
        (fleet_forecast_id, row["forecast_start"], row["horizon_intervals"], row["model_version"],
         row["data_end"], row["device_ids"], row["forecast_ids"], Jsonb(row["failed"]),
         Jsonb(row["portfolio"]), row["requested_by"], row["requested_at"], row.get("trace_id")),
    )
    return cur.rowcount == 1


def read_fleet_forecast(conn: psycopg.Connection, fleet_forecast_id: str,
                        table: bool = False) -> dict[str, Any] | None:
    """A recorded fleet forecast in its wire form (None if not recorded):
    the portfolio and, per device, the id of the forecast it summed. The
    portfolio's full quantile table (every level, what a trade at any
    quantile needs) only with `table`."""
    row = conn.execute(
        """SELECT f.forecast_start, f.horizon_intervals, f.model_version, f.data_end, f.device_ids,
                  f.forecast_ids, f.failed, f.portfolio, f.requested_by, f.requested_at, f.trace_id
           FROM fleet_forecasts f WHERE f.fleet_forecast_id = %s""", (fleet_forecast_id,),
    ).fetchone()
    if row is None:
        return None
    start, horizon, version, data_end, devices, ids, failed, pf, by, at, trace_id = row
    if not table:
        pf = {k: v for k, v in pf.items() if k not in ("levels", "quantile_table")}
    return {
        "forecast_id": fleet_forecast_id, "kind": "fleet",
        "forecast_start": isoformat_z(start), "horizon_intervals": horizon, "model_version": version,
        "data_end": isoformat_z(data_end), "portfolio": pf,
        "device_forecasts": [{"device_id": d, "forecast_id": f} for d, f in zip(devices, ids, strict=True)],
        "failed": failed, "requested_by": by, "requested_at": isoformat_z(at), "trace_id": trace_id,
    }


def most_requested(conn: psycopg.Connection, days: int, limit: int) -> list[str]:
    """The devices forecast most often in the last `days` days: the ones
    traders ask for, which `intraday warm` loads ahead of a burst."""
    rows = conn.execute(
        "SELECT device_id FROM forecast_requests WHERE requested_at > now() - make_interval(days => %s)"
        " GROUP BY device_id ORDER BY count(*) DESC, device_id LIMIT %s",
        (days, limit),
    ).fetchall()
    return [r[0] for r in rows]


def positions(conn: psycopg.Connection, starts: list[datetime]) -> list[float]:
    rows: dict[datetime, float] = dict(
        conn.execute(
            "SELECT interval_start, position_mw FROM positions WHERE interval_start = ANY(%s)",
            (starts,),
        ).fetchall()
    )
    return [float(rows.get(s, 0.0)) for s in starts]


def record_decision(
    conn: psycopg.Connection,
    decision_id: str,
    decision: TradeDecision,
    decided_at: datetime,
    price_eur_mwh: float,
    reference_price: float | None,
    forecast_ids: list[str],
    portfolio_forecast_id: str,
    portfolio_forecast: dict[str, Any],
    trace_id: str | None = None,
) -> bool:
    """Record a decision (with the portfolio forecast and the quantile of it
    it bought to) and move the positions by its orders, atomically; False if
    this decision id was already recorded."""
    with conn.transaction():
        cur = conn.execute(
            """INSERT INTO trade_decisions (decision_id, decided_at, price_eur_mwh,
                   reference_price, forecast_start, forecast_ids, buy_mwh, sell_mwh, orders,
                   target_quantile, portfolio_forecast_id, portfolio_forecast, trace_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (decision_id) DO NOTHING""",
            (
                decision_id, decided_at, price_eur_mwh, reference_price,
                decision.forecast_start, forecast_ids, decision.buy_mwh, decision.sell_mwh,
                Jsonb(decision.orders()), decision.target_quantile, portfolio_forecast_id,
                Jsonb(portfolio_forecast), trace_id,
            ),
        )
        if cur.rowcount == 0:
            return False
        with conn.cursor() as c:
            c.executemany(
                """INSERT INTO positions (interval_start, position_mw) VALUES (%s, %s)
                   ON CONFLICT (interval_start) DO UPDATE
                   SET position_mw = positions.position_mw + EXCLUDED.position_mw,
                       updated_at = now()""",
                [
                    (s, float(o))
                    for s, o in zip(decision.interval_starts(), decision.order_mw, strict=True)
                    if o != 0.0
                ],
            )
    return True


def read_decision(conn: psycopg.Connection, decision_id: str) -> dict[str, Any] | None:
    """A recorded decision as the `orders` message carries it (None if not
    recorded): what a redelivered price message publishes again."""
    row = conn.execute(
        """SELECT decided_at, price_eur_mwh, reference_price, forecast_start, portfolio_forecast_id,
                  portfolio_forecast->>'model_version', target_quantile, buy_mwh, sell_mwh, orders,
                  trace_id
           FROM trade_decisions WHERE decision_id = %s""", (decision_id,),
    ).fetchone()
    if row is None:
        return None
    at, price, reference, start, pf_id, version, quantile, buy, sell, orders, trace_id = row
    return {"decision_id": decision_id, "decided_at": isoformat_z(at), "price_eur_mwh": price,
            "reference_price": reference, "forecast_start": isoformat_z(start),
            "portfolio_forecast_id": pf_id, "model_version": version, "target_quantile": quantile,
            "buy_mwh": buy, "sell_mwh": sell, "orders": orders, "trace_id": trace_id}


_TRAINING_COLUMNS = ("training_id", "trigger", "requested_by", "requested_at", "data_start", "data_end",
                     "devices", "candidate_version", "champion_version", "promoted", "forced", "reason",
                     "evaluation", "trace_id")


def record_training(conn: psycopg.Connection, row: dict[str, Any]) -> bool:
    """A training's decision (sql/postgres/007_model_trainings.sql); False
    if this training id was already recorded (a retried step)."""
    values = [Jsonb(row[c]) if c == "evaluation" else row.get(c) for c in _TRAINING_COLUMNS]
    cur = conn.execute(
        f"INSERT INTO model_trainings ({', '.join(_TRAINING_COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(values))}) ON CONFLICT (training_id) DO NOTHING", values)
    return cur.rowcount == 1


def read_trainings(conn: psycopg.Connection, limit: int = 50,
                   training_id: str | None = None) -> list[dict[str, Any]]:
    """The latest trainings' decisions, newest first (or the one with that id)."""
    where, params = ("WHERE training_id = %s", [training_id]) if training_id else ("", [])
    rows = conn.execute(
        f"SELECT {', '.join(_TRAINING_COLUMNS)}, finished_at FROM model_trainings {where} "
        "ORDER BY finished_at DESC LIMIT %s", [*params, limit]).fetchall()
    out = []
    for row in rows:
        item = dict(zip((*_TRAINING_COLUMNS, "finished_at"), row, strict=True))
        for c in ("requested_at", "data_start", "data_end", "finished_at"):
            item[c] = isoformat_z(item[c])
        out.append(item)
    return out


def record_tick(conn: psycopg.Connection, tick_id: str, at: datetime, price_eur_mwh: float, market: str,
                verdict: str) -> bool:
    """A price tick and the rule's verdict on it (sql/postgres/008_price_ticks.sql);
    a redelivered message keeps its first row."""
    cur = conn.execute(
        "INSERT INTO price_ticks (tick_id, at, price_eur_mwh, market, verdict) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (tick_id) DO NOTHING", (tick_id, at, price_eur_mwh, market, verdict))
    return cur.rowcount == 1


def record_device_change(conn: psycopg.Connection, change: dict[str, Any]) -> bool:
    """A registry change (`intraday.telemetry.registry.Change.to_dict()`:
    sql/postgres/009_device_changes.sql); a retried record keeps the first."""
    written = sum(len(change[k]) for k in ("added", "updated", "reactivated", "retired"))
    cur = conn.execute(
        "INSERT INTO device_changes (change_id, action, changed_by, changed_at, devices, written, report)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (change_id) DO NOTHING",
        (change["change_id"], change["action"], change["changed_by"], change["at"], change["devices"],
         written, Jsonb(change)))
    return cur.rowcount == 1


def read_device_changes(conn: psycopg.Connection, device_id: str | None = None,
                        limit: int = 50) -> list[dict[str, Any]]:
    """The latest registry changes, newest first; with `device_id`, those
    that changed it, each with that device's fields only."""
    where, params = "", []
    if device_id is not None:
        where, params = "WHERE report -> 'changes' @> %s", [Jsonb([{"device_id": device_id}])]
    rows = conn.execute(
        "SELECT change_id, action, changed_by, changed_at, devices, written, report FROM device_changes"
        f" {where} ORDER BY changed_at DESC LIMIT %s", [*params, limit]).fetchall()
    out = []
    for change_id, action, changed_by, changed_at, devices, written, report in rows:
        changes = report.get("changes", [])
        if device_id is not None:
            changes = [c for c in changes if c["device_id"] == device_id]
        out.append({"change_id": change_id, "action": action, "changed_by": changed_by,
                    "changed_at": isoformat_z(changed_at), "devices": devices, "written": written,
                    "changes": changes})
    return out
