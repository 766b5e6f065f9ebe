"""The churn soak (`make soak`): normal traffic for --minutes (default 60)
while a fault loop cycles SIGTERM, SIGKILL and 10-40 s SIGSTOP pauses across
placement, scheduler, Sentry, every app and every daprd, Redis and
PostgreSQL; then the books.

Traffic (as the fault suite's, tests/faults): 4 single-device forecasts a
second (each a new forecast id), a price tick every 3 s (each a move: a
fleet forecast and a decision), a fleet forecast every minute, and a
numbered telemetry batch and price tick every second on the topics.

At the end, from the books: every accepted forecast COMPLETED or FAILED
with a reason and audited once; each decision once and the positions their
sum; every numbered message taken or dead-lettered; no workflow instance
open past its deadline + 30 s; scheduler jobs, Redis keys, stream backlog
and CPU against their level before; the acceptance rate during faults against the quiet rate
(aim: at least 80 %); the recovery time per fault (a probe forecast served
again), p50 and p99 per target. Figures in bench/results/soak.json.

With --replicas 2, the stack runs two forecasters and two gateways
(INTRADAY_REPLICAS) and the traffic goes through a balancer of the
soak's own, as a Kubernetes Service with readiness probes would spread it:
round robin over the gateways that answered their /health within the last
probe (every second, 1 s timeout), the other one tried on a refused or
dropped connection; the faults strike either replica. Figures then in
bench/results/soak-2-replicas.json.

Runs its own stack in .data/soak (stopped at the end); the ports must be
free (`make down`).

    .venv/bin/python bench/soak.py [--minutes 60] [--seed 1] [--replicas 1] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import machine  # noqa: E402
from processes import cpu_seconds  # noqa: E402

from tests.faults.books import (  # noqa: E402
    Numbered,
    Traffic,
    account_messages,
    check_forecast_books,
    check_trading_books,
    forecast_ok,
)
from tests.stack import PG_DSN, app_pid, eventually  # noqa: E402

DATA = ROOT / ".data" / "soak"
OUT = ROOT / "bench" / "results" / "soak.json"
GATEWAY = "http://127.0.0.1:8000"
APPS = ("gateway", "forecaster", "telemetry", "trading")
TARGETS = ("placement", "scheduler", "sentry", *APPS, *(f"daprd:{a}" for a in APPS), "redis", "postgres")
ACTIONS = ("SIGTERM", "SIGKILL", "SIGSTOP")
STREAMS = ("prices", "telemetry", "weather", "dead-letter")


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stack_sh(*args: str, env: dict) -> None:
    subprocess.run(["bash", "scripts/stack.sh", *args], cwd=ROOT, env=env, check=True,
                   capture_output=True, text=True, timeout=600)


def pid_of(target: str) -> int:
    run = DATA / "run"
    if target in ("placement", "scheduler", "sentry", "redis"):
        return int((run / f"{target}.pid").read_text())
    if target == "postgres":
        return int((DATA / "postgres" / "postmaster.pid").read_text().split()[0])
    if target.startswith("daprd:"):
        out = subprocess.run(["pgrep", "-f", f"daprd .*--app-id {target[6:]}( |$)"], capture_output=True,
                             text=True, check=True).stdout.split()
        return int(out[0])
    return app_pid(target)


class Timed(Traffic):
    """The fault suite's traffic, each acceptance timed (for the rate during faults)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.accepted_at: list[float] = []

    def submit(self, body: dict) -> None:
        before = len(self.accepted)
        super().submit(body)
        if len(self.accepted) > before:
            self.accepted_at.append(time.monotonic())


class Balanced(httpx.Client):
    """Requests spread over the gateways that pass their health probe."""

    def __init__(self, bases: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.bases, self._ready = bases, set(bases)
        self._turn = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._probe, daemon=True).start()

    def _probe(self) -> None:
        with httpx.Client(timeout=1.0) as probe:
            while not self._stop.wait(1.0):
                for base in self.bases:
                    try:
                        ok = probe.get(f"{base}/health").status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    with self._lock:
                        (self._ready.add if ok else self._ready.discard)(base)

    def _order(self) -> list[str]:
        with self._lock:
            self._turn += 1
            ready = [b for b in self.bases if b in self._ready] or list(self.bases)
        k = self._turn % len(ready)
        return ready[k:] + ready[:k] + [b for b in self.bases if b not in ready]

    def request(self, method, url, **kwargs):  # type: ignore[override]
        order = self._order()
        for n, base in enumerate(order):
            try:
                return super().request(method, f"{base}{url}", **kwargs)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
                if n == len(order) - 1:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._stop.set()
        super().close()


def fleet_forecasts(client: httpx.Client, stop: threading.Event, made: list[str]) -> None:
    """A fleet forecast of the whole fleet every minute (wait=false)."""
    while not stop.wait(60):
        try:
            r = client.post("/forecast/fleet", json={"horizon_hours": 24}, timeout=60)
            if r.status_code in (200, 202):
                made.append(r.json()["forecast_id"])
        except httpx.HTTPError:
            pass


