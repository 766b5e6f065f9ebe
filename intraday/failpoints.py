"""Failpoints: named places in the code where the fault suite
(tests/faults/) makes a process die at an exact moment, as etcd's gofail
or TiKV's fail-rs do: between a trading decision and its acknowledgement,
half-way through an ingest batch.

Off unless INTRADAY_FAILPOINTS_DIR is set (the test stack sets it;
production refuses it, intraday.config). A failpoint fires once: arming it
is creating a file named after it in that directory, and the process that
reaches it removes the file, then kills itself with SIGKILL (no shutdown
hook, no flush: a crash). The supervisor starts it again and the file is
gone, so the redelivered work goes through.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from intraday.config import get_settings

log = logging.getLogger("intraday.failpoints")

# Every failpoint the code has (a test arms one by name).
TRADING_AFTER_DECISION = "trading.after_decision"  # recorded and published, not acknowledged
TELEMETRY_MID_INGEST = "telemetry.mid_ingest"  # a batch half written to the store
FORECAST_AFTER_PUBLISH = "forecast.after_publish"  # published, not yet audited
KNOWN = (TRADING_AFTER_DECISION, TELEMETRY_MID_INGEST, FORECAST_AFTER_PUBLISH)


def _directory() -> Path | None:
    where = get_settings().failpoints_dir
    return Path(where) if where else None


def arm(directory: Path, name: str) -> Path:
    """Make the next process that reaches `name` die there (tests)."""
    if name not in KNOWN:
        raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(KNOWN)}")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.touch()
    return path


def reach(name: str) -> None:
    """Die here if `name` is armed; otherwise nothing (one stat call)."""
    directory = _directory()
    if directory is None:
        return
    try:
        (directory / name).unlink()
    except FileNotFoundError:
        return
    log.warning("failpoint %s: killing this process", name)
    os.kill(os.getpid(), signal.SIGKILL)
