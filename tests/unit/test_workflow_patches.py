"""workflows/patches.py: a withheld patch is not taken (the release before
it), a patch otherwise is the SDK's answer, and names are checked."""

from __future__ import annotations

import pytest

from intraday.config import get_settings
from workflows import patches


class Context:
    """What `patched` asks of a workflow context: is_patched, counted."""

    def __init__(self, answer: bool) -> None:
        self.answer, self.asked = answer, []

    def is_patched(self, name: str) -> bool:
        self.asked.append(name)
        return self.answer


@pytest.fixture
def settings(monkeypatch):
    def use(withheld: str) -> None:
        monkeypatch.setenv("INTRADAY_WORKFLOW_PATCHES_WITHHELD", withheld)
        get_settings.cache_clear()
    yield use
    get_settings.cache_clear()


def test_a_patch_is_the_sdk_s_answer_unless_withheld(settings):
    settings("")
    for answer in (True, False):
        ctx = Context(answer)
        assert patches.patched(ctx, patches.RUN_STARTED) is answer
        assert ctx.asked == [patches.RUN_STARTED]
    settings(f" {patches.RUN_STARTED} ,")
    ctx = Context(True)
    assert patches.patched(ctx, patches.RUN_STARTED) is False
    assert ctx.asked == []  # not recorded in the history either: the older release never asked


def test_unknown_names_are_refused(settings):
    settings("")
    with pytest.raises(ValueError, match="unknown workflow patch"):
        patches.patched(Context(True), "no-such-patch")
    settings("run-startd")
    with pytest.raises(ValueError, match="run-startd"):
        patches.withheld()


def test_the_started_step_is_scheduled_only_with_the_patch(settings):
    class Scheduling(Context):
        def call_activity(self, activity, input, retry_policy):
            return (activity.__name__, input)

        instance_id = "fc-1"

    settings("")
    assert patches.started(Scheduling(True), "forecast_workflow_v3") == (
        "run_started", {"instance_id": "fc-1", "workflow": "forecast_workflow_v3"})
    assert patches.started(Scheduling(False), "forecast_workflow_v3") is None
    settings(patches.RUN_STARTED)
    assert patches.started(Scheduling(True), "forecast_workflow_v3") is None
