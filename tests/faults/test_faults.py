"""Faults injected into the running local stack during a stream of
forecast requests (or, for trading, on a price move), then the books checked
(tests/faults/books.py): nothing accepted is lost, nothing is recorded or
moved twice, nothing is half-written. Each case records its figures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from intraday import failpoints
from intraday.timeutil import floor_quarter_hour, isoformat_z
from tests.faults.books import (
    Traffic,
    check_forecast_books,
    check_trading_books,
    forecast_ok,
    record_figures,
    settle_trading,
)
from tests.stack import (
    PG_DSN,
    ROOT,
    app_headers,
    app_pid,
    dapr_headers,
    eventually,
    healthy,
    kill_sidecar,
    restart_app,
    topic_messages,
)

pytestmark = pytest.mark.timeout(420)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).is_success
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def devices(gateway) -> list[str]:
    return [d["device_id"] for d in gateway.get("/devices").json()]


def _run_fault(stack, gateway, rds, devices, name: str, offset_hours: int, inject,
               lost: bool = False, rolled_back: bool = False) -> dict:
    """Traffic for a few seconds, `inject()` (returns once the fault is
    over), traffic a few seconds more; then the books and the figures. With
    `lost` (the state store lost its data), a forecast whose workflow is
    gone is asked for again, as its requester would, and must then be made
    once like any other."""
    with Traffic(gateway, devices, offset_hours) as traffic:
        time.sleep(4)
        accepted_before = len(traffic.accepted)
        injected, injected_at = time.monotonic(), datetime.now(UTC)
        inject()
        recovered = eventually(lambda: forecast_ok(gateway), timeout=120)
        recover_s = time.monotonic() - injected
        assert recovered, f"{name}: no forecast within 120 s of the fault"
        time.sleep(4)
    views = traffic.settle(lost=lost)
    gone = sorted(fid for fid, view in views.items() if view["status"] == "NOT_FOUND")
    for fid in gone:
        traffic.submit(traffic.accepted[fid])
    if gone:
        views = traffic.settle()
    rule = settle_trading(lambda: _rule(stack))
    assert rule and not rule["pending"], f"{name}: price ticks still pending a decision: {rule}"
    # A connection of its own: a fault may have taken the session's down.
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        figures = check_forecast_books(views, traffic.accepted, conn, rds, streams_rolled_back=rolled_back)
        # What the watchdog (services/forecaster/watchdog.py) had to start again or fail.
        figures["redriven_by_watchdog"], figures["failed_by_watchdog"] = conn.execute(
            "SELECT count(*) FILTER (WHERE redriven > 0), count(*) FILTER (WHERE outcome LIKE 'failed:%%')"
            " FROM workflow_runs WHERE instance_id = ANY(%s)", (sorted(traffic.accepted),)).fetchone()
        decided = conn.execute("SELECT count(*) FROM trade_decisions WHERE price_eur_mwh = ANY(%s)",
                               (traffic.prices,)).fetchone()[0]
        # In flight when the fault struck: requested before it, recorded after.
        in_flight = conn.execute("SELECT count(*) FROM forecast_requests WHERE request_id = ANY(%s)"
                                 " AND requested_at <= %s AND completed_at > %s",
                                 (sorted(traffic.accepted), injected_at, injected_at)).fetchone()[0]
        check_trading_books(conn)
    # Every tick is a move past the threshold, so each one is decided once;
    # a tick redelivered after a newer one was decided is rightly stale
    # (the rule reads each tick's own time), so fewer is possible, more not.
    assert 0 < decided <= len(traffic.prices), f"{name}: {decided} decisions for {len(traffic.prices)} ticks"
    figures.update(accepted_before_fault=accepted_before, in_flight_at_fault=in_flight,
                   seconds_to_recover=round(recover_s, 1),
                   refused_while_down=len(traffic.refused), price_ticks=len(traffic.prices),
                   decisions=decided)
    if lost:
        figures["asked_again_after_state_lost"] = len(gone)
    record_figures(stack, name, figures)
    return figures


def _rule(stack: dict) -> dict | None:
    try:
        r = httpx.get("http://127.0.0.1:8003/rule", headers=app_headers(stack), timeout=10)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def _stack_sh(stack: dict, *args: str) -> None:
    r = subprocess.run(["bash", "scripts/stack.sh", *args], cwd=ROOT, env=stack["env"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"stack.sh {' '.join(args)}:\n{r.stdout}\n{r.stderr}"


def test_forecaster_app_killed_mid_workflow(stack, gateway, rds, devices):
    """kill -9 of the forecaster app while forecasts are running: the
    workflows resume when it is back; each forecast audited once."""
    def inject():
        restart_app(stack, "forecaster", 8001)  # kill -9; back when the supervisor restarted it

    figures = _run_fault(stack, gateway, rds, devices, "forecaster app kill -9", 144, inject)
    assert figures["completed"] >= figures["accepted"] - figures["failed"] > 0


def test_forecaster_killed_after_publish_before_audit(stack, gateway, rds, devices):
    """The forecaster dies between a forecast's publish and its audit (a
    failpoint): the activity runs again, the message is sent again with the
    same numbers, and the audit row is written once."""
    def inject():
        failpoints.arm(stack["failpoints"], failpoints.FORECAST_AFTER_PUBLISH)
        assert eventually(lambda: not (stack["failpoints"] / failpoints.FORECAST_AFTER_PUBLISH).exists(),
                          timeout=30), "no forecast reached the failpoint"
        assert eventually(lambda: healthy(8001), timeout=90)

    figures = _run_fault(stack, gateway, rds, devices, "forecaster kill -9 after publish", 120, inject)
    assert figures["failed"] == 0, figures


def test_forecaster_sidecar_killed(stack, gateway, rds, devices):
    def inject():
        kill_sidecar("forecaster")
        sidecar = "http://127.0.0.1:3501/v1.0/healthz"
        assert eventually(lambda: healthy(8001) and _answers(sidecar), timeout=90)

    _run_fault(stack, gateway, rds, devices, "forecaster daprd kill -9", 96, inject)


def test_postgres_down_30_s_during_a_stream(stack, gateway, rds, devices):
    """PostgreSQL stopped for 30 s: audits retry with backoff and land once
    when it is back; the forecasts are not made again."""
    pgdata = stack["data_dir"] / "postgres"
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []

    def inject():
        subprocess.run([*as_pg, str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop"],
                       check=True, capture_output=True)
        time.sleep(30)
        _stack_sh(stack, "start", "postgres")

    figures = _run_fault(stack, gateway, rds, devices, "postgresql down 30 s", 72, inject)
    assert figures["completed"] > 0, figures


def test_trading_killed_between_decision_and_acknowledgement(stack, gateway, rds):
    """The trading app dies after recording and publishing a decision but
    before acknowledging the price message (a failpoint): the message is
    redelivered, the rule hands back the pending decision, and the decision
    is recorded and moves the positions once."""
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM trade_decisions").fetchone()[0]
        failpoints.arm(stack["failpoints"], failpoints.TRADING_AFTER_DECISION)
        injected = time.monotonic()
        reference = httpx.get("http://127.0.0.1:8003/rule", headers=app_headers(stack),
                              timeout=5).json().get("reference_price")
        price = (reference or 80.0) + 30.0  # a move past the rule's threshold
        assert gateway.post("/prices", json={"price_eur_mwh": price,
                                             "at": datetime.now(UTC).isoformat()}).status_code == 202
        assert eventually(lambda: not (stack["failpoints"] / failpoints.TRADING_AFTER_DECISION).exists(),
                          timeout=60), "the trading app never reached the failpoint"
        assert eventually(lambda: healthy(8003), timeout=90)
        rule = eventually(lambda: (r := httpx.get("http://127.0.0.1:8003/rule", headers=app_headers(stack),
                                                  timeout=5)).status_code == 200
                          and not r.json()["pending"] and r.json(), timeout=120)
        assert rule, "the pending decision was never completed after the restart"
        after = conn.execute("SELECT count(*) FROM trade_decisions").fetchone()[0]
        assert after == before + 1
        figures = check_trading_books(conn)
    orders = [m for m in _orders(rds) if m.get("price_eur_mwh") == price]
    assert orders and len({m["decision_id"] for m in orders}) == 1, orders
    figures.update(seconds_to_recover=round(time.monotonic() - injected, 1),
                   order_deliveries=len(orders), decisions_added=after - before)
    record_figures(stack, "trading kill -9 between decision and ack", figures)


def _orders(rds) -> list[dict]:
    return topic_messages(rds, "orders")


def test_telemetry_killed_mid_ingest(stack, rds):
    """The telemetry app dies with a batch's readings written and its ledger
    entry not (a failpoint); the batch offered again is counted as already
    stored, not doubled."""
    ingest = "http://127.0.0.1:3500/v1.0/invoke/telemetry/method/ingest"
    csv = "device_id,timestamp,power\n" + "".join(
        f"hp-0003,2026-02-2{d}T0{h}:00:00Z,{1 + h / 10}\n" for d in range(5, 7) for h in range(4))
    failpoints.arm(stack["failpoints"], failpoints.TELEMETRY_MID_INGEST)
    injected = time.monotonic()
    headers = {"content-type": "text/csv", **dapr_headers(stack)}
    try:  # the sidecar retries the call once the app is back (Resiliency); or it fails
        first = httpx.post(ingest, content=csv.encode(), params={"batch_id": "faults-mid-ingest"},
                           headers=headers, timeout=120)
    except httpx.HTTPError:
        first = None
    assert not (stack["failpoints"] / failpoints.TELEMETRY_MID_INGEST).exists(), "failpoint not reached"
    assert eventually(lambda: healthy(8002), timeout=90)
    r = httpx.post(ingest, content=csv.encode(), params={"batch_id": "faults-mid-ingest"},
                   headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    reports = [x.json() for x in (first, r) if x is not None and x.status_code == 200]
    # The readings were written before the kill: no later attempt writes them again.
    assert all(x.get("inserted", 0) == 0 for x in reports), reports
    report = reports[0]
    assert report.get("already_stored") == 8 or report.get("status") == "duplicate_batch", reports
    record_figures(stack, "telemetry kill -9 mid-ingest", {
        "rows": 8, "inserted_on_retry": report["inserted"], "already_stored": report.get("already_stored"),
        "seconds_to_recover": round(time.monotonic() - injected, 1)})


def _actor_keys(rds) -> int:
    return sum(1 for _ in rds.scan_iter(match="forecaster||DeviceActor||*", count=1000))


def test_redis_killed_and_restarted_from_its_append_only_file(stack, gateway, rds, devices):
    """kill -9 of Redis (the actors' and workflows' state store; locally
    also the pub/sub broker), started again 5 s later from its append-only
    file: actors and workflows carry on where they were."""
    assert forecast_ok(gateway)  # at least one actor holds its state
    before = _actor_keys(rds)
    assert before > 0, sorted(rds.scan_iter(count=1000))[:20]

    def inject():
        os.kill(int((stack["data_dir"] / "run" / "redis.pid").read_text()), 9)
        time.sleep(5)
        _stack_sh(stack, "start", "redis")
        rds.connection_pool.disconnect()  # the old connections died with it

    figures = _run_fault(stack, gateway, rds, devices, "redis kill -9, restarted from its AOF", 48, inject)
    assert figures["failed"] == 0, figures
    assert _actor_keys(rds) >= before  # the actors' state came back from the file


def test_placement_and_scheduler_killed(stack, gateway, rds, devices):
    """kill -9 of Dapr's placement (where actors live) and scheduler (the
    workflows' timers and reminders, in its embedded etcd on disk); the
    supervisor starts them again and the forecasts in flight finish."""
    run = stack["data_dir"] / "run"

    def inject():
        for name in ("placement", "scheduler"):
            os.kill(int((run / f"{name}.pid").read_text()), 9)
        probes = [f"http://127.0.0.1:{port}/healthz" for port in (58081, 58082)]
        back = eventually(lambda: all(_answers(url) for url in probes), timeout=120)
        assert back, "placement or scheduler not back"

    figures = _run_fault(stack, gateway, rds, devices, "placement and scheduler kill -9", 24, inject)
    assert figures["completed"] > 0, figures


def _forget_actor(stack, rds, device: str) -> None:
    """The device's actor as on its first use: its state deleted from the
    store and the forecaster (which holds active actors in memory) killed
    and started again by the supervisor."""
    for key in list(rds.scan_iter(match=f"forecaster||DeviceActor||{device}||*")):
        rds.delete(key)
    restart_app(stack, "forecaster", 8001)


def _ask(gateway, device: str, horizon_hours: int) -> tuple[int, dict, float]:
    """A forecast from the next quarter-hour, waited for (a horizon of its
    own per phase, so none is found made before)."""
    t0 = time.monotonic()
    r = gateway.post("/forecast/intraday", params={"wait": "true", "timeout": 90},
                     json={"device_id": device, "horizon_hours": horizon_hours}, timeout=100)
    return r.status_code, r.json(), time.monotonic() - t0


def _audited(fid: str) -> bool:
    # A connection of its own: the session's died with the PostgreSQL fault.
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM forecast_requests WHERE request_id = %s",
                            (fid,)).fetchone()[0] > 0


def test_telemetry_down_warm_actors_serve_and_a_first_use_fails_clearly(stack, gateway, rds):
    """The telemetry service down (killed and held down, as a deployment
    scaled to zero): devices whose actors hold a window are forecast from
    it; a device whose actor holds nothing fails with the reason, nothing
    audited; once telemetry is back it is forecast as usual."""
    cold, warm = "hp-0024", ["hp-0001", "hp-0002", "hp-0003"]
    _forget_actor(stack, rds, cold)
    assert forecast_ok(gateway)  # the restarted forecaster knows the fleet again
    for device in warm:  # their actors active, holding a window
        assert _ask(gateway, device, 3)[0] == 200
    hold = stack["data_dir"] / "run" / "hold" / "telemetry"
    hold.parent.mkdir(parents=True, exist_ok=True)
    hold.touch()
    try:
        os.kill(app_pid("telemetry"), 9)
        assert eventually(lambda: not healthy(8002), timeout=10)
        served = [_ask(gateway, device, 5) for device in warm]
        code, failed, fail_s = _ask(gateway, cold, 5)
        still_down = not healthy(8002)
    finally:
        hold.unlink()
    assert still_down, "the telemetry service came back while held"
    for code_w, view, _ in served:
        assert code_w == 200 and view["status"] == "COMPLETED" and view.get("created"), view
    assert code >= 500 and failed["status"] == "FAILED", failed
    assert "telemetry" in failed["error"] or "deadline" in failed["error"], failed
    assert not _audited(failed["forecast_id"])
    assert eventually(lambda: healthy(8002), timeout=90), "telemetry not back once released"
    back = eventually(lambda: (r := _ask(gateway, cold, 6))[0] == 200 and r, timeout=60)
    assert back, "the first-use device is not forecast once telemetry is back"
    record_figures(stack, "telemetry down (held)", {
        "warm_served": sum(c == 200 for c, _, _ in served), "warm_asked": len(served),
        "warm_seconds_max": round(max(s for _, _, s in served), 1),
        "warm_noting_telemetry_unavailable": sum(any("telemetry service unavailable" in n
                                                     for n in v["result"].get("notes", ()))
                                                 for _, v, _ in served),
        "first_use_failed_in_s": round(fail_s, 1), "first_use_reason": failed["error"][:200]})


def test_a_step_that_hangs_fails_the_forecast_at_the_deadline(stack, gateway, rds):
    """The actor's Prepare, inside make_forecast, hangs past the 60 s deadline (a failpoint holds it
    70 s, as a dependency that stops answering would): make_forecast stops
    waiting for it and fails the forecast at 60 s with the step named, and
    when the part lets go nothing is published or audited."""
    start = floor_quarter_hour(datetime.now(UTC)) - timedelta(hours=30)
    failpoints.arm(stack["failpoints"], failpoints.FORECAST_IN_FETCH, hang=70)
    t0 = time.monotonic()
    r = gateway.post("/forecast/intraday", json={"device_id": "hp-0005", "forecast_start": isoformat_z(start),
                                                 "horizon_hours": 4})
    assert r.status_code == 202, r.text
    fid = r.json()["forecast_id"]

    def final() -> dict | None:
        view = gateway.get(f"/forecast/{fid}").json()
        return view if view["status"] in ("COMPLETED", "FAILED") else None

    view = eventually(final, timeout=120)
    failed_s = time.monotonic() - t0
    assert view and view["status"] == "FAILED", view
    assert "deadline of 60 s passed while making the forecast" in view["error"], view
    time.sleep(max(0.0, 75 - (time.monotonic() - t0)))  # the held step has let go
    assert gateway.get(f"/forecast/{fid}").json()["status"] == "FAILED"
    assert not _audited(fid)
    assert not [m for m in topic_messages(rds, "forecasts") if m.get("forecast_id") == fid]
    record_figures(stack, "a step hangs past the deadline", {"failed_after_s": round(failed_s, 1),
                                                             "reason": view["error"]})


def test_redis_state_lost(stack, gateway, rds, devices):
    """The state store loses every key (as a cache without persistence
    failing over would), the streams kept (in production pub/sub is another
    service): actors rebuild their windows from telemetry; a forecast whose
    workflow state is gone answers NOT_FOUND with the reason, and asked
    again is made once; nothing is published with other numbers."""
    def inject():
        # One forecast held in its fetch step while the keys go, so that a
        # workflow is surely in flight (most finish in ~100 ms).
        held = failpoints.arm(stack["failpoints"], failpoints.FORECAST_IN_FETCH, hang=10)
        assert eventually(lambda: not held.exists(), timeout=30), "no forecast reached the failpoint"
        lost = 0
        for key in list(rds.scan_iter(count=1000)):
            if rds.type(key) != b"stream":
                lost += rds.delete(key)
        assert lost > 0 and _actor_keys(rds) == 0

    figures = _run_fault(stack, gateway, rds, devices, "redis state lost (streams kept)", 36, inject,
                         lost=True)
    # The held one comes back NOT_FOUND and is asked again, or (seen since
    # the run-started step runs beside the fetch) its workflow finishes
    # despite the wiped keys; either way made once (the books above).
    again, all_made = figures["asked_again_after_state_lost"], figures["completed"] == figures["accepted"]
    assert again >= 1 or all_made, figures
    assert figures["completed"] > 0 and _actor_keys(rds) > 0, figures


def test_scheduler_sigterm_under_load(stack, gateway, rds, devices):
    """A graceful stop of Dapr's scheduler (SIGTERM, not kill -9) while
    forecasts start: in Dapr 1.18.2 a workflow whose start reminder fails
    during the shutdown stays PENDING for good. Every accepted forecast
    finishes (the watchdog starts a stuck one again) or fails with a reason."""
    run = stack["data_dir"] / "run"

    def inject():
        os.kill(int((run / "scheduler.pid").read_text()), signal.SIGTERM)
        back = eventually(lambda: _answers("http://127.0.0.1:58082/healthz"), timeout=120)
        assert back, "scheduler not back"

    figures = _run_fault(stack, gateway, rds, devices, "scheduler SIGTERM under load", 156, inject)
    assert figures["completed"] > 0, figures


def test_redis_restarted_from_a_snapshot_10_s_old(stack, gateway, rds, devices):
    """What a failover of the state store to an asynchronous replica does:
    Redis killed and started from its files as they were 10 s before, while
    forecasts start, and the forecaster's sidecar restarted with it.
    Workflows started since are gone from the state store;
    the watchdog starts each again from its register (workflow_runs), so
    every accepted forecast still finishes or fails with a reason, and is
    audited once."""
    data = stack["data_dir"] / "redis" / "appendonlydir"
    snapshot = stack["data_dir"] / "redis-snapshot"

    def inject():
        rds.bgrewriteaof()
        assert eventually(lambda: not (p := rds.info("persistence"))["aof_rewrite_in_progress"]
                          and not p["aof_rewrite_scheduled"], timeout=60)
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.copytree(data, snapshot)
        # One forecast held in its fetch step across the rollback, so that a
        # workflow the state store forgets is surely in flight.
        held = failpoints.arm(stack["failpoints"], failpoints.FORECAST_IN_FETCH, hang=15)
        assert eventually(lambda: not held.exists(), timeout=10), "no forecast reached the failpoint"
        time.sleep(10)  # forecasts accepted and workflows started after the snapshot
        os.kill(int((stack["data_dir"] / "run" / "redis.pid").read_text()), 9)
        shutil.rmtree(data)
        shutil.copytree(snapshot, data)
        _stack_sh(stack, "start", "redis")
        rds.connection_pool.disconnect()
        # The workflow engine in the forecaster's sidecar keeps what it holds
        # in memory and writes it back; restarted with the store (a zone
        # lost with both), it reads the older state, and forgets.
        kill_sidecar("forecaster")
        assert eventually(lambda: _answers("http://127.0.0.1:3501/v1.0/healthz"), timeout=120)

    name = "redis from a snapshot 10 s old, forecaster daprd restarted"
    figures = _run_fault(stack, gateway, rds, devices, name, 132, inject, rolled_back=True)
    assert figures["completed"] > 0, figures
    assert figures["redriven_by_watchdog"] >= 1, figures  # the held one, at least
