"""Live accuracy in the audit store (sql/postgres/010_forecast_scores.sql):
the published forecasts due for scoring, their scores, and the summaries
the dashboard, `intraday status` and the metrics read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from intraday.forecasting import live
from intraday.forecasting.live import FIELDS, LEVELS, Sums
from intraday.forecasting.recalibration import WINDOW_DAYS, Day, Window
from intraday.timeutil import QUARTER_HOUR, isoformat_z


@dataclass(frozen=True)
class Due:
    """A published forecast whose last interval is over and that was not
    scored: a fleet forecast (its portfolio, its device forecasts) or a
    device forecast made on its own (`forecast_ids` its own id)."""

    forecast_id: str
    kind: str
    forecast_start: datetime
    horizon: int
    model_version: str
    device_ids: list[str]
    forecast_ids: list[str]
    portfolio: dict[str, Any] | None = None  # the fleet's total: {"p10": [...], "p50", "p90", "mean"}
    recalibration: dict[str, Any] | None = None  # the factors its bands were scaled by (recalibration.used)

    @property
    def end(self) -> datetime:
        return self.forecast_start + self.horizon * QUARTER_HOUR


def due(conn: psycopg.Connection, until: datetime, since: datetime, limit: int) -> list[Due]:
    """Forecasts starting from `since` whose horizon ended by `until` and
    that are not scored, oldest first: fleet forecasts, then device
    forecasts made on their own, `limit` of each at most."""
    out = []
    for fid, start, horizon, version, devices, ids, intervals, scaled in conn.execute(
            """SELECT f.fleet_forecast_id, f.forecast_start, f.horizon_intervals, f.model_version,
                      f.device_ids, f.forecast_ids, f.portfolio -> 'intervals',
                      f.portfolio -> 'recalibration'
               FROM fleet_forecasts f
               WHERE f.forecast_start >= %(since)s
                 AND f.forecast_start + f.horizon_intervals * interval '15 minutes' <= %(until)s
                 AND NOT EXISTS (SELECT 1 FROM forecast_scorings s WHERE s.forecast_id = f.fleet_forecast_id)
               ORDER BY f.forecast_start LIMIT %(limit)s""",
            {"since": since, "until": until, "limit": limit}).fetchall():
        total = {q: [i[q] for i in intervals or []] for q in ("p10", "p50", "p90", "mean")}
        out.append(Due(fid, "fleet", start, horizon, version, list(devices), list(ids), total, scaled))
    for rid, device, start, horizon, version in conn.execute(
            """SELECT r.request_id, r.device_id, r.forecast_start, r.horizon_intervals, r.model_version
               FROM forecast_requests r
               WHERE r.fleet_forecast_id IS NULL AND r.forecast_start >= %(since)s
                 AND r.forecast_start + r.horizon_intervals * interval '15 minutes' <= %(until)s
                 AND NOT EXISTS (SELECT 1 FROM forecast_scorings s WHERE s.forecast_id = r.request_id)
               ORDER BY r.forecast_start LIMIT %(limit)s""",
            {"since": since, "until": until, "limit": limit}).fetchall():
        out.append(Due(rid, "device", start, horizon, version, [device], [rid]))
    return out


def record(conn: psycopg.Connection, item: Due, cells_missing: int,
           sums: dict[str, dict[tuple[date, int], Sums]], day: Day | None = None) -> bool:
    """A forecast's scores, once, and with `day` its scores for the served
    model's rolling recalibration (added to that day's): False (nothing
    written) if it was scored already (another replica, a retried run)."""
    devices = sum(s.cells for s in sums.get("device", {}).values())
    with conn.transaction():
        cur = conn.execute(
            """INSERT INTO forecast_scorings (forecast_id, kind, forecast_start, forecast_end, model_version,
                   devices, cells, cells_missing) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (forecast_id) DO NOTHING""",
            (item.forecast_id, item.kind, item.forecast_start, item.end, item.model_version,
             len(item.device_ids), devices, cells_missing))
        if cur.rowcount != 1:
            return False
        rows = [(item.forecast_id, level, day, block, item.model_version, *(getattr(s, f) for f in FIELDS))
                for level, by_key in sums.items() for (day, block), s in by_key.items()]
        if rows:
            with conn.cursor() as c:
                c.executemany(
                    f"INSERT INTO forecast_scores (forecast_id, level, day, block, model_version, "
                    f"{', '.join(FIELDS)}) VALUES ({', '.join(['%s'] * (5 + len(FIELDS)))})", rows)
        if day is not None:
            _add_day(conn, item.model_version, day)
    return True


def _add_day(conn: psycopg.Connection, version: str, day: Day) -> None:
    """Merge a forecast's scores into its model's day (one writer at a
    time: the row is locked)."""
    conn.execute("INSERT INTO live_recalibration (model_version, day, forecasts, scores)"
                 " VALUES (%s, %s, 0, %s) ON CONFLICT DO NOTHING",
                 (version, day.day, Jsonb(Day(day.day).to_dict())))
    row = conn.execute("SELECT scores FROM live_recalibration WHERE model_version = %s AND day = %s"
                       " FOR UPDATE", (version, day.day)).fetchone()
    assert row is not None  # inserted above, or already there
    (stored,) = row
    window = Window([Day.from_dict(stored)])
    window.add(day)
    conn.execute("UPDATE live_recalibration SET scores = %s, forecasts = forecasts + 1, updated_at = now()"
                 " WHERE model_version = %s AND day = %s",
                 (Jsonb(window.days[0].to_dict()), version, day.day))


def live_days(conn: psycopg.Connection, version: str, days: int = 2 * WINDOW_DAYS) -> list[Day]:
    """The newest scored days of `version`'s published fleet forecasts."""
    rows = conn.execute("SELECT scores FROM live_recalibration WHERE model_version = %s"
                        " ORDER BY day DESC LIMIT %s", (version, days)).fetchall()
    return [Day.from_dict(r[0]) for r in reversed(rows)]


