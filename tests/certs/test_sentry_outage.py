"""Sentry down for longer than the workload certificates live (issue 30,
7 g). Every daprd, placement and the scheduler hold an X.509 identity from
Sentry that lives INTRADAY_WORKLOAD_CERT_TTL (60 s here, 24 h in the
local stack) and is renewed at half its life. With Sentry gone past the
expiry, what was measured (docs/operations.md, "Sentry down"):

- connections made before the expiry keep working (TLS checks a
  certificate at the handshake only): the gateway's forecasts go on;
- every new connection fails its handshake ("certificate has expired"):
  the trading service's first call to the forecaster, a restarted sidecar
  (it cannot even get an identity, so it never becomes ready);
- nothing is lost: the price message that needed the new connection is
  retried and redelivered, and decided once after Sentry returns;
- once Sentry is back every process renews by itself, no restart needed.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
import uuid

import httpx
import pytest

from tests.faults.books import check_trading_books, record_figures
from tests.stack import eventually, kill_sidecar

pytestmark = pytest.mark.timeout(900)
TTL_S = 60


def _forecast(gateway: httpx.Client, device: str) -> int:
    try:
        return gateway.post("/forecast/intraday", params={"wait": "true"},
                            json={"device_id": device, "horizon_hours": 1}, timeout=90).status_code
    except httpx.HTTPError:
        return 0


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1.0/healthz", timeout=3).status_code == 204
    except httpx.HTTPError:
        return False


def _decided(pg, decision_id: str) -> bool:
    return pg.execute("SELECT count(*) FROM trade_decisions WHERE decision_id = %s",
                      (decision_id,)).fetchone()[0] == 1


def _dead_lettered(pg, message_id: str) -> bool:
    return pg.execute("SELECT count(*) FROM dead_letters WHERE message_id = %s",
                      (message_id,)).fetchone()[0] == 1


def test_sentry_down_past_the_certificates_ttl_loses_nothing_and_heals_by_itself(stack, gateway, pg):
    assert _forecast(gateway, "hp-0001") == 200  # the gateway's sidecar connects to the forecaster's
    run_dir = stack["data_dir"] / "run"
    (run_dir / "hold").mkdir(exist_ok=True)
    (run_dir / "hold" / "sentry").touch()  # the supervisor keeps it down once it dies
    os.kill(int((run_dir / "sentry.pid").read_text()), signal.SIGKILL)
    down = time.monotonic()
    time.sleep(TTL_S / 4)
    within_ttl = _forecast(gateway, "hp-0002")
    assert within_ttl == 200, "a forecast failed while every certificate was still valid"

    # Past the expiry of every certificate issued before Sentry stopped (the
    # newest is at most half a TTL old when it stops; a margin on top).
    time.sleep(max(0.0, down + TTL_S + 15 - time.monotonic()))
    old_connection = _forecast(gateway, "hp-0003")
    # A price move: the trading service calls the forecaster for the first
    # time, on a new connection, whose handshake fails.
    tick = f"sentry-{uuid.uuid4().hex[:6]}"
    decision_id = "td-" + hashlib.sha256(f"tick-{tick}".encode()).hexdigest()[:16]
    r = gateway.post("/prices", json={"price_eur_mwh": 140.0, "tick_id": tick})  # the first tick: a move
    assert r.status_code == 202, r.text
    time.sleep(20)
    decided_while_down = _decided(pg, decision_id)
    # A sidecar restarted now gets no identity: it never becomes ready.
    kill_sidecar("telemetry")
    time.sleep(20)
    restarted_ready_while_down = _ready(3502)
    assert not decided_while_down, "a decision needing a new connection was made with expired certificates"
    assert not restarted_ready_while_down, "a sidecar started without Sentry became ready"

    (run_dir / "hold" / "sentry").unlink()  # the supervisor starts Sentry again
    back = time.monotonic()
    assert eventually(lambda: _ready(3502), timeout=300), "the restarted sidecar never became ready"
    sidecar_ready_s = time.monotonic() - back
    taken = eventually(lambda: _decided(pg, decision_id) or _dead_lettered(pg, f"tick-{tick}"), timeout=300)
    assert taken, "the price message was lost: neither decided nor dead-lettered"
    tick_settled_s = time.monotonic() - back
    assert eventually(lambda: _forecast(gateway, "hp-0004") == 200, timeout=120)
    check_trading_books(pg)
    record_figures(stack, "sentry down past the workload certificates' TTL", {
        "certificate_ttl_s": TTL_S, "sentry_down_s": round(back - down, 1),
        "forecast_within_ttl": within_ttl, "forecast_on_an_old_connection_after_expiry": old_connection,
        "decided_on_a_new_connection_while_down": decided_while_down,
        "restarted_sidecar_ready_while_down": restarted_ready_while_down,
        "tick": "decided" if _decided(pg, decision_id) else "dead-lettered",
        "seconds_to_restarted_sidecar_ready": round(sidecar_ready_s, 1),
        "seconds_to_tick_settled": round(tick_settled_s, 1)})
