"""docker-compose.yml, up for real with podman and the images `make images`
built (conftest.py): every service healthy, the sidecars' certificates from
Sentry in its own container, a key made as the docs say, a fleet imported
through the gateway, a model trained in the forecaster's image and its
forecasts served, a price tick to a decision and its `orders` message, a
killed container back by its restart policy with nothing lost, and down
leaving nothing behind. In the order a user meets them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from intraday.timeutil import QUARTER_HOUR, floor_quarter_hour, isoformat_z
from tests.compose import harness
from tests.faults.books import check_forecast_books
from tests.stack import ROOT, eventually

APPS = ("gateway", "forecaster", "telemetry", "trading")
LONG_RUNNING = {f"{app}{part}" for app in APPS for part in ("", "-net", "-dapr")} | {
    "sentry", "placement", "scheduler", "redis", "postgres", "zipkin", "prometheus"}
SIDECARS = ("gateway-dapr", "forecaster-dapr", "telemetry-dapr", "trading-dapr")
DEVICES = 8


def _cli(key: str, *args: str) -> subprocess.CompletedProcess:
    env = {**harness.ENV, "INTRADAY_GATEWAY_URL": harness.GATEWAY, "INTRADAY_API_KEY": key}
    return subprocess.run([str(ROOT / ".venv" / "bin" / "intraday"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_every_service_is_up_and_healthy(composed):
    by_service = {harness.service_of(c): c for c in harness.containers()}
    assert set(by_service) == LONG_RUNNING | {"migrate"}, sorted(by_service)  # no ClickHouse, no Grafana
    assert by_service["migrate"]["State"] == "exited" and by_service["migrate"]["ExitCode"] == 0
    for service in sorted(LONG_RUNNING):
        name = harness.name_of(service)
        assert by_service[service]["State"] == "running", service
        if harness.has_healthcheck(name):
            assert harness.podman("healthcheck", "run", name, check=False).returncode == 0, service
    # Each app and its sidecar share the network namespace its holder keeps.
    for app in APPS:
        holder = harness.inspect(f"{app}-net")["Id"]
        for service in (app, f"{app}-dapr"):
            assert harness.inspect(service)["HostConfig"]["NetworkMode"] == f"container:{holder}", service


def test_the_sidecars_have_their_identities_from_sentry_in_its_own_container(composed):
    def metric(name: str) -> float:
        text = harness.podman("exec", harness.name_of("sentry"), "curl", "-fsS",
                              "http://127.0.0.1:59093/metrics").stdout
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    # The four sidecars, placement and scheduler each asked for a workload certificate.
    assert metric("dapr_sentry_cert_sign_success_total") >= len(SIDECARS) + 2
    assert metric("dapr_sentry_cert_sign_failure_total") == 0
    # The trust anchors the sidecars read are the ones Sentry wrote in its volume.
    ca = harness.podman("exec", harness.name_of("sentry"), "cat", "/certs/ca.crt").stdout
    for sidecar in SIDECARS:
        assert harness.podman("exec", harness.name_of(sidecar), "cat", "/certs/ca.crt").stdout == ca
        args = harness.inspect(sidecar)["Args"]
        assert "--enable-mtls" in args and "sentry:50001" in args


def test_a_fleet_imported_through_the_gateway_is_forecast(composed, key, gateway, tmp_path_factory):
    files = tmp_path_factory.mktemp("fleet")
    made = _cli(key, "fleet", "generate", "--devices", str(DEVICES), "--days", "28", "--seed", "11",
                "--out", str(files / "fleet.parquet"))
    assert made.returncode == 0, made.stderr
    # From this host, as a user's own fleet comes in: through the gateway.
    imported = _cli(key, "import", "--devices", str(files / "fleet.devices.parquet"), "--readings",
                    str(files / "fleet.parquet"), "--weather", str(files / "fleet.weather.parquet"), "--json")
    assert imported.returncode in (0, 3), imported.stderr  # 3: the generator's faults quarantined
    summary = json.loads(imported.stdout)
    assert len(summary["devices"]["added"]) == DEVICES and summary["readings"]["inserted"] > DEVICES * 96 * 20
    assert len(gateway.get("/devices").json()) == DEVICES
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "hp-0001"})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert len(result["intervals"]) == 96 and result["data_window"]


def test_a_model_trained_in_the_forecasters_image_serves_the_forecasts(composed, gateway):
    """LightGBM trains and predicts inside the images (its OpenMP runtime,
    libgomp1, in the app image; the trees compiled by gcc in the forecaster's)."""
    r = gateway.post("/models/train", params={"wait": "true", "timeout": 600}, timeout=660,
                     json={"days": 28, "holdout_days": 7, "train_rows": 60_000, "force": True})
    assert r.status_code == 200, r.text
    version = r.json()["result"]["candidate_version"]
    assert eventually(lambda: gateway.get("/models").json()["promoted"] == version, timeout=60)

    def served_by_it() -> bool:
        r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "hp-0002"})
        return r.status_code == 200 and r.json()["result"]["model_version"] == version

    served = eventually(served_by_it, timeout=60)
    assert served, "the trained model does not serve the forecasts"
    logs = harness.podman("logs", harness.name_of("forecaster")).stderr
    assert "libgomp" not in logs and "cannot open shared object" not in logs


