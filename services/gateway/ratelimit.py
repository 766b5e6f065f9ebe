"""Each API key's request rate, one limit whatever the number of gateway
replicas: the key's token bucket (intraday.auth.take_token) lives in the
state store (Redis; Memorystore on GCP) under `ratelimit-<key id>`, read and
written back with its ETag, so two replicas taking the same key's last
token cannot both have it (the second write is refused and it reads again).

Within a replica the requests of one key take turns (a lock per key), so
only replicas contend for a bucket, not every request of a burst; a turn
is two sidecar calls (about 2 ms here). While the state store cannot be
reached, this replica falls back to a bucket in its own memory (n replicas
then admit up to n times the rate) and says so in its log: a rate limit
guards against a runaway client; it must not stop trading while Redis
restarts. A bucket left alone expires after ten minutes (full again by
then for any rate of 6 a minute or more)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import aiohttp

from clients import sidecar
from intraday import auth

log = logging.getLogger(__name__)

ATTEMPTS = 8  # reads again after a lost race; more than that: the store is too busy, fall back
BUCKET_TTL_SECONDS = 600


class SharedRateLimiter:
    def __init__(self) -> None:
        self._turns: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._fallback = auth.RateLimiter()
        self._degraded = False

    async def take(self, key_id: str, rate_per_minute: float) -> None:
        """One request of `key_id`: RateLimited (429) if over its rate."""
        async with self._turns[key_id]:
            try:
                refused = await self._take_shared(key_id, rate_per_minute)
            except (TimeoutError, aiohttp.ClientError, sidecar.SidecarError, OSError, ValueError) as e:
                if not self._degraded:
                    log.warning("rate limits per replica: the shared ones cannot be reached (%s)",
                                str(e)[:200])
                self._degraded = True
                self._fallback.take(key_id, rate_per_minute, time.time())
                return
            if self._degraded:
                log.warning("rate limits shared again")
                self._degraded = False
            if refused is not None:
                raise refused

    async def _take_shared(self, key_id: str, rate_per_minute: float) -> auth.RateLimited | None:
        key = f"ratelimit-{key_id}"
        for _ in range(ATTEMPTS):
            value, etag = await sidecar.get_state_versioned(key)
            bucket = (float(value["tokens"]), float(value["at"])) if value else None
            (tokens, at), refused = auth.take_token(bucket, key_id, rate_per_minute, time.time())
            if await sidecar.save_state_if(key, {"tokens": tokens, "at": at}, etag, BUCKET_TTL_SECONDS):
                return refused
        raise ValueError(f"the bucket of key {key_id} kept changing under {ATTEMPTS} attempts")
