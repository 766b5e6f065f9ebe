"""Dynamic batching of single-device forecast requests, as inference
servers batch: requests that arrive while the forecaster is busy wait for a
free slot (at most `max_wait` more once one is free, or until `max_size`
have gathered) and then run together as one workflow instance instead of
one each.

A lone request (nothing in flight) is dispatched at once, on the
single-device workflow through its DeviceActor: batching costs it nothing.
Under load a batch of many devices runs the fleet shard activity (one
telemetry query, vectorised inference, bulk publish, one COPY), whose
forecasts equal the single path's and keep their ids. Requests for the same
forecast id share one future, so a burst of repeats makes one forecast.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

log = logging.getLogger("forecaster.batching")

# (forecast_id, job) of one group -> {forecast_id: response view}
RunBatch = Callable[[list[tuple[str, dict]]], Awaitable[dict[str, dict]]]
RunSingle = Callable[[str, dict], Awaitable[dict]]


@dataclass
class BatchStats:
    """What the batcher has done since start (for /metrics and benchmarks)."""

    requests: int = 0
    shared: int = 0  # requests that joined a forecast already queued or in flight
    batches: int = 0
    singles: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> count

    def to_dict(self) -> dict:
        return {"requests": self.requests, "shared": self.shared, "batches": self.batches,
                "singles": self.singles, "largest": max(self.sizes, default=0),
                "mean_size": round(sum(k * v for k, v in self.sizes.items())
                                   / max(sum(self.sizes.values()), 1), 2)}


class Batcher:
    """Queue -> batches of at most `max_size`, `max_in_flight` at a time.
    Jobs in one batch share `group(job)` (forecast start, horizon, model);
    a batch of one goes to `run_single`, larger ones to `run_batch`."""

    def __init__(self, run_single: RunSingle, run_batch: RunBatch, group: Callable[[dict], tuple],
                 max_size: int = 500, max_in_flight: int = 2, max_wait: float = 0.005):
        self._run_single, self._run_batch, self._group = run_single, run_batch, group
        self.max_size, self.max_in_flight, self.max_wait = max_size, max_in_flight, max_wait
        self._queue: dict[tuple, dict[str, dict]] = {}  # group -> {forecast_id: job}
        self._futures: dict[str, asyncio.Future] = {}  # queued or in flight
        # Each request's context (its trace): a batch runs in its first
        # request's, never in that of the request that happened to start
        # the dispatch loop (which every later forecast would then join).
        self._contexts: dict[str, contextvars.Context] = {}
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self.stats = BatchStats()

    async def submit(self, fid: str, job: dict) -> dict:
        """The response view of forecast `fid` once made (or failed)."""
        self.stats.requests += 1
        if fid in self._futures:  # made once, for the request that came first
            self.stats.shared += 1
            return {**await asyncio.shield(self._futures[fid]), "created": False}
        future = asyncio.get_running_loop().create_future()
        self._futures[fid] = future
        self._contexts[fid] = contextvars.copy_context()
        self._queue.setdefault(self._group(job), {})[fid] = job
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._dispatch_loop(), context=contextvars.Context())
        self._wake.set()
        return await asyncio.shield(future)

    def queued(self) -> int:
        return sum(len(jobs) for jobs in self._queue.values())

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue and self._in_flight < self.max_in_flight:
                if self._in_flight > 0 and self.max_wait > 0 and self.queued() < self.max_size:
                    # Under load: let a batch gather a moment (or fill up).
                    deadline = time.monotonic() + self.max_wait
                    while self.queued() < self.max_size and (left := deadline - time.monotonic()) > 0:
                        await asyncio.sleep(min(left, 0.001))
                key = next(iter(self._queue))
                jobs = self._queue[key]
                take = list(jobs.items())[: self.max_size]
                for fid, _ in take:
                    del jobs[fid]
                if not jobs:
                    del self._queue[key]
                self._in_flight += 1
                context = self._contexts.get(take[0][0]) or contextvars.Context()
                asyncio.create_task(self._run(take), context=context)

    async def _run(self, take: list[tuple[str, dict]]) -> None:
        self.stats.sizes[len(take)] = self.stats.sizes.get(len(take), 0) + 1
        try:
            if len(take) == 1:
                self.stats.singles += 1
                views = {take[0][0]: await self._run_single(*take[0])}
            else:
                self.stats.batches += 1
                views = await self._run_batch(take)
            for fid, _ in take:
                self._settle(fid, result=views.get(fid) or {"forecast_id": fid, "status": "FAILED",
                                                           "error": "the batch returned no result"})
        except Exception as e:  # noqa: BLE001 - every waiting request gets the failure
            log.exception("batch of %d failed", len(take))
            for fid, _ in take:
                self._settle(fid, error=e)
        finally:
            self._in_flight -= 1
            self._wake.set()

    def _settle(self, fid: str, result: dict | None = None, error: BaseException | None = None) -> None:
        self._contexts.pop(fid, None)
        future = self._futures.pop(fid, None)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
