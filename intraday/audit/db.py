"""Audit records: forecast requests and results, trade decisions, positions.

Every write is idempotent on its natural key (the workflow instance id, the
decision id), so a retried step never writes a second row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from intraday.config import REPO_ROOT
from intraday.trading.rules import TradeDecision

SQL_DIR = REPO_ROOT / "sql" / "postgres"


def connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, connect_timeout=5)


def migrate(conn: psycopg.Connection) -> None:
    with conn.transaction():
        for path in sorted(SQL_DIR.glob("*.sql")):
            conn.execute(path.read_text())


def record_forecast(
    conn: psycopg.Connection,
    request_id: str,
    forecast: dict[str, Any],
    requested_by: str,
    requested_at: datetime,
    trace_id: str | None = None,
) -> bool:
    """Write the request and its intervals in one transaction; False when this
    request id was already recorded (nothing is written then)."""
    with conn.transaction():
        cur = conn.execute(
            """INSERT INTO forecast_requests (request_id, device_id, forecast_start,
                   horizon_intervals, model_version, data_window_start, data_window_end,
                   requested_by, requested_at, trace_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (request_id) DO NOTHING""",
            (
                request_id,
                forecast["device_id"],
                forecast["forecast_start"],
                forecast["horizon_intervals"],
                forecast["model_version"],
                forecast["data_window"]["start"],
                forecast["data_window"]["end"],
                requested_by,
                requested_at,
                trace_id,
            ),
        )
        if cur.rowcount == 0:
            return False
        with conn.cursor() as c:
            c.executemany(
                """INSERT INTO forecast_results
                       (request_id, interval_start, interval_end, p10, p50, p90, mean)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                [
                    (request_id, i["interval_start"], i["interval_end"], i["p10"], i["p50"],
                     i["p90"], i["mean"])
                    for i in forecast["intervals"]
                ],
            )
    return True


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
    rows = dict(
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
) -> bool:
    """Record a decision (with the portfolio forecast and the quantile of it
    it bought to) and move the positions by its orders, atomically; False if
    this decision id was already recorded."""
    with conn.transaction():
        cur = conn.execute(
            """INSERT INTO trade_decisions (decision_id, decided_at, price_eur_mwh,
                   reference_price, forecast_start, forecast_ids, buy_mwh, sell_mwh, orders,
                   target_quantile, portfolio_forecast_id, portfolio_forecast)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (decision_id) DO NOTHING""",
            (
                decision_id, decided_at, price_eur_mwh, reference_price,
                decision.forecast_start, forecast_ids, decision.buy_mwh, decision.sell_mwh,
                Jsonb(decision.orders()), decision.target_quantile, portfolio_forecast_id,
                Jsonb(portfolio_forecast),
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
