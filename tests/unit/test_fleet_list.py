"""The forecaster's fleet list (clients/fleet_list.fleet_devices):
re-validated in the background, so no request waits for it; while the
telemetry service is down or hangs, the last list it gave is served, so
forecasts for known devices go on; with none yet, the failure is raised.
Against a real HTTP server in the sidecar's place."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from clients import fleet_list, sidecar


class Telemetry:
    """The telemetry service's /devices behind a sidecar's invoke path:
    up, down (500, as a sidecar answers for a dead app) or hanging."""

    def __init__(self) -> None:
        self.mode, self.calls = "up", 0
        self.devices = ["hp-0001", "hp-0002"]
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.calls += 1
                if owner.mode == "hang":
                    time.sleep(8)
                if owner.mode == "up":
                    body = json.dumps([{"device_id": d} for d in owner.devices]).encode()
                    self.send_response(200)
                else:
                    body = b'{"errorCode":"ERR_DIRECT_INVOKE"}'
                    self.send_response(500)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def telemetry(monkeypatch):
    service = Telemetry()
    monkeypatch.setattr(sidecar, "_sync", httpx.Client(base_url=f"http://127.0.0.1:{service.server.server_port}"))
    monkeypatch.setattr(fleet_list, "_fleet", None)
    yield service
    fleet_list._fleet = None  # the re-validating thread ends with the list
    if fleet_list._keeper is not None:
        fleet_list._keeper.join(timeout=10)
    service.server.shutdown()


def _until(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _timed(call) -> tuple[object, float]:
    t0 = time.monotonic()
    return call(), time.monotonic() - t0


def test_the_last_list_is_served_while_telemetry_is_down_or_hangs(telemetry, monkeypatch):
    assert set(fleet_list.fleet_devices()) == {"hp-0001", "hp-0002"}
    monkeypatch.setattr(fleet_list, "_FLEET_TTL_S", 0.05)  # re-validated all the time
    monkeypatch.setattr(fleet_list, "_FLEET_RETRY_S", 0.05)
    for mode in ("down", "hang"):
        telemetry.mode = mode
        asked = telemetry.calls + 1
        assert _until(lambda n=asked: telemetry.calls >= n)  # it does ask
        devices, seconds = _timed(fleet_list.fleet_devices)
        assert set(devices) == {"hp-0001", "hp-0002"}
        assert seconds < 0.5  # a request waits neither for the refresh nor for the hang


def test_a_changed_registry_reaches_the_list_without_a_request_waiting(telemetry, monkeypatch):
    assert set(fleet_list.fleet_devices()) == {"hp-0001", "hp-0002"}
    monkeypatch.setattr(fleet_list, "_FLEET_TTL_S", 0.05)
    telemetry.devices = ["hp-0001", "hp-0003"]
    assert _until(lambda: set(fleet_list.fleet_devices()) == {"hp-0001", "hp-0003"})
    assert _timed(fleet_list.fleet_devices)[1] < 0.05  # from memory


def test_without_a_list_yet_the_failure_is_raised(telemetry):
    telemetry.mode = "down"
    with pytest.raises(httpx.HTTPStatusError):
        fleet_list.fleet_devices()


def test_after_a_failed_refresh_the_next_try_waits(telemetry, monkeypatch):
    fleet_list.fleet_devices()
    monkeypatch.setattr(fleet_list, "_FLEET_TTL_S", 0.05)
    telemetry.mode = "down"
    before = telemetry.calls
    assert _until(lambda: telemetry.calls > before)  # a refresh failed
    time.sleep(1.0)
    assert telemetry.calls == before + 1  # the next waits _FLEET_RETRY_S (10 s), not the 0.05 s TTL
    assert set(fleet_list.fleet_devices()) == {"hp-0001", "hp-0002"}
