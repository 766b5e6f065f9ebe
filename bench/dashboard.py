"""The dashboard at fleet size: what a trader's screen costs and how fast it
follows the market, on the 10,000-device stack of bench/load.py.

    (a) the overview (GET /ui/api/overview) right after a new fleet forecast
        (built afresh) and then repeated (served from the build), with its size
    (b) a device's drill-down (GET /ui/api/devices/{id}) for 30 devices
    (c) a price move to its decision's audit row, to the `decision` event on
        the page's event stream, and to the page redrawn with it
    (d) the page in headless Chromium: from opening it to the first drawing,
        and to the redrawing after the price move's event

Starts the stack of its own in .data/load (as bench/load.py) when no gateway
answers; writes bench/results/dashboard.json and prints a summary.

    .venv/bin/python bench/dashboard.py [--devices 10000]
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import load  # noqa: E402
from common import gateway_headers, machine, summary  # noqa: E402

from intraday.timeutil import isoformat_z  # noqa: E402

GATEWAY = load.GATEWAY


def log(msg: str) -> None:
    print(f"[dashboard {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def timed_get(client: httpx.Client, path: str) -> tuple[float, httpx.Response]:
    t0 = time.perf_counter()
    r = client.get(path)
    r.raise_for_status()
    return time.perf_counter() - t0, r


class Events(threading.Thread):
    """The page's event stream, read as the page reads it; each event with
    the time it arrived."""

    def __init__(self, headers: dict) -> None:
        super().__init__(daemon=True)
        self.headers, self.events, self.ready = headers, queue.Queue(), threading.Event()

    def run(self) -> None:
        with httpx.stream("GET", f"{GATEWAY}/ui/api/events", headers=self.headers, timeout=None) as r:
            kind = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind:
                    if kind == "hello":
                        self.ready.set()
                    else:
                        self.events.put((time.perf_counter(), kind, json.loads(line[6:])))
                    kind = None

    def wait_for(self, kind: str, ident: str | None, timeout: float) -> float | None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            try:
                at, k, data = self.events.get(timeout=max(0.01, deadline - time.perf_counter()))
            except queue.Empty:
                return None
            if k == kind and (ident is None or data.get("id") == ident):
                return at
        return None


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1700"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=10_000, help="fleet size of a stack this tool starts")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dashboard.json")
    args = ap.parse_args()
    env = None if load.gateway_up() else load.prepare_and_start(args.devices)
    data_dir = Path(env["INTRADAY_DATA_DIR"]) if env else None
    headers = gateway_headers(data_dir)
    load.HEADERS.update(headers)
    load.APP_HEADERS.update(load.app_headers(data_dir))
    results: dict = {"machine": machine(), "measured_at": isoformat_z(datetime.now(UTC))}
    try:
        gw = httpx.Client(base_url=GATEWAY, headers=headers, timeout=120)
        fleet = [d["device_id"] for d in gw.get("/devices").json()]
        log(f"fleet of {len(fleet):,} devices; settling ...")
        load.settle()
        results["devices"] = len(fleet)
        log("a fleet forecast of every device (the portfolio the page draws) ...")
        with psycopg.connect(load.PG_DSN, autocommit=True) as conn:
            start = load.fresh_start(load.used_starts(conn))
        results["fleet_forecast"] = load.fleet_forecast(None, start)

        log("(a) the overview ...")
        first, r = timed_get(gw, "/ui/api/overview")
        overview = r.json()
        assert overview["portfolio"]["devices"] == len(fleet), overview["portfolio"]["devices"]
        again = [timed_get(gw, "/ui/api/overview")[0] for _ in range(50)]
        results["overview"] = {"first_s": round(first, 3), "bytes": len(r.content),
                               "repeated": summary(again, sum(again))}
        log(f"    first {first * 1000:.0f} ms ({len(r.content) / 1024:.0f} KB), repeated p50 "
            f"{results['overview']['repeated']['p50_ms']:.0f} ms")

        log("(b) device drill-downs ...")
        picks = random.SystemRandom().sample(fleet, 30)
        times = [timed_get(gw, f"/ui/api/devices/{d}")[0] for d in picks]
        results["device"] = summary(times, sum(times))

        log("(c) a price move to the page's decision event ...")
        events = Events(headers)
        events.start()
        events.ready.wait(30)
        pg = psycopg.connect(load.PG_DSN, autocommit=True)
        driver = browser()
        try:
            t0 = time.perf_counter()
            driver.get(f"{GATEWAY}/ui")
            key = json.dumps(headers["authorization"].removeprefix("Bearer "))
            driver.execute_script(f"sessionStorage.setItem('intraday-api-key', {key})")
            driver.get(f"{GATEWAY}/ui")
            while driver.execute_script("return window.intraday && window.intraday.renders") < 1:
                time.sleep(0.02)
            results["page_first_draw_s"] = round(time.perf_counter() - t0, 3)
            renders = driver.execute_script("return window.intraday.renders")
            decision = load.price_to_decision(pg, len(fleet))
            recorded = time.perf_counter()
            ticked = recorded - decision["seconds"]  # when the tick was posted
            arrived = events.wait_for("decision", decision["decision_id"], 30)
            redrawn = None
            while time.perf_counter() - recorded < 30:
                if driver.execute_script("return window.intraday.renders") > renders and driver.find_elements(
                        "css selector", f"#decisions tbody tr[data-id='{decision['decision_id']}']"):
                    redrawn = time.perf_counter()
                    break
                time.sleep(0.02)
            results["price_to_decision"] = decision
            results["price_to_event_s"] = None if arrived is None else round(arrived - ticked, 3)
            results["price_to_page_s"] = None if redrawn is None else round(redrawn - ticked, 3)
            shots = ROOT / ".data" / "bench"
            shots.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(shots / "dashboard-fleet.png"))
        finally:
            driver.quit()
    finally:
        if env is not None:
            log("stopping the stack ...")
            subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=ROOT, env=env, check=False,
                           capture_output=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    o = results["overview"]
    print(f"dashboard on {results['devices']:,} devices ({results['machine']['cpu']}, "
          f"{results['machine']['cores']} cores):\n"
          f"  overview: first {o['first_s'] * 1000:.0f} ms, repeated p50 {o['repeated']['p50_ms']:.0f} ms "
          f"p99 {o['repeated']['p99_ms']:.0f} ms, {o['bytes'] / 1024:.0f} KB\n"
          f"  device drill-down: p50 {results['device']['p50_ms']:.0f} ms, "
          f"p99 {results['device']['p99_ms']:.0f} ms\n"
          f"  page: first drawing {results['page_first_draw_s']:.2f} s after opening\n"
          f"  price move -> decision recorded {results['price_to_decision']['seconds']:.1f} s, "
          f"-> its event on "
          f"the stream {results['price_to_event_s']} s, -> the page redrawn {results['price_to_page_s']} s\n"
          f"  (screenshot: .data/bench/dashboard-fleet.png; figures: {args.out})")


if __name__ == "__main__":
    main()