def _sums(row: Sequence[Any]) -> Sums:
    return Sums(**{f: (int(v) if isinstance(Sums.__dataclass_fields__[f].default, int)  # type: ignore[arg-type]
                       else float(v)) for f, v in zip(FIELDS, row, strict=True)})


_SUMMED = ", ".join(f"sum({f})" for f in FIELDS)


def summary(conn: psycopg.Connection, today: date, days: int = live.WEEK_DAYS) -> dict[str, Any]:
    """The live scores of the `days` delivery days up to `today`: per day
    and level, the week pooled per level and per horizon block, how many
    forecasts, and the alerts the week raises."""
    first = today - timedelta(days=days - 1)
    by_day: dict[date, dict[str, Any]] = {}
    for day, level, *row in conn.execute(
            f"SELECT day, level, {_SUMMED} FROM forecast_scores WHERE day BETWEEN %s AND %s"
            " GROUP BY day, level ORDER BY day", (first, today)).fetchall():
        by_day.setdefault(day, {"day": day.isoformat()})[level] = _sums(row).measures(level)
    week = {level: Sums() for level in LEVELS}
    blocks: dict[str, dict[int, Any]] = {level: {} for level in LEVELS}
    for level, block, *row in conn.execute(
            f"SELECT level, block, {_SUMMED} FROM forecast_scores WHERE day BETWEEN %s AND %s"
            " GROUP BY level, block ORDER BY block", (first, today)).fetchall():
        week[level] = week[level] + _sums(row)
        blocks[level][int(block)] = _sums(row).measures(level)
    forecasts, last = conn.execute(  # type: ignore[misc]  # an aggregate: always one row
        "SELECT count(*) FILTER (WHERE s.cells > 0), max(s.scored_at) FROM forecast_scorings s"
        " WHERE s.forecast_end > %s AND s.forecast_start <= %s",
        (datetime.combine(first, time(), UTC), datetime.combine(today + timedelta(days=1), time(), UTC),
         )).fetchone()
    measures = {level: week[level].measures(level) for level in LEVELS}
    return {"from": first.isoformat(), "to": today.isoformat(), "forecasts": forecasts,
            "last_scored_at": isoformat_z(last) if last else None,
            "week": measures, "days": [by_day[d] for d in sorted(by_day)],
            "blocks": {level: [{"block": b, "hours": [b * live.BLOCK_HOURS, (b + 1) * live.BLOCK_HOURS],
                                **m} for b, m in sorted(blocks[level].items())] for level in LEVELS},
            "alerts": live.alerts(measures["portfolio"])}


def training_scores(conn: psycopg.Connection, version: str) -> dict[str, Any] | None:
    """How `version` scored on its held-out days when it was trained (the
    latest training that made it), in the live measures' names."""
    row = conn.execute(
        "SELECT training_id, evaluation -> 'candidate', evaluation -> 'origins' FROM model_trainings"
        " WHERE candidate_version = %s ORDER BY finished_at DESC LIMIT 1", (version,)).fetchone()
    if row is None or not row[1]:
        return None
    training_id, scores, origins = row
    pf, dev = scores.get("portfolio") or {}, scores.get("devices") or {}
    return {"training_id": training_id, "days": len(origins or []),
            "portfolio": {"wape": pf.get("wape"), "bias": pf.get("bias"), "pinball": pf.get("pinball_mean"),
                          "coverage": pf.get("coverage_p10_p90")},
            "device": {"wape": dev.get("wape"), "bias": dev.get("mean_bias"),
                       "pinball": dev.get("pinball_mean"), "coverage": dev.get("coverage_p10_p90")}}


def as_arrays(values: dict[str, list[Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """P10, P50, P90 and mean of a recorded total as arrays (None -> NaN)."""
    p10, p50, p90, mean = (np.array([np.nan if v is None else v for v in values[q]], float)
                           for q in ("p10", "p50", "p90", "mean"))
    return p10, p50, p90, mean

