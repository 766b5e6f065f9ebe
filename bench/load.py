"""Load tests of the running stack: the seed's scenarios at fleet size.

    (a) 1,000 concurrent single-device requests
    (b) 500 requests a minute, sustained (open loop: arrivals do not wait)
    (c) lone requests, an idle period, then a 100x burst
    (d) fleet forecasts of 1,000 and of every device (10,000)
    (e) a price move to a trade decision on the whole fleet

Every single request is a new forecast (a distinct device and start), so it
runs its workflow. Reports p50/p95/p99, errors and throughput per scenario,
Redis keys and memory before and after (after the purge retention), each
service's and sidecar's peak RSS, and where a fleet forecast's time goes
(seconds per shard step), into bench/results/load.json.

If the gateway does not answer, prepares and starts a stack of its own in
.data/load: a generated fleet of --devices heat pumps (32 days, realistic
faults), a LightGBM model trained on it and promoted; stops it at the end.

    .venv/bin/python bench/load.py [--devices 10000] [--sustain-minutes 5] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import app_headers, gateway_headers, machine, summary  # noqa: E402
from processes import CpuProfile, PeakRss, redis_figures, service_pid, settle  # noqa: E402

from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, isoformat_z  # noqa: E402

GATEWAY = os.environ.get("INTRADAY_GATEWAY_URL", "http://127.0.0.1:8000")
HEADERS: dict[str, str] = {}  # the API key, once the stack is up
APP_HEADERS: dict[str, str] = {}  # the app API token, to read the apps' own endpoints
PG_DSN = os.environ.get("INTRADAY_PG_DSN", "postgresql://intraday@127.0.0.1:5432/intraday")
# Issue 28's aims (10,000 devices, the whole stack and this client on one 2-core box).
AIMS = {"fleet_10000_s": 10.0, "price_to_decision_10000_s": 12.0, "concurrent_1000_last_s": 8.0,
        "sustained_p99_ms": 300.0, "lone_p50_ms": 50.0, "lone_p99_ms": 150.0,
        "forecaster_peak_rss_mib": 1536.0}


def log(msg: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def gateway_up() -> bool:
    try:
        return httpx.get(f"{GATEWAY}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# -- the stack of its own ------------------------------------------------------

def prepare_and_start(devices: int) -> dict:
    data = ROOT / ".data" / "load"
    env = {**os.environ, "INTRADAY_DATA_DIR": str(data)}
    cli = [str(ROOT / ".venv" / "bin" / "intraday")]
    if not (data / "telemetry").exists():
        log(f"generating {devices:,} heat pumps x 32 days into {data} (minutes) ...")
        subprocess.run([*cli, "fleet", "generate", "--devices", str(devices), "--days", "32"],
                       env=env, check=True)
    if not (data / "models" / "PROMOTED").exists():
        log("training a model on the generated fleet and promoting it ...")
        subprocess.run([*cli, "train", "--days", "30", "--promote"], env=env, check=True)
    log("starting the stack (scripts/stack.sh up) ...")
    subprocess.run(["bash", "scripts/stack.sh", "up"], cwd=ROOT, env=env, check=True)
    return env


# -- what the machine holds ------------------------------------------------------


# -- single requests -------------------------------------------------------------

class Work:
    """Distinct (device, start) pairs: each request is a new forecast."""

    def __init__(self, devices: list[str], seed: int, avoid: set[datetime] = frozenset()):
        rng = random.Random(seed)
        self.devices = devices[:]
        rng.shuffle(self.devices)
        # A random quarter-hour of the accepted week that no earlier run on
        # this data forecast from (its start, the next one and those an hour
        # later, which the lone requests use), so every request is a new
        # forecast, not a repeat answered from the audit store.
        now = floor_quarter_hour(datetime.now(UTC)) + QUARTER_HOUR
        free = [now + QUARTER_HOUR * k for k in range(4 * 96)
                if not {now + QUARTER_HOUR * (k + j) for j in (0, 1, 4, 5)} & avoid]
        self.base = rng.choice(free) if free else now + QUARTER_HOUR * rng.randrange(4 * 96)
        self.n = 0

    def body(self) -> dict:
        i, self.n = self.n, self.n + 1
        start = self.base + timedelta(minutes=15) * (i // len(self.devices))
        return {"device_id": self.devices[i % len(self.devices)], "forecast_start": isoformat_z(start),
                "requested_by": "bench-load"}


async def one(client: aiohttp.ClientSession, body: dict, out: list, errors: list) -> None:
    t0 = time.perf_counter()
    try:
        async with client.post("/forecast/intraday", params={"wait": "true"}, json=body) as r:
            text = await r.text()
        ok = r.status == 200 and json.loads(text).get("status") == "COMPLETED"
        if not ok:
            errors.append(f"{r.status} {text[:200]}")
    except (aiohttp.ClientError, TimeoutError) as e:
        errors.append(f"{type(e).__name__}: {e}")
        ok = False
    if ok:
        out.append(time.perf_counter() - t0)


def client(connections: int) -> aiohttp.ClientSession:
    """The load generator's client: aiohttp, whose pool stays cheap with
    hundreds of requests in flight (this client shares the 2 cores)."""
    return aiohttp.ClientSession(base_url=GATEWAY, connector=aiohttp.TCPConnector(limit=connections),
                                 timeout=aiohttp.ClientTimeout(total=180), headers=HEADERS)


def report(name: str, latencies: list[float], errors: list[str], wall: float) -> dict:
    s = summary(latencies, wall) if latencies else {"requests": 0}
    s.update({"errors": len(errors), "error_samples": errors[:3], "wall_s": round(wall, 2)})
    log(f"{name}: {s.get('requests')} ok, {len(errors)} errors; p50 {s.get('p50_ms')} ms, "
        f"p95 {s.get('p95_ms')} ms, p99 {s.get('p99_ms')} ms, max {s.get('max_ms')} ms; "
        f"{s.get('throughput_rps')} /s over {wall:.1f} s")
    return s


async def concurrent(work: Work, n: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    async with client(n) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(c, work.body(), latencies, errors) for _ in range(n)))
        wall = time.perf_counter() - t0
    return report(f"(a) {n} concurrent", latencies, errors, wall) | {"last_s": round(wall, 2)}


async def open_loop(name: str, work: Work, rate_per_s: float, seconds: float) -> dict:
    """Arrivals at a fixed rate whatever the responses do."""
    latencies: list[float] = []
    errors: list[str] = []
    tasks = []
    async with client(1000) as c:
        t0 = time.perf_counter()
        k = 0
        while (due := t0 + k / rate_per_s) < t0 + seconds:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(c, work.body(), latencies, errors)))
            k += 1
            if k % max(int(rate_per_s * 30), 1) == 0:
                log(f"  {name}: {k} sent, {len(latencies)} answered, {len(errors)} errors")
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return report(name, latencies, errors, wall) | {"rate_per_min": round(rate_per_s * 60, 1)}


async def lone_then_burst(work: Work, lone: int, idle_s: float, burst: int) -> dict:
    cold: list[float] = []
    warm: list[float] = []
    errors: list[str] = []
    async with client(burst) as c:
        # One at a time, half a second apart (nothing else in flight): devices
        # whose actor never held a window, then the same devices again (a
        # new start) with their actors warm.
        bodies = [work.body() for _ in range(lone)]
        for series, step in ((cold, timedelta(0)), (warm, timedelta(hours=1))):
            for body in bodies:
                start = datetime.fromisoformat(body["forecast_start"]) + step
                await one(c, {**body, "forecast_start": isoformat_z(start)}, series, errors)
                await asyncio.sleep(0.5)
        lone_report = {"cold_actor": report("(c) lone requests, cold actors", cold, errors, 1.0),
                       "warm_actor": report("(c) lone requests, warm actors", warm, [], 1.0)}
        for r in lone_report.values():
            r.pop("throughput_rps", None)
        log(f"  idle {idle_s:.0f} s ...")
        await asyncio.sleep(idle_s)
        latencies: list[float] = []
        burst_errors: list[str] = []
        t0 = time.perf_counter()
        await asyncio.gather(*(one(c, work.body(), latencies, burst_errors) for _ in range(burst)))
        wall = time.perf_counter() - t0
    return {"lone": lone_report,
            "burst": report(f"(c) burst of {burst} after idle", latencies, burst_errors, wall)
            | {"last_s": round(wall, 2)}}


# -- fleet and trading --------------------------------------------------------------

def used_starts(pg: psycopg.Connection) -> set[datetime]:
    """The forecast starts from now on that earlier runs on this data
    forecast any device from: a forecast asked again is answered from the
    audit store, and a figure of it would time nothing."""
    rows = pg.execute("SELECT DISTINCT forecast_start FROM forecast_requests WHERE forecast_start >= %s",
                      (floor_quarter_hour(datetime.now(UTC)),)).fetchall()
    return {r[0] for r in rows}


def fresh_start(avoid: set[datetime] | None = None) -> datetime:
    """A random quarter-hour of the next two days no earlier run forecast
    from (with `avoid`, from used_starts; it and the next quarter-hour are
    added to it, so later picks differ): the figures are of new forecasts."""
    now, rng = floor_quarter_hour(datetime.now(UTC)), random.SystemRandom()
    taken = avoid if avoid is not None else set()
    free = [now + QUARTER_HOUR * k for k in range(4, 4 * 48)
            if now + QUARTER_HOUR * k not in taken and now + QUARTER_HOUR * (k + 1) not in taken]
    start = rng.choice(free) if free else now + QUARTER_HOUR * rng.randrange(4, 4 * 48)
    taken.update({start, start + QUARTER_HOUR})
    return start


PROFILE_DIR: Path | None = None  # --profile: py-spy samples the forecaster during each fleet forecast
PROFILE_GIL = False  # --profile-gil: only the thread holding the GIL (where CPU time goes, not waits)


class Sampled:
    """py-spy sampling a service's process (and its threads) while a
    scenario runs: raw collapsed stacks into `out`, and the functions the
    most samples were in, by their own time and by everything under them."""

    def __init__(self, service: str, out: Path):
        self.service, self.out = service, out
        self.top: dict = {}

    def __enter__(self) -> Sampled:
        pid = service_pid(self.service)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(pid), "--rate", "100",
             "--format", "raw", "--output", str(self.out), "--threads", "--nonblocking",
             *(["--gil"] if PROFILE_GIL else ["--idle"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # py-spy attached
        return self

    def __exit__(self, *_) -> None:
        import signal

        self._proc.send_signal(signal.SIGINT)
        self._proc.wait(timeout=60)
        self.top = top_frames(self.out)


def top_frames(path: Path, n: int = 15) -> dict:
    """From py-spy's raw output (one `frame;frame;... count` line per
    stack): the functions with the most samples at the top of the stack
    (own) and anywhere on it (total), as shares of all samples."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        samples += k
        frames = [f.split(" (")[0] for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + k
        for f in set(frames[1:]):  # the first is the thread
            total[f] = total.get(f, 0) + k

    def share(d: dict[str, int]) -> dict[str, float]:
        return {f: round(c / max(samples, 1), 3) for f, c in sorted(d.items(), key=lambda kv: -kv[1])[:n]}
    return {"samples": samples, "own": share(own), "total": share(total),
            "shard_seconds": shard_breakdown(path)}


def shard_breakdown(path: Path, rate: int = 100) -> dict:
    """Seconds of samples (summed over threads) in each step a fleet
    shard's activity calls (`forecast_shard`'s callees), and in each of
    them the functions at the top of the stack: with --profile-gil, where
    the forecaster's CPU under the GIL went; without, where the shards'
    wall time went (waiting included)."""
    steps: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] for f in stack.split(";")]
        if not count.isdigit() or "forecast_shard" not in frames:
            continue
        i = frames.index("forecast_shard")
        step = frames[i + 1] if i + 1 < len(frames) else "(self)"
        leaves = steps.setdefault(step, {})
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + int(count)
    def top(leaves: dict[str, int]) -> dict[str, float]:
        return {f: round(c / rate, 2) for f, c in sorted(leaves.items(), key=lambda kv: -kv[1])[:4]}
    ordered = sorted(steps.items(), key=lambda kv: -sum(kv[1].values()))
    return {step: {"seconds": round(sum(leaves.values()) / rate, 2), "top": top(leaves)}
            for step, leaves in ordered[:10]}


