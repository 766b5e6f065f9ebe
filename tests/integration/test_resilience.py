"""Dapr Resiliency (components/*/resiliency.yaml): a call to an app that is
restarting is retried with backoff by the caller's sidecar instead of
failing at once."""

from __future__ import annotations

import socket
import threading

from tests.integration.conftest import eventually, restart_app


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_request_during_a_telemetry_restart_is_retried_and_answered(stack, gateway):
    assert gateway.get("/devices").status_code == 200
    restart = threading.Thread(target=restart_app, args=(stack, "telemetry", 8002))
    restart.start()
    try:
        assert eventually(lambda: not _listening(8002), timeout=10), "the telemetry app was not killed"
        # Its sidecar is up, the app is not: without the retry policy this
        # is a 500 within milliseconds (connection refused).
        r = gateway.get("/devices")
        assert r.status_code == 200, r.text
        assert len(r.json()) == 24
    finally:
        restart.join(timeout=90)
    assert not restart.is_alive()