def inject(target: str, action: str, rng: random.Random, env: dict) -> float:
    """One fault; returns once it is over (the process stopped or resumed)."""
    pid = pid_of(target)
    if action == "SIGSTOP":
        pause = rng.uniform(10, 40)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(pause)
        os.kill(pid, signal.SIGCONT)
        return pause
    # PostgreSQL's SIGTERM is a smart shutdown that waits for every client to leave: fast instead.
    os.kill(pid, signal.SIGINT if (target == "postgres" and action == "SIGTERM") else getattr(signal, action))
    # Over once the process is gone (a graceful stop finishes its work first),
    # so that the recovery counts from there.
    eventually(lambda: not Path(f"/proc/{pid}").exists(), timeout=60)
    if target in ("redis", "postgres"):  # not supervised: started again as `make up` does
        for attempt in range(5):  # a killed postmaster's backends take a moment to go
            try:
                stack_sh("start", target, env=env)
                break
            except subprocess.CalledProcessError:
                if attempt == 4:
                    raise
                time.sleep(3)
    return 0.0


def levels(rds: redis.Redis) -> dict:
    """Redis's keys, and each stream's backlog: the entries its consumer
    groups have not yet been handed plus those handed and not acknowledged.
    (Not XINFO's `lag`: entries-added minus entries-read, which a Redis
    restarted from its files leaves too high for good, all read or not.)"""
    backlog = {}
    for stream in STREAMS:
        try:
            groups = rds.xinfo_groups(stream)
        except redis.ResponseError:
            backlog[stream] = 0
            continue
        unread = (len(rds.xrange(stream, min=f"({g['last-delivered-id'].decode()}", count=100_000))
                  for g in groups)
        backlog[stream] = sum(int(g["pending"]) for g in groups) + sum(unread)
    return {"redis_keys": rds.dbsize(), "stream_backlog": backlog, "scheduler_jobs": scheduler_jobs()}


def scheduler_jobs() -> int | None:
    """Jobs the scheduler holds (workflow and actor reminders, the apps'
    jobs): its embedded etcd's keys under dapr/jobs/, counted through
    etcd's JSON gateway on the client port (loopback, stack.sh)."""
    prefix = b"dapr/jobs/"
    body = {"key": base64.b64encode(prefix).decode(), "count_only": True,
            "range_end": base64.b64encode(prefix[:-1] + bytes([prefix[-1] + 1])).decode()}
    try:
        r = httpx.post("http://127.0.0.1:52379/v3/kv/range", json=body, timeout=10)
        return int(r.json().get("count", 0))
    except (httpx.HTTPError, ValueError):
        return None


