"""Failpoints: named places in the code where the fault suite
(tests/faults/) makes a process die at an exact moment, as etcd's gofail
or TiKV's fail-rs do: between a trading decision and its acknowledgement,
half-way through an ingest batch.

Off unless INTRADAY_FAILPOINTS_DIR is set (the test stack sets it;
production refuses it, intraday.config). A failpoint fires once: arming it
is creating a file named after it in that directory, and the process that
reaches it removes the file, then kills itself with SIGKILL (no shutdown
hook, no flush: a crash). The supervisor starts it again and the file is
gone, so the redelivered work goes through. Armed with `hang=N` instead, it
holds the thread that reaches it for N seconds and lets it go on (a call
that hangs, as a dependency that stops answering makes it).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from intraday.config import get_settings

log = logging.getLogger("intraday.failpoints")

# Every failpoint the code has (a test arms one by name).
TRADING_AFTER_DECISION = "trading.after_decision"  # recorded and published, not acknowledged
TELEMETRY_MID_INGEST = "telemetry.mid_ingest"  # a batch half written to the store
TRADING_ON_PRICE = "trading.on_price"  # a price message, before anything is done with it
TRADING_BEFORE_DECISION = "trading.before_decision"  # a move observed (pending), not yet decided
TELEMETRY_ON_BATCH = "telemetry.on_batch"  # a telemetry message, before anything is done with it
FORECAST_AFTER_PUBLISH = "forecast.after_publish"  # published, not yet audited
FORECAST_IN_FETCH = "forecast.in_fetch"  # the fetch activity, before it asks the actor
FLEET_IN_SHARD = "fleet.in_shard"  # a fleet forecast's shard, before it reads its windows
TRAINING_BEFORE_DECISION = "training.before_decision"  # a candidate trained and scored, not yet decided on
AUDIT_BEFORE_COMMIT = "audit.before_commit"  # forecasts' audit rows written, their COMMIT not yet sent
KNOWN = (TRADING_AFTER_DECISION, TELEMETRY_MID_INGEST, FORECAST_AFTER_PUBLISH, FORECAST_IN_FETCH,
         TRADING_ON_PRICE, TRADING_BEFORE_DECISION, TELEMETRY_ON_BATCH, FLEET_IN_SHARD,
         TRAINING_BEFORE_DECISION, AUDIT_BEFORE_COMMIT)


class FailpointError(RuntimeError):
    """Raised where a failpoint armed with `fail=N` is reached."""


def _directory() -> Path | None:
    where = get_settings().failpoints_dir
    return Path(where) if where else None


def arm(directory: Path, name: str, hang: float | None = None, fail: float | None = None) -> Path:
    """Make the next process that reaches `name` die there, or with `hang`
    hold it there that many seconds, or with `fail` fail there for that
    many seconds from now (tests)."""
    if name not in KNOWN:
        raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(KNOWN)}")
    for what, value in (("hang", hang), ("fail", fail)):
        if value is not None and not value > 0:
            raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    action = "" if hang is None else f"hang {hang}"
    if fail is not None:
        action = f"fail_until {time.time() + fail}"
    path.write_text(action)
    return path


def reach(name: str) -> None:
    """Die (or hang) here if `name` is armed; otherwise nothing (one stat
    call)."""
    directory = _directory()
    if directory is None:
        return
    path = directory / name
    try:
        action = path.read_text().split()
        if action and action[0] == "fail_until" and time.time() < float(action[1]):
            raise FailpointError(f"failpoint {name}: failing until {action[1]}")
        path.unlink()
    except FileNotFoundError:
        return
    if action and action[0] == "fail_until":
        return
    if action and action[0] == "hang":
        log.warning("failpoint %s: hanging %s s", name, action[1])
        time.sleep(float(action[1]))
        return
    log.warning("failpoint %s: killing this process", name)
    os.kill(os.getpid(), signal.SIGKILL)