def fleet_forecast(devices: list[str] | None, start: datetime) -> dict:
    body: dict = {"forecast_start": isoformat_z(start), "requested_by": "bench-load"}
    if devices is not None:
        body["devices"] = devices
    from contextlib import nullcontext

    what = "gil" if PROFILE_GIL else "threads"
    sampled = (Sampled("forecaster", PROFILE_DIR / f"fleet-{len(devices or [])}-{start:%H%M}-{what}.txt")
               if PROFILE_DIR else nullcontext())
    with sampled:
        t0 = time.perf_counter()
        with CpuProfile() as cpu:
            r = httpx.post(f"{GATEWAY}/forecast/fleet", params={"wait": "true", "timeout": 300}, json=body,
                           timeout=330, headers=HEADERS)
        wall = time.perf_counter() - t0
    view = r.json()
    if r.status_code != 200:
        raise RuntimeError(f"fleet forecast: {r.status_code} {r.text[:300]}")
    result = view["result"]
    out = {"devices": len(result["device_forecasts"]), "failed": len(result["failed"]),
           "seconds": round(wall, 2), "created": view.get("created"), "run": view.get("run"),
           "cpu_seconds": cpu.seconds, "machine_cpu": cpu.machine}
    if PROFILE_DIR:
        out["profile"] = sampled.top | {"raw": str(sampled.out.relative_to(ROOT))}
    log(f"(d) fleet of {out['devices']:,} ({out['failed']} failed): {wall:.2f} s (created {out['created']}); "
        f"CPU s by process: {cpu.seconds}; machine: {cpu.machine}")
    return out


