"""Each API key's request rate, one limit whatever the number of gateway
replicas: the key's token bucket (intraday.auth.take_tokens) lives in the
state store (Redis; Memorystore on GCP) under `ratelimit-<key id>`, read and
written back under its ETag, so two replicas taking the same key's last
token cannot both have it (the second write is refused; it reads again).

Within a replica, a key's requests that arrive while its bucket is being
read and written wait, and the next turn takes tokens for all of them at
once: one read and one write (about 2 ms here) for a whole burst, and only
replicas contend for a bucket, not every request. While the state store
cannot be reached, this replica falls back to a bucket in its own memory
(n replicas then admit up to n times the rate) and says so in its log: a
rate limit guards against a runaway client; it must not stop trading while
Redis restarts. A bucket left alone expires after ten minutes (full again
by then for any rate of 6 a minute or more)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from clients import sidecar
from intraday import auth

log = logging.getLogger(__name__)

ATTEMPTS = 8  # reads again after a lost race; more than that: the store is too busy, fall back
BUCKET_TTL_SECONDS = 600


class SharedRateLimiter:
    def __init__(self) -> None:
        self._waiting: defaultdict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._turns: set[str] = set()  # keys whose bucket is being taken from now
        self._tasks: set[asyncio.Task[None]] = set()  # the turns running (held, so not collected)
        self._fallback = auth.RateLimiter()
        self._degraded = False

    async def take(self, key_id: str, rate_per_minute: float) -> None:
        """One request of `key_id`: RateLimited (429) if over its rate."""
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[key_id].append(admitted)
        if key_id not in self._turns:
            self._turns.add(key_id)
            task = asyncio.create_task(self._serve(key_id, rate_per_minute))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await admitted

    async def _serve(self, key_id: str, rate_per_minute: float) -> None:
        """Turns for `key_id` while requests wait: each takes for all of them."""
        try:
            while self._waiting[key_id]:
                batch, self._waiting[key_id] = self._waiting[key_id], []
                try:
                    admitted, retry_after = await self._take_shared(key_id, rate_per_minute, len(batch))
                    if self._degraded:
                        log.warning("rate limits shared again")
                        self._degraded = False
                except Exception as e:  # noqa: BLE001 - whatever it is, the requests are answered
                    if not self._degraded:
                        log.warning("rate limits per replica: the shared ones cannot be reached (%s)",
                                    str(e)[:200])
                        self._degraded = True
                    admitted, retry_after = self._fallback.take_up_to(key_id, rate_per_minute, time.time(),
                                                                      len(batch))
                for n, request in enumerate(batch):
                    if request.done():
                        continue
                    if n < admitted:
                        request.set_result(None)
                    else:
                        request.set_exception(auth.over_rate(key_id, rate_per_minute, retry_after))
        finally:
            self._turns.discard(key_id)
            for request in self._waiting.pop(key_id, []):  # none, unless a turn failed outright
                if not request.done():
                    request.set_exception(auth.over_rate(key_id, rate_per_minute, 1.0))

    async def _take_shared(self, key_id: str, rate_per_minute: float, wanted: int) -> tuple[int, float]:
        key = f"ratelimit-{key_id}"
        for _ in range(ATTEMPTS):
            value, etag = await sidecar.get_state_versioned(key)
            bucket = (float(value["tokens"]), float(value["at"])) if value else None
            (tokens, at), admitted, retry_after = auth.take_tokens(bucket, rate_per_minute, time.time(),
                                                                   wanted)
            if await sidecar.save_state_if(key, {"tokens": tokens, "at": at}, etag, BUCKET_TTL_SECONDS):
                return admitted, retry_after
        raise ValueError(f"the bucket of key {key_id} kept changing under {ATTEMPTS} attempts")
