"""The forecaster's guard of its sidecar's workflow engine
(services/forecaster/engine_guard.py): a restart of the sidecar is asked
for only after the engine has kept saying its actor types are not
registered for WEDGED_AFTER seconds with no answer between, and at most
once per RESTART_GAP. (The wedge itself, and the restart healing it, run
for real in tests/compose.)"""

from __future__ import annotations

import pytest

from services.forecaster import engine_guard
from services.forecaster.engine_guard import RESTART_GAP, WEDGED_AFTER, Guard

WEDGED = ("failed to submit termination request: failed to create actor: actor type "
          "dapr.internal.default.forecaster.workflow not registered")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def guarded():
    clock, restarts = Clock(), []
    return Guard(lambda: restarts.append(clock.now), clock), clock, restarts


def test_a_restart_only_after_the_engine_kept_failing_long_enough(guarded):
    guard, clock, restarts = guarded
    assert not guard.seen(WEDGED)
    clock.now += WEDGED_AFTER - 1
    assert not guard.seen(WEDGED) and restarts == []
    clock.now += 2
    assert guard.seen(WEDGED) and restarts == [clock.now]


def test_an_answer_between_starts_the_count_again(guarded):
    guard, clock, restarts = guarded
    guard.seen(WEDGED)
    clock.now += WEDGED_AFTER / 2
    guard.answered()  # e.g. a worker that connected a little late
    clock.now += WEDGED_AFTER / 2 + 1
    assert not guard.seen(WEDGED)
    clock.now += WEDGED_AFTER + 1
    assert guard.seen(WEDGED) and len(restarts) == 1


def test_other_errors_are_the_engine_answering(guarded):
    guard, clock, restarts = guarded
    guard.seen(WEDGED)
    clock.now += WEDGED_AFTER / 2
    assert not guard.seen("an instance with the ID 'fc-1' already exists")
    clock.now += WEDGED_AFTER
    assert not guard.seen(WEDGED) and restarts == []


def test_at_most_one_restart_per_gap(guarded):
    guard, clock, restarts = guarded
    guard.seen(WEDGED)
    clock.now += WEDGED_AFTER + 1
    assert guard.seen(WEDGED)
    for _ in range(3):  # still wedged while the sidecar comes back
        guard.seen(WEDGED)
        clock.now += WEDGED_AFTER + 1
        assert not guard.seen(WEDGED)
    clock.now += RESTART_GAP  # still failing when the gap is over: asked again
    assert guard.seen(WEDGED) and len(restarts) == 2


def test_a_restart_that_fails_is_asked_for_again_after_the_gap():
    clock, calls = Clock(), []

    def refused() -> None:
        calls.append(clock.now)
        raise ConnectionError("the sidecar did not answer")

    guard = Guard(refused, clock)
    guard.seen(WEDGED)
    clock.now += WEDGED_AFTER + 1
    assert guard.seen(WEDGED) and calls == [clock.now]
    clock.now += RESTART_GAP + WEDGED_AFTER + 2
    guard.seen(WEDGED)
    clock.now += WEDGED_AFTER + 1
    assert guard.seen(WEDGED) and len(calls) == 2


class Client:
    """A workflow client whose engine answers as told."""

    def __init__(self, answer: str | None) -> None:
        self.answer, self.asked = answer, []

    def raise_workflow_event(self, instance_id: str, event_name: str, data=None) -> None:
        self.asked.append(instance_id)
        if self.answer:
            raise RuntimeError(self.answer)


def test_the_probe_reads_the_engines_answer(monkeypatch):
    clock, restarts = Clock(), []
    monkeypatch.setattr(engine_guard, "guard", Guard(lambda: restarts.append(1), clock))
    wedged = Client(WEDGED)
    assert not engine_guard.probe(wedged) and wedged.asked == [f"{engine_guard.PROBE_INSTANCE}-0"]
    not_found = Client("rpc error: no such instance exists")
    assert engine_guard.probe(not_found)
    assert len(set(not_found.asked)) == engine_guard.PROBES  # spread over the replicas' engines
    # Before the worker connects, placement knows no host: no answer, no wedge either.
    assert not engine_guard.probe(Client("did not find address for actor dapr.internal.default.x.workflow/p"))
    # Wedged across rounds: the sidecar is restarted.
    assert not engine_guard.probe(wedged) and restarts == []
    clock.now += engine_guard.WEDGED_AFTER + 1
    assert not engine_guard.probe(wedged) and restarts == [1]
