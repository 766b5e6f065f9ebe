"""The dynamic batcher: a lone request runs at once and alone; under load
requests gather into batches; repeats share one forecast; failures reach
every waiting request."""

from __future__ import annotations

import asyncio

import pytest

from services.forecaster.batching import Batcher


class Recorder:
    """Runs that take `delay` seconds and remember what they were given."""

    def __init__(self, delay: float = 0.02, fail: bool = False):
        self.delay, self.fail = delay, fail
        self.singles: list[str] = []
        self.batches: list[list[str]] = []

    async def single(self, fid: str, job: dict) -> dict:
        self.singles.append(fid)
        await asyncio.sleep(self.delay)
        return {"forecast_id": fid, "status": "COMPLETED", "via": "single"}

    async def batch(self, take: list[tuple[str, dict]]) -> dict[str, dict]:
        self.batches.append([fid for fid, _ in take])
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the batch workflow failed")
        return {fid: {"forecast_id": fid, "status": "COMPLETED", "via": "batch"} for fid, _ in take}


def batcher(rec: Recorder, **kwargs) -> Batcher:
    return Batcher(rec.single, rec.batch, lambda job: (job["start"],), **kwargs)


def test_a_lone_request_runs_at_once_on_the_single_path():
    rec = Recorder()

    async def main():
        b = batcher(rec, max_wait=1.0)  # a long wait would show if a lone request paid it
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        view = await b.submit("a", {"start": "s"})
        return view, loop.time() - t0

    view, took = asyncio.run(main())
    assert view["via"] == "single" and rec.singles == ["a"] and rec.batches == []
    assert took < 0.5


def test_concurrent_requests_gather_into_batches_by_group():
    rec = Recorder()

    async def main():
        b = batcher(rec, max_size=50, max_in_flight=1, max_wait=0.0)
        jobs = [(f"f{i}", {"start": "s1" if i % 4 else "s2"}) for i in range(200)]
        views = await asyncio.gather(*(b.submit(fid, job) for fid, job in jobs))
        return b, views

    b, views = asyncio.run(main())
    assert [v["forecast_id"] for v in views] == [f"f{i}" for i in range(200)]
    # All arrived at once: batches of at most 50, each of one group (50 + 150).
    assert rec.singles == [] and [len(batch) for batch in rec.batches] == [50, 50, 50, 50]
    assert sorted(f for batch in rec.batches for f in batch) == sorted(f"f{i}" for i in range(200))
    for batch in rec.batches:
        assert len({int(f[1:]) % 4 == 0 for f in batch}) == 1
    assert b.stats.requests == 200 and b.stats.batches == 4


def test_requests_arriving_while_one_runs_wait_for_it_and_go_together():
    rec = Recorder(delay=0.05)

    async def main():
        b = batcher(rec, max_in_flight=1, max_wait=0.0)
        tasks = []
        for i in range(30):  # one every 2 ms: the first runs alone, the rest queue behind it
            tasks.append(asyncio.create_task(b.submit(f"f{i}", {"start": "s"})))
            await asyncio.sleep(0.002)
        return await asyncio.gather(*tasks)

    views = asyncio.run(main())
    assert len(views) == 30 and rec.singles == ["f0"]
    assert len(rec.batches) <= 2 and sum(map(len, rec.batches)) == 29


def test_repeats_of_a_forecast_share_one_run():
    rec = Recorder()

    async def main():
        b = batcher(rec, max_in_flight=1)
        return await asyncio.gather(*(b.submit(fid, {"start": "s"}) for fid in ["x", "y", "x", "y", "x"]))

    views = asyncio.run(main())
    assert [v["forecast_id"] for v in views] == ["x", "y", "x", "y", "x"]
    made = rec.singles + [f for batch in rec.batches for f in batch]
    assert sorted(made) == ["x", "y"]


def test_a_failed_batch_fails_every_request_in_it_and_the_batcher_goes_on():
    rec = Recorder(fail=True)

    async def main():
        b = batcher(rec, max_in_flight=1, max_wait=0.0)
        first = asyncio.create_task(b.submit("a", {"start": "s"}))
        await asyncio.sleep(0.005)  # "a" is in flight; the rest queue behind it
        rest = [asyncio.create_task(b.submit(f, {"start": "s"})) for f in ("b", "c")]
        done = await asyncio.gather(first, *rest, return_exceptions=True)
        rec.fail = False
        again = await b.submit("d", {"start": "s"})
        return done, again

    done, again = asyncio.run(main())
    assert done[0]["via"] == "single"
    assert all(isinstance(r, RuntimeError) for r in done[1:])
    assert again["status"] == "COMPLETED"


@pytest.mark.parametrize("in_flight", [1, 3])
def test_no_more_batches_in_flight_than_allowed(in_flight):
    running = 0
    most = 0

    async def run(_take):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1
        return {fid: {"forecast_id": fid} for fid, _ in _take}

    async def single(fid, job):
        return (await run([(fid, job)]))[fid]

    async def main():
        b = Batcher(single, run, lambda job: (), max_size=7, max_in_flight=in_flight, max_wait=0.001)
        await asyncio.gather(*(b.submit(str(i), {}) for i in range(100)))

    asyncio.run(main())
    assert most == in_flight


def test_each_request_runs_in_its_own_context_not_the_first_ones():
    """A forecast runs in its request's context (its trace): the dispatch
    loop is started by the first request, and every later forecast used to
    run in that one's context, so all of them joined its trace."""
    import contextvars

    request = contextvars.ContextVar("request", default=None)
    seen: dict[str, str | None] = {}

    async def single(fid: str, job: dict) -> dict:
        seen[fid] = request.get()
        return {"forecast_id": fid, "status": "COMPLETED"}

    async def one(b: Batcher, fid: str) -> dict:
        request.set(f"request of {fid}")  # as the server's middleware sets each request's span
        return await b.submit(fid, {"start": fid})

    async def main() -> None:
        b = Batcher(single, Recorder().batch, lambda job: (job["start"],))
        for fid in ("a", "b", "c"):  # one after another: each a lone request
            await asyncio.create_task(one(b, fid))
        assert request.get() is None

    asyncio.run(main())
    assert seen == {"a": "request of a", "b": "request of b", "c": "request of c"}
