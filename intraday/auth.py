"""API keys: who may call the gateway, for what.

A key is `ik_<key_id>_<secret>`: the key id is public (it finds the row),
the secret is 32 random bytes shown once, at creation. PostgreSQL keeps
only HMAC-SHA256(pepper, secret), the pepper being a server-side secret
(`INTRADAY_API_KEY_PEPPER`), so the table alone lets nobody in; keys are
random, so a fast keyed hash is as strong as a slow one here. Scopes say
what a key may do; `all` is every scope.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import psycopg

SCOPES = {
    "forecast:read": "read forecasts and the fleet's devices",
    "forecast:request": "request device and fleet forecasts",
    "prices:publish": "publish prices (they move the trading service)",
    "models:admin": "warm the served model and device actors; train and promote models",
    "fleet:admin": "add, update and retire devices in the registry",
    "readings:write": "send meter readings",
    "weather:write": "send weather observations and issued temperature forecasts",
    "messages:admin": "see the messages no subscriber could take (dead letters) and send them again",
}
ALL = "all"
_KEY = re.compile(r"^ik_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class AuthError(Exception):
    """No valid credentials (401)."""


class Forbidden(Exception):
    """Valid credentials without the scope (403)."""


class RateLimited(Exception):
    """Over the key's request rate (429); retry after `retry_after` s."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


def take_tokens(bucket: tuple[float, float] | None, rate_per_minute: float, now: float,
                wanted: int = 1) -> tuple[tuple[float, float], int, float]:
    """A token bucket: `rate` requests a minute, bursts of up to a minute's
    worth. From the bucket (tokens, at) as last left (None: full), `wanted`
    requests at `now`: the bucket to leave, how many of them are admitted
    (the first ones), and in how many seconds a refused one may try again."""
    capacity, per_second = rate_per_minute, rate_per_minute / 60.0
    tokens, at = bucket if bucket is not None else (capacity, now)
    tokens = min(capacity, tokens + max(0.0, now - at) * per_second)
    admitted = min(wanted, int(tokens))
    tokens -= admitted
    # Never moved back: a replica whose clock is behind the last writer's refills nothing twice.
    return (tokens, max(at, now)), admitted, ((1.0 - tokens) / per_second if admitted < wanted else 0.0)


def over_rate(key_id: str, rate_per_minute: float, retry_after: float) -> RateLimited:
    return RateLimited(f"key {key_id} is over its rate of {rate_per_minute:g} requests a minute", retry_after)


class RateLimiter:
    """A token bucket per key (take_tokens), in this process's memory: the
    gateway's fallback while the shared one (services/gateway/ratelimit.py)
    cannot be reached."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, at)

    def take_up_to(self, key_id: str, rate_per_minute: float, now: float, wanted: int) -> tuple[int, float]:
        """`wanted` requests: how many are admitted, and the retry-after of the rest."""
        self._buckets[key_id], admitted, retry_after = take_tokens(self._buckets.get(key_id), rate_per_minute,
                                                                   now, wanted)
        return admitted, retry_after

    def take(self, key_id: str, rate_per_minute: float, now: float) -> None:
        admitted, retry_after = self.take_up_to(key_id, rate_per_minute, now, 1)
        if not admitted:
            raise over_rate(key_id, rate_per_minute, retry_after)


@dataclass(frozen=True)
class Principal:
    """Who called: the key's holder and what the key allows."""

    name: str
    key_id: str
    scopes: frozenset[str]
    rate_per_minute: int | None = None  # None: the gateway's default

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"key {self.key_id} ({self.name}) lacks the scope {scope!r}")


def parse_scopes(text: str) -> list[str]:
    scopes = sorted({s.strip() for s in text.split(",") if s.strip()})
    if scopes == [ALL]:
        return sorted(SCOPES)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"unknown scopes {unknown or text!r}: choose from {', '.join(SCOPES)} or {ALL}")
    return scopes


def _hash(pepper: str, secret: str) -> bytes:
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).digest()


def create_key(conn: psycopg.Connection, pepper: str, name: str, scopes: list[str],
               rate_per_minute: int | None = None) -> str:
    """A new key for `name` with `scopes` (and its own rate limit, if
    given); the only time its secret exists."""
    if rate_per_minute is not None and rate_per_minute <= 0:
        raise ValueError(f"a rate limit is a positive number of requests a minute, not {rate_per_minute}")
    if not _NAME.match(name):
        raise ValueError(f"invalid key name {name!r}: letters, digits and _.@- up to 64 characters")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"unknown scopes {unknown or scopes!r}")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    conn.execute("INSERT INTO api_keys (key_id, name, secret_hash, scopes, rate_per_minute)"
                 " VALUES (%s, %s, %s, %s, %s)", (key_id, name, _hash(pepper, secret), sorted(scopes),
                                                  rate_per_minute))
    return f"ik_{key_id}_{secret}"


def is_api_key(credential: str) -> bool:
    """One of ours by its form (anything else may be a provider's token)."""
    return credential.startswith("ik_")


def verify(conn: psycopg.Connection, pepper: str, key: str) -> Principal:
    """The principal a presented key stands for; AuthError if it is
    malformed, unknown, revoked or its secret does not match."""
    m = _KEY.match(key)
    if m is None:
        raise AuthError("malformed API key")
    key_id, secret = m.groups()
    row = conn.execute("SELECT name, secret_hash, scopes, revoked_at, rate_per_minute FROM api_keys"
                       " WHERE key_id = %s", (key_id,)).fetchone()
    # Compare even for an unknown id, so timing does not tell which ids exist.
    stored = bytes(row[1]) if row else b"\0" * 32
    if not hmac.compare_digest(stored, _hash(pepper, secret)) or row is None:
        raise AuthError("unknown API key")
    if row[3] is not None:
        raise AuthError(f"API key {key_id} was revoked")
    return Principal(row[0], key_id, frozenset(row[2]), row[4])


def touch(conn: psycopg.Connection, key_ids: list[str]) -> None:
    """Record that these keys were used (now)."""
    conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = ANY(%s)", (key_ids,))


def list_keys(conn: psycopg.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT key_id, name, scopes, created_at, revoked_at, last_used_at, rate_per_minute"
                        " FROM api_keys ORDER BY created_at").fetchall()
    names = ("key_id", "name", "scopes", "created_at", "revoked_at", "last_used_at", "rate_per_minute")
    return [dict(zip(names, r, strict=True)) for r in rows]


def revoke(conn: psycopg.Connection, name_or_id: str) -> list[str]:
    """Revoke the key with this id, or every key of this name; the ids revoked."""
    rows = conn.execute("UPDATE api_keys SET revoked_at = now() WHERE (key_id = %s OR name = %s)"
                        " AND revoked_at IS NULL RETURNING key_id", (name_or_id, name_or_id)).fetchall()
    return [r[0] for r in rows]

