"""The forecaster's fleet list (workflows/activities.fleet_devices): one
call to the telemetry service a minute; while that service is down or
hangs, the last list it gave is served, so forecasts for known devices go
on; with none yet, the failure is raised. Against a real HTTP server in
the sidecar's place."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from services import sidecar
from workflows import activities


class Telemetry:
    """The telemetry service's /devices behind a sidecar's invoke path:
    up, down (500, as a sidecar answers for a dead app) or hanging."""

    def __init__(self) -> None:
        self.mode, self.calls = "up", 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.calls += 1
                if owner.mode == "hang":
                    time.sleep(8)
                if owner.mode == "up":
                    body = json.dumps([{"device_id": "hp-0001"}, {"device_id": "hp-0002"}]).encode()
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
    monkeypatch.setattr(activities, "_fleet", None)
    yield service
    service.server.shutdown()


def test_the_last_list_is_served_while_telemetry_is_down_or_hangs(telemetry, monkeypatch):
    assert set(activities.fleet_devices()) == {"hp-0001", "hp-0002"}
    monkeypatch.setattr(activities, "_FLEET_TTL_S", 0.0)  # every call wants a refresh now
    monkeypatch.setattr(activities, "_FLEET_RETRY_S", 0.0)
    for mode in ("down", "hang"):
        telemetry.mode = mode
        t0, before = time.monotonic(), telemetry.calls
        assert set(activities.fleet_devices()) == {"hp-0001", "hp-0002"}
        assert telemetry.calls == before + 1  # it did ask
        assert time.monotonic() - t0 < activities._FLEET_TIMEOUT + 2  # and did not wait for the hang


def test_without_a_list_yet_the_failure_is_raised(telemetry):
    telemetry.mode = "down"
    with pytest.raises(httpx.HTTPStatusError):
        activities.fleet_devices()


def test_after_a_failed_refresh_the_next_try_waits(telemetry, monkeypatch):
    activities.fleet_devices()
    monkeypatch.setattr(activities, "_FLEET_TTL_S", 0.0)
    telemetry.mode = "down"
    activities.fleet_devices()
    calls = telemetry.calls
    activities.fleet_devices()  # within _FLEET_RETRY_S of the failure: not asked again
    assert telemetry.calls == calls