def price_to_decision(pg: psycopg.Connection, devices: int) -> dict:
    # The decision forecasts the fleet from the next quarter-hour: if an
    # earlier run on this data already made that forecast, the decision
    # would reuse it and time nothing; wait for a quarter-hour none made.
    for _ in range(4):
        start = floor_quarter_hour(datetime.now(UTC)) + QUARTER_HOUR
        made = pg.execute("SELECT count(*) FROM fleet_forecasts WHERE forecast_start = %s"
                          " AND cardinality(device_ids) >= %s", (start, devices)).fetchone()[0]
        if not made:
            break
        wait = (start - datetime.now(UTC)).total_seconds() + 2
        log(f"  the fleet forecast from {start:%H:%M} was made by an earlier run: waiting {wait:.0f} s "
            "for the next quarter-hour ...")
        time.sleep(wait)
    rule = httpx.get("http://127.0.0.1:8003/rule", timeout=10, headers=APP_HEADERS).json()
    last = rule.get("last_trigger_at")
    debounce = float(os.environ.get("INTRADAY_PRICE_DEBOUNCE_SECONDS", "30"))
    if last:
        wait = debounce - (datetime.now(UTC) - datetime.fromisoformat(last)).total_seconds()
        if wait > 0:
            log(f"  waiting {wait:.0f} s for the trading rule's debounce ...")
            time.sleep(wait + 0.5)
    price = round((rule.get("reference_price") or 80.0) + 25.0 + random.random(), 3)
    t0 = time.perf_counter()
    r = httpx.post(f"{GATEWAY}/prices", json={"price_eur_mwh": price, "at": isoformat_z(datetime.now(UTC))},
                   timeout=10, headers=HEADERS)
    r.raise_for_status()
    row = None
    while row is None and time.perf_counter() - t0 < 300:
        row = pg.execute("SELECT decision_id, portfolio_forecast_id, cardinality(forecast_ids)"
                         " FROM trade_decisions WHERE price_eur_mwh = %s", (price,)).fetchone()
        if row is None:
            time.sleep(0.05)
    wall = time.perf_counter() - t0
    if row is None:
        raise RuntimeError(f"no decision for the price {price} within 300 s")
    fleet_made = pg.execute("SELECT requested_at FROM fleet_forecasts WHERE fleet_forecast_id = %s",
                            (row[1],)).fetchone()
    out = {"seconds": round(wall, 2), "devices": row[2], "decision_id": row[0],
           "fleet_forecast_id": row[1],
           "fleet_forecast_made_for_it": fleet_made is not None
           and (datetime.now(UTC) - fleet_made[0]).total_seconds() < wall + 5}
    log(f"(e) price move -> decision on {row[2]:,} devices: {wall:.2f} s")
    return out


