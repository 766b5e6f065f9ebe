"""What every app refuses before its routes see a request (services/http.py),
on the four real apps (their lifespans not run: nothing here reaches a
store):

- a path with encoded separators or dots, a backslash or a dot segment
  (Dapr 1.18.2's access-control prefix match can be slipped with them);
- a caller that names itself in Dapr's headers (`dapr-caller-app-id`, ...)
  but presents no credential: those headers are never trusted."""

from __future__ import annotations

import asyncio
import importlib

import httpx
import pytest

APPS = ("gateway", "forecaster", "telemetry", "trading")
TOKEN = "test-app-api-token"


class Client:
    """Requests to an app in this process (httpx over ASGI; no lifespan)."""

    def __init__(self, app) -> None:
        self.app = app

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                         base_url="http://testserver") as client:
                return await client.request(method, path, **kwargs)
        return asyncio.run(go())

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.request("GET", path, **kwargs)


@pytest.fixture(scope="module")
def clients():
    mp = pytest.MonkeyPatch()
    mp.setenv("APP_API_TOKEN", TOKEN)  # read when an app first builds its middleware
    out = {name: Client(importlib.import_module(f"services.{name}.app").app) for name in APPS}
    yield out
    mp.undo()


async def _raw(app, raw_path: bytes) -> tuple[int, bytes]:
    """One request with exactly this path on the wire (an HTTP client would
    normalize dot segments away)."""
    sent: dict = {}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["body"] = sent.get("body", b"") + message.get("body", b"")

    path = raw_path.decode("latin-1")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": raw_path, "root_path": "", "query_string": b"",
             "headers": [(b"host", b"testserver"), (b"dapr-api-token", TOKEN.encode())],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    await app(scope, receive, send)
    return sent["status"], sent.get("body", b"")


@pytest.mark.parametrize("name", APPS)
@pytest.mark.parametrize("path", ["/health%2F..%2Fmetrics", "/devices%2fhp-1", "/health%5C..",
                                  "/%2E%2E/health", "/devices/hp%2e1"])
def test_encoded_separators_and_dots_are_refused_before_routing(clients, name, path):
    r = clients[name].get(path, headers={"dapr-api-token": TOKEN})
    assert r.status_code == 400, (name, path, r.status_code, r.text)
    assert "encoded separators" in r.json()["detail"]


@pytest.mark.parametrize("name", APPS)
@pytest.mark.parametrize("raw", [b"/health/../metrics", b"/./health", b"/devices/..", b"/health\\..\\x"])
def test_dot_segments_and_backslashes_are_refused(clients, name, raw):
    status, body = asyncio.run(_raw(clients[name].app, raw))
    assert status == 400 and b"dot segments" in body, (name, raw, status, body)


@pytest.mark.parametrize("name", APPS)
def test_plain_paths_pass(clients, name):
    assert clients[name].get("/health").json()["service"] == name


@pytest.mark.parametrize(("name", "path"), [("forecaster", "/forecasts/fc-x"), ("telemetry", "/devices"),
                                            ("trading", "/dapr/subscribe")])
def test_an_app_never_trusts_a_caller_naming_itself_in_daprs_headers(clients, name, path):
    forged = {"dapr-caller-app-id": "gateway", "dapr-app-id": name, "dapr-caller-namespace": "default"}
    r = clients[name].get(path, headers=forged)
    assert r.status_code == 401 and "app API token" in r.json()["detail"]


def test_the_gateway_never_trusts_a_caller_naming_itself_in_daprs_headers(clients):
    forged = {"dapr-caller-app-id": "trading", "dapr-app-id": "gateway"}
    for method, path in (("GET", "/devices"), ("POST", "/prices")):
        r = clients["gateway"].request(method, path, headers=forged, json={"price_eur_mwh": 90.0})
        assert r.status_code == 401, (path, r.status_code, r.text)


def test_the_guard_is_the_outermost_layer(clients):
    """Refused before authentication: the same 400 with no credential at all."""
    r = clients["telemetry"].get("/devices%2F..%2Fwindows")
    assert r.status_code == 400 and "encoded separators" in r.json()["detail"]
