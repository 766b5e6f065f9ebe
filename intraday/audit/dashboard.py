"""The dashboard's reads of the audit store: the latest portfolio forecast,
decisions, positions, the price feed and a device's latest forecast. Read
only; each is one indexed query whatever the fleet's size (a fleet forecast's
row is read without its device lists)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from intraday.audit import db
from intraday.timeutil import isoformat_z


def marks(conn: psycopg.Connection) -> dict[str, str | None]:
    """What changed last, per kind: the newest fleet forecast, decision,
    price tick, training and scoring of published forecasts (ids or
    times); the dashboard's live updates fire when one moves."""
    row = conn.execute(
        """SELECT (SELECT fleet_forecast_id FROM fleet_forecasts ORDER BY completed_at DESC LIMIT 1),
                  (SELECT decision_id FROM trade_decisions ORDER BY decided_at DESC LIMIT 1),
                  (SELECT tick_id FROM price_ticks ORDER BY received_at DESC LIMIT 1),
                  (SELECT training_id FROM model_trainings ORDER BY finished_at DESC LIMIT 1),
                  (SELECT max(scored_at)::text FROM forecast_scorings)""").fetchone()
    assert row is not None  # a SELECT without FROM: always one row
    return dict(zip(("forecast", "decision", "price", "training", "scores"), row, strict=True))


def latest_portfolio(conn: psycopg.Connection) -> dict[str, Any] | None:
    row = conn.execute(
        """SELECT fleet_forecast_id, forecast_start, horizon_intervals, model_version, data_end,
                  cardinality(device_ids), portfolio - 'levels' - 'quantile_table', requested_by,
                  requested_at, completed_at, trace_id,
                  (SELECT count(*) FROM jsonb_object_keys(failed))
           FROM fleet_forecasts ORDER BY completed_at DESC LIMIT 1""").fetchone()
    if row is None:
        return None
    fid, start, horizon, version, data_end, devices, pf, by, at, done, trace, failed = row
    return {"forecast_id": fid, "forecast_start": isoformat_z(start), "horizon_intervals": horizon,
            "model_version": version, "data_end": isoformat_z(data_end), "devices": devices,
            "failed": failed, "requested_by": by, "requested_at": isoformat_z(at),
            "completed_at": isoformat_z(done), "trace_id": trace, "notes": pf.get("notes", []),
            "intervals": [{k: i[k] for k in ("interval_start", "p10", "p50", "p90", "mean")}
                          for i in pf["intervals"]]}


_DECISION = ("decision_id", "decided_at", "price_eur_mwh", "reference_price", "forecast_start", "buy_mwh",
             "sell_mwh", "target_quantile", "portfolio_forecast_id", "model_version", "trace_id")


def decisions(conn: psycopg.Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest decisions, newest first; the newest with its orders per interval."""
    rows = conn.execute(
        """SELECT decision_id, decided_at, price_eur_mwh, reference_price, forecast_start, buy_mwh, sell_mwh,
                  target_quantile, portfolio_forecast_id, portfolio_forecast->>'model_version', trace_id
           FROM trade_decisions ORDER BY decided_at DESC LIMIT %s""", (limit,)).fetchall()
    out = []
    for row in rows:
        d = dict(zip(_DECISION, row, strict=True))
        d["decided_at"], d["forecast_start"] = isoformat_z(d["decided_at"]), isoformat_z(d["forecast_start"])
        out.append(d)
    if out:
        orders = conn.execute("SELECT orders FROM trade_decisions WHERE decision_id = %s",
                              (out[0]["decision_id"],)).fetchone()
        out[0]["orders"] = orders[0] if orders else None
    return out


def positions(conn: psycopg.Connection, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT interval_start, position_mw FROM positions"
                        " WHERE interval_start >= %s AND interval_start < %s ORDER BY interval_start",
                        (start, end)).fetchall()
    return [{"interval_start": isoformat_z(s), "position_mw": p} for s, p in rows]


def prices(conn: psycopg.Connection, limit: int = 300) -> list[dict[str, Any]]:
    """The latest ticks, oldest first, each with its verdict (a `move` has
    a decision of the same id)."""
    rows = conn.execute(
        """SELECT tick_id, at, price_eur_mwh, market, verdict FROM
             (SELECT * FROM price_ticks ORDER BY received_at DESC LIMIT %s) t ORDER BY at""",
        (limit,)).fetchall()
    return [{"tick_id": t, "at": isoformat_z(a), "price_eur_mwh": p, "market": m, "verdict": v}
            for t, a, p, m, v in rows]


def latest_device_forecast(conn: psycopg.Connection, device_id: str) -> dict[str, Any] | None:
    """The device's most recently made forecast in its wire form."""
    row = conn.execute("SELECT request_id FROM forecast_requests WHERE device_id = %s"
                       " ORDER BY completed_at DESC LIMIT 1", (device_id,)).fetchone()
    return db.read_forecast(conn, row[0]) if row else None