def idle_cpu(seconds: float = 30.0) -> float:
    """Cores the whole stack uses while nothing is asked of it."""
    before = sum(cpu_seconds().values())
    time.sleep(seconds)
    return round((sum(cpu_seconds().values()) - before) / seconds, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1,
                        help="forecasters and gateways (2: behind the soak's balancer)")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out = OUT if args.replicas == 1 else OUT.with_name(f"soak-{args.replicas}-replicas.json")
    env = {**os.environ, "INTRADAY_DATA_DIR": str(DATA), "INTRADAY_PRICE_DEBOUNCE_SECONDS": "1",
           "INTRADAY_REPLICAS": str(args.replicas),
           "INTRADAY_WATCHDOG_SCHEDULE": "@every 10s"}
    log(f"starting the stack in {DATA}")
    subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, capture_output=True)
    stack_sh("up", env=env)
    key = (DATA / "api-key").read_text().strip()
    headers = {"authorization": f"Bearer {key}"}
    client = (httpx.Client(base_url=GATEWAY, headers=headers, timeout=30) if args.replicas == 1 else
              Balanced([GATEWAY, "http://127.0.0.1:8100"], headers=headers, timeout=30))
    rds = redis.Redis(port=6379, decode_responses=False)
    assert eventually(lambda: forecast_ok(client), timeout=300), "no forecast from the fresh stack"
    devices = [d["device_id"] for d in client.get("/devices").json()]
    before = {**levels(rds), "idle_cpu_cores": idle_cpu()}
    log(f"before: {before}")
    stack = {"data_dir": DATA}
    faults: list[dict] = []
    stop_fleet, fleets = threading.Event(), []
    fleet_thread = threading.Thread(target=fleet_forecasts, args=(client, stop_fleet, fleets), daemon=True)
    began = time.monotonic()
    end = began + args.minutes * 60
    with Timed(client, devices, offset_hours=167) as traffic, \
            Numbered(stack, client, day=-200, rate=1.0) as msgs:
        fleet_thread.start()
        time.sleep(min(60, args.minutes * 60 / 6))  # a quiet start: the reference rate
        while time.monotonic() < end - 60:
            target, action = rng.choice(TARGETS), rng.choice(ACTIONS)
            t0 = time.monotonic()
            try:
                paused = inject(target, action, rng, env)
            except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
                log(f"{target} {action}: could not inject ({e})")
                continue
            over = time.monotonic()
            recovered = eventually(lambda: forecast_ok(client), timeout=300)
            recovery = time.monotonic() - over
            faults.append({"target": target, "action": action, "at_s": round(t0 - began, 1),
                           "paused_s": round(paused, 1), "recovered": bool(recovered),
                           "recovery_s": round(recovery, 1), "window": (t0, time.monotonic())})
            minutes = (time.monotonic() - began) / 60
            log(f"{minutes:5.1f} min: {target} {action}{f' {paused:.0f} s' if paused else ''}, served again "
                f"after {recovery:.1f} s; {len(traffic.accepted)} forecasts, {len(msgs.ticks)} ticks, "
                f"{len(msgs.batches)} batches so far")
            time.sleep(rng.uniform(15, 30))  # quiet between faults
        time.sleep(max(0.0, end - time.monotonic()))
        stop_fleet.set()
    log("traffic stopped; settling the books")
    views = traffic.settle(timeout=900)
    books: dict = {}
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        try:
            # The forecasts stream keeps the newest 10,000 only: the early ones are trimmed, not lost.
            books["forecasts"] = check_forecast_books(views, traffic.accepted, conn, rds,
                                                      streams_rolled_back=True)
        except AssertionError as e:
            books["forecasts"] = {"failed_check": str(e)[:2000]}
        try:
            books["trading"] = check_trading_books(conn)
        except AssertionError as e:
            books["trading"] = {"failed_check": str(e)[:2000]}
        books["trading"]["decisions_for_traffic_ticks"] = conn.execute(
            "SELECT count(*) FROM trade_decisions WHERE price_eur_mwh = ANY(%s)",
            (traffic.prices,)).fetchone()[0]
        books["trading"]["traffic_ticks"] = len(traffic.prices)
        time.sleep(30)
        books["workflows_open_past_deadline_plus_30_s"] = conn.execute(
            "SELECT count(*) FROM workflow_runs WHERE settled_at IS NULL AND due_at < now() - interval '30 s'"
        ).fetchone()[0]
    messages = account_messages(stack, msgs.ticks, msgs.batches, timeout=600)
    messages.pop("readings_stored")
    books["messages"] = {k: len(v) if isinstance(v, list) else v for k, v in messages.items()}
    books["fleet_forecasts_requested"] = len(fleets)
    after = {**levels(rds), "idle_cpu_cores": idle_cpu()}

    def rate(inside: bool) -> float:
        """Acceptances a second inside (or outside) the fault windows."""
        windows = [f["window"] for f in faults]
        span = sum(b - a for a, b in windows) if inside else (end - began) - sum(b - a for a, b in windows)
        n = sum(1 for t in traffic.accepted_at if any(a <= t <= b for a, b in windows) == inside)
        return n / span if span > 0 else float("nan")

    by_target: dict[str, list[float]] = {}
    for f in faults:
        by_target.setdefault(f["target"], []).append(f["recovery_s"])
    recovery = {t: {"faults": len(v), "p50_s": round(statistics.median(v), 1),
                    "p99_s": round(sorted(v)[min(len(v) - 1, int(0.99 * len(v)))], 1)}
                for t, v in by_target.items()}
    quiet, faulted = rate(False), rate(True)
    figures = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
        "minutes": args.minutes, "seed": args.seed, "replicas": args.replicas, "faults": len(faults),
        "fault_list": [{k: v for k, v in f.items() if k != "window"} for f in faults],
        "recovery_by_target": recovery,
        "acceptance_per_s": {"quiet": round(quiet, 2), "during_faults": round(faulted, 2),
                             "ratio": round(faulted / quiet, 3) if quiet else None, "aim_ratio": 0.8},
        "refused_requests": len(traffic.refused), "books": books, "before": before, "after": after,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    f = books["forecasts"]
    log(f"{len(faults)} faults in {args.minutes:g} min; forecasts accepted {f.get('accepted')}, lost "
        f"{f.get('lost')}, doubled {f.get('duplicated_audit_rows')}; messages lost "
        f"{books['messages']['ticks_lost']} ticks, {books['messages']['batches_lost']} batches; workflows "
        f"open past deadline {books['workflows_open_past_deadline_plus_30_s']}; acceptance during faults "
        f"{figures['acceptance_per_s']['ratio']} of quiet; written {out.relative_to(ROOT)}")
    for target, r in sorted(recovery.items()):
        log(f"  {target:<18} {r['faults']:>3} faults  recovery p50 {r['p50_s']:>5} s  p99 {r['p99_s']:>5} s")
    if not args.keep:
        subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, capture_output=True)
    ok = (f.get("lost") == 0 and f.get("duplicated_audit_rows") == 0
          and "failed_check" not in books["trading"]
          and books["messages"]["ticks_lost"] == 0 and books["messages"]["batches_lost"] == 0
          and books["workflows_open_past_deadline_plus_30_s"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
