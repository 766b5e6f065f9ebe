"""The messages no subscriber could take (sql/postgres/011_dead_letters.sql):
kept by the gateway from the `dead-letter` topic, read by operators
(`intraday status`, GET /dead-letters) and sent again once the cause is
mended."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from intraday.timeutil import isoformat_z

# The topics whose dead letters the gateway may send again: those it
# publishes itself (components/*/pubsub.yaml publishingScopes).
REPLAYABLE = ("prices", "telemetry", "weather")


def record(conn: psycopg.Connection, event: dict[str, Any]) -> bool:
    """Keep a dead-lettered CloudEvent (as its subscriber's sidecar sent it
    on); True when it is new, False for one kept before (a dead letter
    delivered twice)."""
    message_id, topic = event.get("id"), event.get("topic")
    if not isinstance(message_id, str) or not message_id or not isinstance(topic, str) or not topic:
        raise ValueError("a dead letter needs the original message's id and topic")
    cur = conn.execute(
        "INSERT INTO dead_letters (message_id, topic, source, event) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (topic, message_id) DO NOTHING",
        (message_id[:256], topic[:128], str(event.get("source") or "")[:128] or None, Jsonb(event)))
    return cur.rowcount == 1


def summary(conn: psycopg.Connection, limit: int = 20) -> dict[str, Any]:
    """Counts per topic (waiting: not yet sent again) and the newest
    dead letters, without their payloads."""
    counts = {topic: {"total": total, "waiting": waiting, "last_at": isoformat_z(last)}
              for topic, total, waiting, last in conn.execute(
                  "SELECT topic, count(*), count(*) FILTER (WHERE replayed_at IS NULL), max(received_at)"
                  " FROM dead_letters GROUP BY topic ORDER BY topic").fetchall()}
    rows = conn.execute(
        "SELECT topic, message_id, source, received_at, replayed_at FROM dead_letters"
        " ORDER BY received_at DESC LIMIT %s", (limit,)).fetchall()
    return {"topics": counts, "waiting": sum(c["waiting"] for c in counts.values()),
            "latest": [{"topic": t, "message_id": m, "source": s, "received_at": isoformat_z(r),
                        "replayed_at": isoformat_z(p) if p else None} for t, m, s, r, p in rows]}


def read(conn: psycopg.Connection, topic: str, message_id: str) -> dict[str, Any] | None:
    """One dead letter's whole CloudEvent, or None."""
    row = conn.execute("SELECT event FROM dead_letters WHERE topic = %s AND message_id = %s",
                       (topic, message_id)).fetchone()
    return row[0] if row else None


def mark_replayed(conn: psycopg.Connection, topic: str, message_id: str) -> None:
    conn.execute("UPDATE dead_letters SET replayed_at = now() WHERE topic = %s AND message_id = %s",
                 (topic, message_id))
