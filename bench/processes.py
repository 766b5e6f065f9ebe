"""What the stack's processes hold and spend while a benchmark runs: peak
memory per service, CPU seconds (theirs and the machine's), a sampling
profile, the wait for the machine to settle, Redis's figures."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import redis

SERVICES = ("gateway", "forecaster", "telemetry", "trading")


class PeakRss(threading.Thread):
    """Samples the resident memory of every service and sidecar (and Redis,
    PostgreSQL) twice a second; keeps each one's peak (MiB)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak: dict[str, float] = {}
        self._done = threading.Event()

    @staticmethod
    def _service_of(cmdline: list[str]) -> str | None:
        line = " ".join(cmdline)
        for s in SERVICES:
            if line.endswith(f"-m services.{s}"):
                return s
            if "daprd" in line and f"--app-id {s}" in line:
                return f"daprd:{s}"
        if cmdline and cmdline[0].startswith("redis-server"):
            return "redis"
        if cmdline and "postgres" in cmdline[0]:
            return "postgres (all)"
        return None

    def sample(self) -> None:
        totals: dict[str, float] = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                name = self._service_of([c for c in cmd if c])
                if name is None:
                    continue
                rss = next(int(x.split()[1]) for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if x.startswith("VmRSS"))
            except (OSError, StopIteration):
                continue
            totals[name] = totals.get(name, 0.0) + rss / 1024
        for k, v in totals.items():
            self.peak[k] = max(self.peak.get(k, 0.0), round(v, 1))

    def run(self) -> None:
        while not self._done.wait(0.5):
            self.sample()

    def stop(self) -> dict:
        self._done.set()
        return dict(sorted(self.peak.items()))


def service_pid(name: str) -> int:
    """The pid of a service's app process (as PeakRss names them)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            cmd = [c for c in raw.split("\0") if c]
        except OSError:
            continue
        if PeakRss._service_of(cmd) == name:
            return int(pid)
    raise RuntimeError(f"no {name} process running")


def cpu_seconds(everything: bool = True) -> dict[str, float]:
    """CPU seconds used so far by each service, sidecar, Redis and PostgreSQL,
    and (`everything`) by every other process, as `other:<name>` (the
    control plane, Zipkin, Prometheus; `other:load generator` is this
    client): what the machine's busy share is made of."""
    out: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = [c for c in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                   .split("\0") if c]
            name = PeakRss._service_of(cmd)
            stat = Path(f"/proc/{pid}/stat").read_text()
            if name is None:
                if not everything:
                    continue
                name = "other:" + ("load generator" if int(pid) == os.getpid()
                                   else stat.split("(", 1)[1].rsplit(")", 1)[0])
            fields = stat.rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return out


def machine_jiffies() -> dict[str, int]:
    """The whole machine's CPU time so far by state (/proc/stat, all cores):
    busy (user, nice, system, irq, softirq), idle, iowait, and steal (time
    the hypervisor gave another guest while this one wanted to run)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields)
    return {"busy": user + nice + system + irq + softirq, "idle": idle, "iowait": iowait, "steal": steal}


class CpuProfile:
    """Where a scenario's time went: CPU seconds per process while it ran,
    and the whole machine's shares of busy, idle, iowait and steal time
    (a figure measured while the hypervisor stole a tenth of the cores is
    not the code's alone)."""

    def __enter__(self) -> CpuProfile:
        self._before, self._machine = cpu_seconds(), machine_jiffies()
        self.seconds: dict[str, float] = {}
        self.machine: dict[str, float] = {}
        return self

    def __exit__(self, *_) -> None:
        after = cpu_seconds()
        used = {k: round(v - self._before.get(k, 0.0), 1) for k, v in after.items()}
        self.seconds = dict(sorted(((k, v) for k, v in used.items() if v >= 0.1),
                                   key=lambda kv: -kv[1]))
        spent = {k: v - self._machine[k] for k, v in machine_jiffies().items()}
        total = max(sum(spent.values()), 1)
        self.machine = {f"{k}_share": round(v / total, 3) for k, v in spent.items()}


def settle(max_wait_s: float = 900) -> float:
    """Wait until the services are idle (after startup, the telemetry
    service catches actors up): their CPU below a fifth of a core for 3 s."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        before = sum(cpu_seconds(everything=False).values())
        time.sleep(3)
        if (sum(cpu_seconds(everything=False).values()) - before) / 3 < 0.2:
            break
    return round(time.perf_counter() - t0, 1)


def redis_figures() -> dict:
    r = redis.Redis(port=int(os.environ.get("INTRADAY_REDIS_PORT", "6379")))
    info = r.info("memory")
    keys = r.dbsize()
    workflow = sum(1 for _ in r.scan_iter("*workflow*", count=10_000))
    return {"keys": keys, "workflow_keys": workflow, "used_memory_mb": round(info["used_memory"] / 2**20, 1)}