def test_a_price_tick_makes_a_decision_and_its_orders_message(composed, gateway, pg, rds):
    before = pg.execute("SELECT count(*) FROM trade_decisions").fetchone()[0]
    assert gateway.post("/prices", json={"price_eur_mwh": 95.0}).status_code == 202
    decided = eventually(lambda: pg.execute(
        "SELECT decision_id FROM trade_decisions ORDER BY decided_at DESC LIMIT 1").fetchone()
        if pg.execute("SELECT count(*) FROM trade_decisions").fetchone()[0] > before else None, timeout=180)
    assert decided, "the price made no decision"
    orders = eventually(lambda: [e for _, e in rds.xrange("orders")
                                 if decided[0] in e[b"data"].decode()], timeout=60)
    assert orders and len(orders) == 1, f"{len(orders or [])} orders messages for {decided[0]}"


def test_a_killed_container_comes_back_by_its_restart_policy_and_nothing_is_lost(composed, gateway, pg, rds):
    start = floor_quarter_hour(datetime.now(UTC)) - QUARTER_HOUR * 200  # forecasts never made before

    def ask(i: int) -> tuple[int, str, dict]:
        body = {"device_id": f"hp-{i % DEVICES + 1:04d}", "horizon_hours": 24,
                "forecast_start": isoformat_z(start + QUARTER_HOUR * i)}
        r = gateway.post("/forecast/intraday", json=body)
        return r.status_code, r.text, body

    # The forecaster's process dies with forecasts in flight (as a crash or the
    # OOM killer would end it; `podman kill`, like `docker kill`, counts as
    # stopped by the user and is not restarted): its restart policy brings it
    # back, beside its sidecar. Dying mid-step can wedge the sidecar's workflow
    # engine (Dapr 1.18.2; services/forecaster/engine_guard.py), which the app
    # then restarts.
    restarts = harness.inspect("forecaster")["RestartCount"]
    pid = harness.inspect("forecaster")["State"]["Pid"]
    with ThreadPoolExecutor(8) as pool:
        asked = [pool.submit(ask, i) for i in range(16)]
        while sum(f.done() for f in asked) < 8:
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        answers = [f.result() for f in asked]
    # 202, or 200 where the gateway's retry of a call the dying forecaster had
    # taken found the forecast already made (a request is idempotent by its id).
    accepted = {json.loads(text)["forecast_id"]: body for code, text, body in answers if code in (200, 202)}
    refused = [(code, text[:200]) for code, text, _ in answers if code not in (200, 202)]
    assert len(accepted) >= 8 and all(code >= 500 and text for code, text in refused), refused
    back = eventually(lambda: harness.inspect("forecaster")["RestartCount"] > restarts and harness.podman(
        "healthcheck", "run", harness.name_of("forecaster"), check=False).returncode == 0, timeout=180)
    assert back, "the forecaster did not come back by its restart policy"
    views: dict[str, dict] = {}
    last: dict[str, str] = {}  # what the gateway last answered, for a failure's message

    def finished() -> bool:
        for fid in accepted:
            if views.get(fid, {}).get("status") not in ("COMPLETED", "FAILED"):
                r = gateway.get(f"/forecast/{fid}")
                last[fid] = f"{r.status_code} {r.text[:200]}"
                if r.status_code in (200, 404, 500):
                    views[fid] = r.json()
        return all(v.get("status") in ("COMPLETED", "FAILED") for v in views.values()) and \
            len(views) == len(accepted)

    if not eventually(finished, timeout=300):
        unfinished = {fid: last[fid] for fid in accepted
                      if fid not in views or views[fid].get("status") not in ("COMPLETED", "FAILED")}
        logs = {s: _tail(harness.podman("logs", "--tail", "40", harness.name_of(s), check=False))
                for s in ("forecaster", "forecaster-dapr")}
        pytest.fail(f"unfinished after 300 s: {unfinished}\n"
                    + "\n".join(f"--- {s}\n{t}" for s, t in logs.items()))
    books = check_forecast_books(views, accepted, pg, rds)
    assert books["lost"] == 0 and books["duplicated_audit_rows"] == 0, books
    assert books["completed"] == len(accepted), books
    # And the engine takes new work: a forecast asked for now is made.
    code, text, _ = ask(100)
    fid = json.loads(text)["forecast_id"]
    assert code == 202 and eventually(lambda: gateway.get(f"/forecast/{fid}").status_code == 200, timeout=120)


def _tail(r) -> str:
    return (r.stdout + r.stderr)[-4000:]


def test_down_leaves_no_container_pod_or_network(composed):
    harness.down()
    assert harness.leftovers() == {}
    time.sleep(5)  # and no restart policy brings one back
    assert harness.leftovers() == {}
