"""The sidecar's workflow engine, watched from the app after each start.

Dapr 1.18.2 can wedge the engine when this app dies with workflow steps in
flight (a crash, the OOM killer): on the old worker's disconnect daprd
unregisters the workflow actor types and halts their actors, the halt waits
for an orchestration's lock that an in-flight step holds and never gives
back, and the restarted app's worker waits behind it for the registration
lock, for good. Seen by killing the forecaster under load in the composed
system (tests/compose): every workflow call then fails with "actor type
dapr.internal.<namespace>.forecaster.workflow not registered", new forecasts
are refused and those in flight stay RUNNING; a goroutine dump showed
`UnRegisterActors` waiting on `HaltAll` and the new connection on the lock.
Only a restart of the sidecar ends it (a restart of the app does not).

So after each start the app probes the engine (`probe`: an event raised to
instances that do not exist, which only the engine's own actors can answer,
"no such instance exists") until it answers; if it keeps answering "not
registered" for `WEDGED_AFTER` seconds (a worker connects in well under a second), the app
asks its sidecar to shut down (`POST /v1.0/shutdown`), logged at ERROR and
counted (`intraday_sidecar_restarts_total{reason}`), and the sidecar's
restart policy (Compose's, the pod's) brings it back with the engine whole:
the worker reconnects and the instances in flight go on from their
reminders. Errors the app meets in its own workflow calls count too
(`seen`), so a wedge after the start is found by the next calls.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable

from clients import metrics, sidecar

log = logging.getLogger("forecaster.engine")
UNREGISTERED = re.compile(r"actor type \S+\.(workflow|activity|retentioner) not registered")
PROBE_INSTANCE = "intraday-engine-probe"  # never started: the engine answers NOT_FOUND
PROBES = 4
NOT_FOUND = "no such instance exists"  # the engine's answer (durabletask's ErrInstanceNotFound)
PROBE_EVERY = 5.0
WEDGED_AFTER = 20.0  # "not registered" this long, with no answer between: wedged
RESTART_GAP = 120.0  # one restart asked for at most this often
WATCH_FOR = 300.0  # after a start, probe at most this long


class Guard:
    """What the app saw of the engine: since when it keeps saying "not
    registered", and when a restart of the sidecar was last asked for."""

    def __init__(self, restart: Callable[[], None], clock: Callable[[], float] = time.monotonic):
        self._restart, self._clock = restart, clock
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._restarted_at: float | None = None

    def answered(self) -> None:
        """The engine answered a call (its actor types are there)."""
        with self._lock:
            self._failing_since = None

    def seen(self, error: BaseException | str) -> bool:
        """An error of a workflow call; True if it asked for a restart."""
        text = error if isinstance(error, str) else _details(error)
        if not UNREGISTERED.search(text):
            self.answered()  # any other error is the engine's own answer
            return False
        now = self._clock()
        with self._lock:
            if self._failing_since is None:
                self._failing_since = now
                return False
            if now - self._failing_since < WEDGED_AFTER:
                return False
            if self._restarted_at is not None and now - self._restarted_at < RESTART_GAP:
                return False
            waited, self._restarted_at, self._failing_since = now - self._failing_since, now, None
        log.error("the sidecar's workflow engine has answered %r for %.0f s: asking the sidecar to restart",
                  text[:200], waited)
        metrics.SIDECAR_RESTARTS.labels("workflow-engine-wedged").inc()
        try:
            self._restart()
        except Exception as e:  # noqa: BLE001 - the next error asks again after the gap
            log.error("the sidecar did not take the shutdown: %s", e)
        return True


def _details(error: BaseException) -> str:
    details = getattr(error, "details", None)
    return str(details() if callable(details) else error) or repr(error)


guard = Guard(sidecar.shutdown)


def probe(client) -> bool:
    """One round of probes; True once the engine answers for itself ("no
    such instance", from the engine's own actor). Several instance ids: with
    replicas, placement spreads them over the replicas' engines, so one of
    them lands on this one's (all of them, alone). Before the app's worker
    has connected, placement knows no host for the engine's actors: no
    answer yet, but not a wedge either."""
    for i in range(PROBES):
        try:
            client.raise_workflow_event(f"{PROBE_INSTANCE}-{i}", "probe", data=None)
        except Exception as e:  # noqa: BLE001 - its answer is the error
            text = _details(e)
            if UNREGISTERED.search(text):
                guard.seen(e)
                return False
            if NOT_FOUND not in text:
                return False
    guard.answered()
    return True


async def watch(client) -> None:
    """After the app's start: probe until the engine answers (restarting a
    wedged sidecar on the way), for at most WATCH_FOR seconds."""
    started = time.monotonic()
    while time.monotonic() - started < WATCH_FOR:
        if await asyncio.to_thread(probe, client):
            log.info("the sidecar's workflow engine answers (%.1f s after the start)",
                     time.monotonic() - started)
            return
        await asyncio.sleep(PROBE_EVERY)
    log.error("the sidecar's workflow engine did not answer in %.0f s after the start", WATCH_FOR)