# -- the run ---------------------------------------------------------------------------

def lone_warm(fleet: list[str], n: int = 30) -> dict:
    """`n` lone requests (one at a time, half a second apart), each a new
    forecast of a device whose actor a request just before warmed: starts
    in the past week, which the fleet runs (future starts) never made."""
    rng = random.SystemRandom()
    now = floor_quarter_hour(datetime.now(UTC))
    timed: list[float] = []
    with httpx.Client(base_url=GATEWAY, headers=HEADERS, timeout=60) as c:
        for device in rng.sample(fleet, n):
            start = now - QUARTER_HOUR * rng.randrange(8, 4 * 24 * 6)
            for k, t in enumerate((start, start + QUARTER_HOUR)):
                t0 = time.perf_counter()
                body = {"device_id": device, "forecast_start": isoformat_z(t), "requested_by": "bench-ab"}
                r = c.post("/forecast/intraday", params={"wait": "true"}, json=body)
                took = time.perf_counter() - t0
                body = r.json() if r.status_code == 200 else {}
                if k == 1 and body.get("created") and body.get("status") == "COMPLETED":
                    timed.append(took)
            time.sleep(0.5)
    return summary(timed, sum(timed)) if timed else {"requests": 0}


def mtls_ab(devices: int, runs: int, out: Path) -> None:
    """The same stack, data and load with mTLS (and the access control it
    carries) on, then off: `runs` fleet forecasts of the whole fleet and 30
    lone requests to warm actors each, so what mTLS costs is measured, not
    guessed. Restarts the stack between the two (INTRADAY_MTLS=off:
    scripts/stack.sh)."""
    env = prepare_and_start(devices)
    data_dir = Path(env["INTRADAY_DATA_DIR"])
    HEADERS.update(gateway_headers(data_dir))
    figures: dict = {}
    # Distinct starts for every run of both modes: each is a new forecast.
    starts = iter(floor_quarter_hour(datetime.now(UTC)) + QUARTER_HOUR * k
                  for k in random.SystemRandom().sample(range(4, 4 * 48), 6 * runs))
    try:
        for mode in ("on", "off"):
            if mode == "off":
                log("restarting the stack with INTRADAY_MTLS=off ...")
                subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, check=False)
                plain = {**env, "INTRADAY_MTLS": "off"}
                subprocess.run(["bash", "scripts/stack.sh", "up"], cwd=ROOT, env=plain, check=True)
            settle()
            listed = httpx.get(f"{GATEWAY}/devices", timeout=60, headers=HEADERS).json()
            fleet = [d["device_id"] for d in listed]
            httpx.post(f"{GATEWAY}/warm", json={"top": 0}, timeout=120, headers=HEADERS).raise_for_status()
            log(f"mTLS {mode}: {runs} fleet forecasts of {len(fleet):,} devices ...")
            runs_s: list[float] = []
            for start in starts:  # an earlier run may have made a start's forecast: only new ones count
                run = fleet_forecast(None, start)
                if run.get("created"):
                    runs_s.append(run["seconds"])
                if len(runs_s) == runs:
                    break
            warm = lone_warm(fleet)
            figures[mode] = {"fleet_s": runs_s, "fleet_median_s": statistics.median(runs_s),
                             "lone_warm_p50_ms": warm.get("p50_ms"), "lone_warm_p99_ms": warm.get("p99_ms"),
                             "lone_warm_requests": warm.get("requests")}
    finally:
        subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, check=False)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    doc = {"benchmark": "load --ab-mtls", "measured_at": isoformat_z(datetime.now(UTC)), "commit": commit,
           "machine": machine(), "fleet_devices": devices,
           "what": "mTLS between the sidecars and the control plane, with access control, on and then off "
                   "(the API and app tokens stay) on the same stack and data",
           "mtls": figures}
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for mode, f in figures.items():
        print(f"  mTLS {mode:3s}: fleet {f['fleet_median_s']} s median of {f['fleet_s']}; "
              f"lone warm p50 {f['lone_warm_p50_ms']} ms, p99 {f['lone_warm_p99_ms']} ms")
    print(f"wrote {out.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000, help="fleet size of a stack this tool starts")
    ap.add_argument("--concurrent", type=int, default=1000)
    ap.add_argument("--rate-per-min", type=float, default=500)
    ap.add_argument("--sustain-minutes", type=float, default=5)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--quick", action="store_true", help="a short run: 200 concurrent, 1 minute sustained")
    ap.add_argument("--only", choices=["fleet", "concurrent"], help="just one scenario (to profile it)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--profile", type=Path, default=None,
                    help="sample the forecaster with py-spy during each fleet forecast into this directory "
                         "(every thread, waiting ones too: where each shard's wall time goes)")
    ap.add_argument("--profile-gil", action="store_true",
                    help="with --profile: only the thread holding the GIL (where the CPU goes)")
    ap.add_argument("--ab-mtls", type=int, default=0, metavar="RUNS",
                    help="instead of the scenarios: RUNS fleet forecasts and 30 lone requests with mTLS on, "
                         "then off, on a stack this tool starts (bench/results/load-mtls.json)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = ap.parse_args()
    if args.ab_mtls:
        if gateway_up():
            sys.exit("--ab-mtls restarts the stack itself: stop the running one first (make down)")
        mtls_ab(args.devices, args.ab_mtls, ROOT / "bench" / "results" / "load-mtls.json")
        return
    if args.quick:
        args.concurrent, args.sustain_minutes = 200, 1
    global PROFILE_DIR, PROFILE_GIL
    PROFILE_DIR = args.profile.resolve() if args.profile else None
    PROFILE_GIL = args.profile_gil

    env = None
    if not gateway_up():
        env = prepare_and_start(args.devices)
    rss = PeakRss()
    rss.sample()
    rss.start()
    results: dict = {}
    try:
        data_dir = Path(env["INTRADAY_DATA_DIR"]) if env else None
        HEADERS.update(gateway_headers(data_dir))
        APP_HEADERS.update(app_headers(data_dir))
        fleet = [d["device_id"] for d in httpx.get(f"{GATEWAY}/devices", timeout=60, headers=HEADERS).json()]
        log("waiting for the services to be idle (startup catch-up) ...")
        results["settled_after_s"] = settle()
        log(f"fleet of {len(fleet):,} devices; warming the model ...")
        httpx.post(f"{GATEWAY}/warm", json={"top": 0}, timeout=120, headers=HEADERS).raise_for_status()
        pg = psycopg.connect(PG_DSN, autocommit=True)
        forecasts_before = pg.execute("SELECT count(*) FROM forecast_requests").fetchone()[0]
        results["redis_before"] = redis_figures()
        batching_before = httpx.get("http://127.0.0.1:8001/batching", timeout=10, headers=APP_HEADERS).json()
        used = used_starts(pg)
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
        work = Work(fleet, seed, used)
        used |= {work.base + QUARTER_HOUR * j for j in (0, 1, 4, 5)}

        if args.only == "fleet":
            start = fresh_start(used)
            print(json.dumps({n: fleet_forecast(sorted(fleet)[:n] if n < len(fleet) else None, start)
                              for n in (1000, len(fleet))}, indent=1))
            return
        with CpuProfile() as cpu:
            results["concurrent"] = asyncio.run(concurrent(work, args.concurrent))
        results["concurrent"] |= {"cpu_seconds": cpu.seconds, "machine_cpu": cpu.machine}
        if args.only == "concurrent":
            print(json.dumps(results["concurrent"], indent=1))
            return
        with CpuProfile() as cpu:
            results["sustained"] = asyncio.run(open_loop(
                "(b) sustained", work, args.rate_per_min / 60, args.sustain_minutes * 60))
        results["sustained"] |= {"cpu_seconds": cpu.seconds, "machine_cpu": cpu.machine}
        results["idle_then_burst"] = asyncio.run(lone_then_burst(
            work, 30, args.idle_seconds, args.burst))
        batching_after = httpx.get("http://127.0.0.1:8001/batching", timeout=10, headers=APP_HEADERS).json()
        results["batching"] = {k: batching_after[k] - batching_before.get(k, 0)
                               for k in ("requests", "shared", "batches", "singles")} \
            | {"largest": batching_after["largest"]}

        start = fresh_start(used)
        results["fleet"] = {
            "1000": fleet_forecast(sorted(fleet)[:1000], start),
            str(len(fleet)): fleet_forecast(None, start + timedelta(minutes=15)),
            "repeat": fleet_forecast(None, start + timedelta(minutes=15)),
        }
        with CpuProfile() as cpu:
            results["price_to_decision"] = price_to_decision(pg, len(fleet))
        results["price_to_decision"] |= {"cpu_seconds": cpu.seconds, "machine_cpu": cpu.machine}

        log("waiting 20 s for completed workflow instances to be purged ...")
        time.sleep(20)
        results["redis_after"] = redis_figures()
        results["forecasts_made"] = pg.execute("SELECT count(*) FROM forecast_requests").fetchone()[0] \
            - forecasts_before
        results["peak_rss_mib"] = rss.stop()
    finally:
        if env is not None:
            subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, check=False)

    lone = results["idle_then_burst"]["lone"]["warm_actor"]
    measured = {
        "fleet_10000_s": results["fleet"].get(str(len(fleet)), {}).get("seconds"),
        "price_to_decision_10000_s": results["price_to_decision"]["seconds"],
        "concurrent_1000_last_s": results["concurrent"]["last_s"],
        "sustained_p99_ms": results["sustained"].get("p99_ms"),
        "lone_p50_ms": lone.get("p50_ms"), "lone_p99_ms": lone.get("p99_ms"),
        "forecaster_peak_rss_mib": results["peak_rss_mib"].get("forecaster"),
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    out = {"benchmark": "load", "measured_at": isoformat_z(datetime.now(UTC)), "commit": commit,
           "machine": machine(), "fleet_devices": len(fleet), "aims": AIMS,
           "against_aims": {k: {"measured": v, "aim": AIMS[k], "met": v is not None and v <= AIMS[k]}
                            for k, v in measured.items()},
           **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print("\nagainst the aims (2-core box, whole stack and this client on it):")
    for k, v in out["against_aims"].items():
        print(f"  {k:28s} {v['measured']!s:>10}  aim {v['aim']:>6}  {'met' if v['met'] else 'MISSED'}")
    before, after = results["redis_before"], results["redis_after"]
    print(f"  redis keys {before['keys']:,} -> {after['keys']:,}, memory {before['used_memory_mb']} -> "
          f"{after['used_memory_mb']} MB after {results['forecasts_made']:,} forecasts")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
