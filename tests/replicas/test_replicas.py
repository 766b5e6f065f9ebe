"""Two forecasters and two gateways (INTRADAY_REPLICAS=2: replica 2 on
the ports of replica 1 plus 100): placement spreads the device actors over
both forecasters, a fleet forecast's shards run on both, a kill -9 of one
forecaster replica (app and sidecar, as a pod dies) in the middle of a
burst moves its actors to the other with nothing lost or doubled, and an
API key's rate limit is one limit across the gateways."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.faults.books import Traffic, check_forecast_books, forecast_ok, record_figures
from tests.stack import PG_DSN, dapr_headers, eventually, healthy, intraday

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FORECASTERS = {1: (8001, 3501), 2: (8101, 3601)}  # replica -> (app port, sidecar HTTP port)
GATEWAYS = (8000, 8100)


def _active_actors(stack: dict, sidecar_port: int) -> int:
    meta = httpx.get(f"http://127.0.0.1:{sidecar_port}/v1.0/metadata", headers=dapr_headers(stack),
                     timeout=10).json()
    return sum(a["count"] for a in meta.get("actorRuntime", {}).get("activeActors", meta.get("actors", []))
               if a["type"] == "DeviceActor")


def _shards_run(app_port: int) -> float:
    """Fleet shards this forecaster replica ran (its step metric)."""
    text = httpx.get(f"http://127.0.0.1:{app_port}/metrics", timeout=10).text
    prefix = 'intraday_forecast_step_seconds_count{step="windows",workflow="fleet"}'  # one a shard
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def _replica_pids(app_port: int, sidecar_port: int) -> tuple[int, int]:
    """The forecaster replica's app and daprd processes."""
    app = daprd = None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if a]
            if not argv:
                continue
            if argv[-2:] == ["-m", "services.forecaster"]:
                env = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
                port = next((e.split("=", 1)[1] for e in env if e.startswith("INTRADAY_APP_PORT=")), "8001")
                if int(port) == app_port:
                    app = int(pid)
            elif "daprd" in argv[0] and "--dapr-http-port" in argv \
                    and argv[argv.index("--dapr-http-port") + 1] == str(sidecar_port):
                daprd = int(pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    assert app and daprd, (app_port, sidecar_port, app, daprd)
    return app, daprd


@pytest.fixture(scope="module")
def devices(gateway) -> list[str]:
    return [d["device_id"] for d in gateway.get("/devices").json()]


def test_both_replicas_answer(stack):
    for port in (*GATEWAYS, *(a for a, _ in FORECASTERS.values())):
        assert healthy(port), port
    for _, sidecar in FORECASTERS.values():
        r = httpx.get(f"http://127.0.0.1:{sidecar}/v1.0/metadata", headers=dapr_headers(stack), timeout=10)
        assert r.json()["id"] == "forecaster", r.text


def test_device_actors_spread_over_both_forecasters(stack, gateway, devices):
    for device in devices:
        r = gateway.post("/forecast/intraday", params={"wait": "true"},
                         json={"device_id": device, "horizon_hours": 1})
        assert r.status_code == 200, r.text
    counts = {k: _active_actors(stack, sidecar) for k, (_, sidecar) in FORECASTERS.items()}
    assert all(counts.values()) and sum(counts.values()) >= len(devices), counts


def test_a_fleet_forecast_s_shards_run_on_both_forecasters(gateway, devices):
    before = {k: _shards_run(app) for k, (app, _) in FORECASTERS.items()}
    r = gateway.post("/forecast/fleet", params={"wait": "true"}, json={"horizon_hours": 4})
    assert r.status_code == 200, r.text
    assert len(r.json()["result"]["device_forecasts"]) == len(devices)
    ran = {k: _shards_run(app) - before[k] for k, (app, _) in FORECASTERS.items()}
    # Twelve shards of two devices (tests/stack.py): each replica ran some.
    assert all(ran.values()) and sum(ran.values()) >= 12, ran


def test_a_replica_killed_mid_burst_loses_nothing(stack, gateway, rds, devices):
    """kill -9 of replica 2's app and sidecar while forecasts stream in, held
    down (a pod gone, not yet rescheduled): its actors move to replica 1 and
    every accepted forecast ends COMPLETED or FAILED with a reason, audited
    once; then it comes back."""
    hold = Path(stack["data_dir"]) / "run" / "hold"
    hold.mkdir(parents=True, exist_ok=True)
    app, daprd = _replica_pids(*FORECASTERS[2])
    held = [hold / "forecaster@8101", hold / "daprd:forecaster@3601"]
    with Traffic(gateway, devices, offset_hours=48, rate=6.0) as traffic:
        time.sleep(5)
        for path in held:
            path.touch()
        os.kill(app, signal.SIGKILL)
        os.kill(daprd, signal.SIGKILL)
        killed = time.monotonic()
        assert eventually(lambda: forecast_ok(gateway, devices[-1]), timeout=120)
        served_after = time.monotonic() - killed
        time.sleep(10)
    views = traffic.settle()
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        figures = check_forecast_books(views, traffic.accepted, conn, rds)
    assert figures["completed"] >= figures["accepted"] - figures["failed"] > 0, figures
    # One at a time (the single path, not a batch), each device's forecast is
    # made by its actor, which now lives on replica 1 (a horizon no test here
    # asked for yet: made now, not read back from the audit store).
    for device in devices:
        r = gateway.post("/forecast/intraday", params={"wait": "true"},
                         json={"device_id": device, "horizon_hours": 3})
        assert r.status_code == 200, r.text
    assert _active_actors(stack, FORECASTERS[1][1]) >= len(devices)
    figures.update(seconds_to_serve_again=round(served_after, 1), refused=len(traffic.refused))
    record_figures(stack, "replicas: forecaster replica 2 kill -9 mid-burst", figures)
    for path in held:
        path.unlink()
    assert eventually(lambda: healthy(FORECASTERS[2][0]), timeout=120), "replica 2 did not come back"


def test_a_key_s_rate_limit_holds_across_gateways(stack):
    key = intraday(stack["env"], "keys", "create", "rate-limited", "--scopes", "forecast:read",
                   "--rate", "6").strip().splitlines()[-1]
    clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                            headers={"authorization": f"Bearer {key}"}) for port in GATEWAYS]
    try:
        answers = [clients[n % 2].get("/devices").status_code for n in range(12)]
    finally:
        for client in clients:
            client.close()
    # A minute's worth (6) in a burst, whichever gateway each went to; not 6 at each.
    assert answers.count(200) == 6 and answers.count(429) == 6, answers
    assert answers[:6] == [200] * 6, answers


def test_replicas_are_supervised_apart(stack):
    log = (Path(stack["data_dir"]) / "logs" / "supervisor.log").read_text()
    assert '"forecaster@8101"' in log and '"daprd:gateway@3600"' in log, log[-2000:]
    assert subprocess.run(["bash", "scripts/stack.sh", "status"], env=stack["env"], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2]).returncode == 0
