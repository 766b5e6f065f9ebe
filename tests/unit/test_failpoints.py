"""Failpoints (intraday/failpoints.py): an armed one kills the process that
reaches it (or holds it, armed to hang), once; an unarmed or disabled one
does nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from intraday import failpoints

REACH = ("from intraday import failpoints; "
         f"failpoints.reach({failpoints.TRADING_AFTER_DECISION!r}); print('passed')")


def _run(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", REACH], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)


def test_an_armed_failpoint_kills_the_process_that_reaches_it_once(tmp_path):
    env = {"INTRADAY_FAILPOINTS_DIR": str(tmp_path)}
    armed = failpoints.arm(tmp_path, failpoints.TRADING_AFTER_DECISION)
    first = _run(env)
    assert first.returncode == -signal.SIGKILL and "passed" not in first.stdout
    assert not armed.exists()
    second = _run(env)  # the restarted process goes through
    assert second.returncode == 0 and "passed" in second.stdout


def test_a_failpoint_does_nothing_when_the_directory_is_not_set(tmp_path):
    failpoints.arm(tmp_path, failpoints.TRADING_AFTER_DECISION)
    r = _run({"INTRADAY_FAILPOINTS_DIR": ""})
    assert r.returncode == 0 and "passed" in r.stdout
    assert (tmp_path / failpoints.TRADING_AFTER_DECISION).exists()


def test_arming_an_unknown_failpoint_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown failpoint"):
        failpoints.arm(tmp_path, "trading.nowhere")
    assert not list(tmp_path.iterdir())


def test_a_failpoint_armed_to_hang_holds_the_thread_then_lets_it_go_on(tmp_path):
    env = {"INTRADAY_FAILPOINTS_DIR": str(tmp_path)}
    armed = failpoints.arm(tmp_path, failpoints.TRADING_AFTER_DECISION, hang=1.5)
    timed = REACH.replace("failpoints.reach", "import time; t = time.monotonic(); failpoints.reach") \
        .replace("print('passed')", "print('passed', time.monotonic() - t)")
    r = subprocess.run([sys.executable, "-c", timed], env={**os.environ, **env}, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("passed"), r.stderr
    assert float(r.stdout.split()[1]) >= 1.5  # held, not killed
    assert not armed.exists()
    with pytest.raises(ValueError, match="positive"):
        failpoints.arm(tmp_path, failpoints.TRADING_AFTER_DECISION, hang=0)


def test_a_failpoint_armed_to_fail_raises_until_its_time_is_up(tmp_path):
    env = {"INTRADAY_FAILPOINTS_DIR": str(tmp_path)}
    armed = failpoints.arm(tmp_path, failpoints.TRADING_AFTER_DECISION, fail=2)
    first, second = _run(env), _run(env)
    for r in (first, second):  # every pass raises while armed, and the file stays
        assert r.returncode == 1 and "FailpointError" in r.stderr and "passed" not in r.stdout
    assert armed.exists()
    armed.write_text("fail_until 0")  # its time is up
    third = _run(env)
    assert third.returncode == 0 and "passed" in third.stdout
    assert not armed.exists()
    with pytest.raises(ValueError, match="fail must be a positive"):
        failpoints.arm(tmp_path, failpoints.TRADING_AFTER_DECISION, fail=0)
