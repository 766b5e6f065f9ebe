"""Quarter-hour arithmetic in UTC: the market's delivery intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

QUARTER_HOUR = timedelta(minutes=15)
INTERVALS_PER_DAY = 96


def to_utc(t: datetime) -> datetime:
    """An aware UTC datetime; naive input is taken to be UTC."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def floor_quarter_hour(t: datetime) -> datetime:
    t = to_utc(t)
    return t.replace(minute=t.minute - t.minute % 15, second=0, microsecond=0)


def next_quarter_hour(now: datetime | None = None) -> datetime:
    """The start of the next delivery interval after `now`."""
    return floor_quarter_hour(now or datetime.now(UTC)) + QUARTER_HOUR


def is_quarter_hour(t: datetime) -> bool:
    return t.minute % 15 == 0 and t.second == 0 and t.microsecond == 0


def isoformat_z(t: datetime) -> str:
    """ISO 8601 with a Z suffix: the one timestamp format on every wire."""
    return to_utc(t).isoformat().replace("+00:00", "Z")
