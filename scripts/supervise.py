"""The local stack's supervisor, as Kubernetes restarts a pod's containers:
`stack.sh up` starts it once every app and sidecar is healthy. It records
how each app process and each daprd was started (command line, working
directory, environment) and, when one of them dies, starts it again the
same way, backing off from 1 s doubling to 30 s while it keeps dying (reset
after a minute up). Dapr's placement and scheduler too (their pid files in
RUN_DIR follow the restarted process, so `stack.sh down` stops it). Every
death and restart is logged (one JSON line each, .data/logs/supervisor.log).

A file RUN_DIR/hold/NAME (NAME as logged: `telemetry`, `daprd:telemetry`,
`placement`; another replica's with its port, `forecaster@8101`) holds a
dead process down until it is removed, as scaling a deployment to zero
would: the fault suite keeps a service down that way.
A file RUN_DIR/env/NAME (a JSON object: variable to value, null to unset)
changes the environment NAME is started again with, as a deploy changes a
pod's spec: the deploy test (tests/faults/test_deploy.py) restarts the
forecaster as one release, then the next, that way.

    python scripts/supervise.py RUN_DIR      (stack.sh runs it; it stops with `stack.sh down`)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

SERVICES = ("telemetry", "forecaster", "trading", "gateway")
CONTROL_PLANE = ("sentry", "placement", "scheduler")  # started by stack.sh with a pid file each
POLL_SECONDS = 1.0
BACKOFF_FIRST, BACKOFF_MAX, HEALTHY_RESET = 1.0, 30.0, 60.0


@dataclass
class Process:
    """One supervised process and how to start it again."""

    name: str
    argv: list[str]
    cwd: str
    env: dict[str, str]
    log: Path
    pid: int
    started: float = field(default_factory=time.monotonic)
    backoff: float = BACKOFF_FIRST
    due: float | None = None  # when a restart is due, once it died
    restarts: int = 0
    pidfile: Path | None = None  # kept up to date for stack.sh
    deploys: Path | None = None  # RUN_DIR/env: the environment's changes, read at each restart

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        try:  # a zombie (our own child that exited) is not alive
            return Path(f"/proc/{self.pid}/stat").read_text().split(") ")[1][0] != "Z"
        except (FileNotFoundError, IndexError):
            return False

    def environment(self) -> dict[str, str]:
        env = dict(self.env)
        changes = self.deploys / self.name if self.deploys is not None else None
        if changes is not None and changes.exists():
            try:
                wanted = dict(json.loads(changes.read_text()))
            except (ValueError, TypeError) as e:
                say("deploy file ignored", process=self.name, file=str(changes), error=str(e))
                return env
            for key, value in wanted.items():
                if value is None:
                    env.pop(key, None)
                else:
                    env[key] = str(value)
        return env

    def start(self) -> None:
        with open(self.log, "ab") as out:
            child = subprocess.Popen(self.argv, cwd=self.cwd, env=self.environment(), stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.pid, self.started, self.restarts = child.pid, time.monotonic(), self.restarts + 1
        if self.pidfile is not None:
            self.pidfile.write_text(f"{self.pid}\n")


def say(event: str, **fields) -> None:
    print(json.dumps({"time": datetime.now(UTC).isoformat(), "event": event, **fields}), flush=True)


def find(name: str, sidecar: bool) -> dict[str, int]:
    """The app's processes (or their daprd), every replica, by label:
    `forecaster`, `daprd:forecaster`, and another replica's with its port,
    `forecaster@8101`, `daprd:forecaster@3601` (scripts/stack.sh,
    INTRADAY_REPLICAS)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            line = " ".join(argv)
            if sidecar and "daprd" in argv[0] and f"--app-id {name}" in line:
                port = int(argv[argv.index("--dapr-http-port") + 1]) if "--dapr-http-port" in argv else 0
                found[f"daprd:{name}" + (f"@{port}" if port >= 3600 else "")] = int(pid)
            elif not sidecar and line.rstrip().endswith(f"-m services.{name}"):
                env = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
                port = next((e.split("=", 1)[1] for e in env if e.startswith("INTRADAY_APP_PORT=")), "")
                found[name + (f"@{port}" if port else "")] = int(pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError, IndexError):
            continue
    return found


def record(name: str, sidecar: bool, logs: Path) -> list[Process]:
    found = find(name, sidecar)
    if not found:
        raise SystemExit(f"supervisor: no {'daprd of ' if sidecar else ''}{name} running")
    return [_recorded(label, pid, logs) for label, pid in sorted(found.items())]


def record_daemon(name: str, run_dir: Path, logs: Path) -> Process:
    """A control-plane process stack.sh started with RUN_DIR/NAME.pid."""
    pidfile = run_dir / f"{name}.pid"
    try:
        pid = int(pidfile.read_text())
    except (FileNotFoundError, ValueError):
        raise SystemExit(f"supervisor: no {name} running ({pidfile})") from None
    process = _recorded(name, pid, logs)
    process.pidfile = pidfile
    return process


def _recorded(label: str, pid: int, logs: Path) -> Process:
    argv = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if a]
    env = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
               if "=" in item)
    return Process(label, argv, os.readlink(f"/proc/{pid}/cwd"), env,
                   logs / f"{label.replace(':', '-')}-restarted.log", pid)


def main(run_dir: Path) -> None:
    logs = run_dir.parent / "logs"
    procs = [p for name in SERVICES for sidecar in (True, False) for p in record(name, sidecar, logs)]
    procs += [record_daemon(name, run_dir, logs) for name in CONTROL_PLANE]
    for p in procs:
        p.deploys = run_dir / "env"
    held: set[str] = set()
    say("supervising", processes={p.name: p.pid for p in procs})
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        now = time.monotonic()
        for p in procs:
            if p.alive():
                if now - p.started > HEALTHY_RESET:
                    p.backoff = BACKOFF_FIRST
                continue
            if (run_dir / "hold" / p.name).exists():
                if p.name not in held:
                    held.add(p.name)
                    say("held", process=p.name)
                p.due = None
                continue
            if p.name in held:
                held.discard(p.name)
                say("released", process=p.name)
            if p.due is None:  # just died
                p.due = now + p.backoff
                say("died", process=p.name, pid=p.pid, restart_in_s=p.backoff)
            elif now >= p.due:
                p.start()
                say("restarted", process=p.name, pid=p.pid, restarts=p.restarts)
                p.due, p.backoff = None, min(p.backoff * 2, BACKOFF_MAX)
        time.sleep(POLL_SECONDS)
    say("stopped")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
