"""The real local stack for integration tests: Redis, PostgreSQL, Dapr
placement and scheduler, and the four services on daprd sidecars, started by
scripts/stack.sh in a fresh data directory and stopped afterwards."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from intraday import messages
from intraday.config import Settings

ROOT = Path(__file__).resolve().parents[1]
PORTS = {"redis": 6379, "postgres": 5432, "sentry": 50001, "placement": 50005, "scheduler": 50006,
         "zipkin": 9411,
         "prometheus": 9090,
         "gateway": 8000, "forecaster": 8001, "telemetry": 8002, "trading": 8003}
PG_DSN = "postgresql://intraday@127.0.0.1:5432/intraday"


def _busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# Suites that run in a session of their own, on a stack started for them:
# tests/gcp with Google Cloud's emulators (INTRADAY_COMPONENTS=gcp-emulated),
# tests/own_fleet without the demo fleet (INTRADAY_DEMO_FLEET=off), the
# user's fleet imported into it; tests/certs with workload certificates that
# live a minute (INTRADAY_WORKLOAD_CERT_TTL=60s); tests/network with
# Toxiproxy on the stack's links (INTRADAY_TOXIPROXY=on); tests/replicas with
# two forecasters and two gateways (INTRADAY_REPLICAS=2). Such a session
# runs nothing else, the others not them.
SESSIONS = {"gcp": ("INTRADAY_COMPONENTS", "gcp-emulated"), "own_fleet": ("INTRADAY_DEMO_FLEET", "off"),
            "certs": ("INTRADAY_WORKLOAD_CERT_TTL", "60s"), "network": ("INTRADAY_TOXIPROXY", "on"),
            "replicas": ("INTRADAY_REPLICAS", "2"), "compose": ("INTRADAY_COMPOSE", "on")}


def _session_of(item) -> str | None:
    folder = Path(str(item.fspath)).parent.name
    return folder if folder in SESSIONS else None


def pytest_collection_modifyitems(config, items):
    session = next((name for name, (var, value) in SESSIONS.items() if os.environ.get(var) == value), None)
    deselected = [item for item in items if _session_of(item) != session]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if _session_of(item) == session]
    for item in items:
        if _session_of(item):
            item.add_marker(pytest.mark.integration)
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
        if "faults" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)
    # The dashboard's and the dead letters' tests, then the fuzzing, run after the other
    # integration tests: what they do (whole-fleet forecasts, prices that
    # move the trading service) would be found by the tests that make those
    # themselves (a fleet forecast is made once per start and model, so a
    # later price move in the same quarter-hour would reuse it). The fault
    # suite last: what it breaks cannot disturb another test.
    items.sort(key=lambda item: ("faults" in str(item.fspath),
                                 item.fspath.basename.startswith("test_fuzz"),
                                 item.fspath.basename in ("test_dashboard.py", "test_dead_letters.py")))


@pytest.fixture(scope="session")
def stack() -> Iterator[dict]:
    with run_stack() as started:
        yield started


@contextmanager
def run_stack(extra_env: dict[str, str] | None = None) -> Iterator[dict]:
    """The stack in .data/test-stack, with `extra_env` on top of the test
    settings; stopped on leaving."""
    busy = [f"{name} :{port}" for name, port in PORTS.items() if _busy(port)]
    if busy:
        pytest.fail(f"ports in use ({', '.join(busy)}): stop the running stack with `make down`")
    # Not a pytest tmp dir: those are private to root, and PostgreSQL runs as
    # its own user when the suite runs as root.
    data_dir = ROOT / ".data" / "test-stack"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    # Forecasters re-read the promoted model version every second, not 30 s;
    # the trading rule's debounce (unit-tested) is 1 s, so tests' moves trade.
    # A verified API key is trusted for 1 s (a revocation test waits for it).
    env = {**os.environ, "INTRADAY_DATA_DIR": str(data_dir), "INTRADAY_MODEL_REFRESH_SECONDS": "1",
           "INTRADAY_PRICE_DEBOUNCE_SECONDS": "1", "INTRADAY_API_KEY_CACHE_SECONDS": "1",
           # The workflow watchdog looks every 5 s, 10 s past an instance's deadline.
           "INTRADAY_WATCHDOG_SCHEDULE": "@every 5s", "INTRADAY_WATCHDOG_GRACE_SECONDS": "10",
           "INTRADAY_FAILPOINTS_DIR": str(data_dir / "failpoints"),
           # The daily training (tests/integration/test_training.py triggers it): small.
           "INTRADAY_TRAINING_ROWS": "50000",
           # The demo fleet's 24 devices in two shards, one in flight at a
           # time: every fleet forecast in the tests crosses shards and the
           # workflow's bounded fan-out (workflows/fleet.py). With replicas,
           # twelve shards, which placement spreads over both forecasters.
           "INTRADAY_FLEET_SHARD_SIZE": "2" if os.environ.get("INTRADAY_REPLICAS") else "12",
           "INTRADAY_FLEET_PARALLEL_SHARDS": "1",
           # The tests start on the seasonal fallback and train their own
           # models; the session on the GCP emulators starts as a first
           # `make up` does (Makefile).
           "INTRADAY_FIRST_MODEL": os.environ.get("INTRADAY_FIRST_MODEL", "off")}
    env.update(extra_env or {})
    env.pop("INTRADAY_API_KEY", None)
    # The gateway also takes tokens from an identity provider: a JWKS served
    # here (the provider's part), the signing key in the stack's dict.
    provider = IdentityProvider()
    env.update(INTRADAY_JWT_JWKS_URL=provider.jwks_url, INTRADAY_JWT_ISSUER=provider.issuer,
               INTRADAY_JWT_AUDIENCE=provider.audience)
    up = _stack_sh("up", env)
    if up.returncode != 0:
        # Once in CI a service's app ran but never answered its health check
        # (telemetry, 240 s, not seen here in many runs): what stack.sh
        # found goes to the run's output (not captured: a failed start is
        # worth reading even when the second one works), then the stack is
        # stopped and started again from nothing, once.
        sys.__stderr__.write(f"\n[tests/stack.py] the stack did not come up; starting it again once. "
                             f"stack.sh said:\n{up.stdout[-2000:]}\n{up.stderr[-8000:]}\n")
        _stack_sh("down", env)
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        up = _stack_sh("up", env)
    try:
        assert up.returncode == 0, f"stack did not come up:\n{up.stdout}\n{up.stderr}"
        yield {"data_dir": data_dir, "env": env, "failpoints": data_dir / "failpoints", "idp": provider,
               "up_output": up.stdout}
    finally:
        provider.close()
        _stack_sh("down", env)


def _stack_sh(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`scripts/stack.sh up` or `down` with the test settings; its output."""
    return subprocess.run(["bash", "scripts/stack.sh", command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600 if command == "up" else 120)


class IdentityProvider:
    """What the gateway needs of an identity provider: its signing keys
    published as a JWKS over HTTP, and tokens signed with them."""

    issuer, audience = "https://idp.intraday.test", "intraday"

    def __init__(self) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa

        self._jwt = jwt
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        body = json.dumps({"keys": [{**public, "kid": "test-1", "use": "sig", "alg": "RS256"}]}).encode()
        self.fetches = 0  # how often the keys were read
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                provider.fetches += 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.jwks_url = f"http://127.0.0.1:{self._server.server_port}/.well-known/jwks.json"

    def token(self, subject: str | None, scopes: str, ttl: int = 300, kid: str = "test-1", **claims) -> str:
        """A token signed with this provider's key; `claims` add to or
        replace the standard ones (None leaves one out)."""
        now = int(time.time())
        body = {"iss": self.issuer, "aud": self.audience, "sub": subject, "iat": now, "exp": now + ttl,
                "scope": scopes, **claims}
        return self._jwt.encode({k: v for k, v in body.items() if v is not None}, self.private,
                                algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self._server.shutdown()


def dapr_headers(stack: dict) -> dict[str, str]:
    """What a client of a sidecar's API presents: its Dapr API token
    (`make up` keeps it in the data directory)."""
    return {"dapr-api-token": (stack["data_dir"] / "dapr-api-token").read_text().strip()}


def app_headers(stack: dict) -> dict[str, str]:
    """What a caller of an app other than the gateway presents, as its
    sidecar does: the app API token (read as the CLI reads it)."""
    return {"dapr-api-token": Settings(data_dir=stack["data_dir"]).app_api_token}


def api_key(stack: dict) -> str:
    """The all-scopes key `make up` made for the local user."""
    return (stack["data_dir"] / "api-key").read_text().strip()


@pytest.fixture(scope="session")
def gateway(stack) -> Iterator[httpx.Client]:
    """The gateway, as the local user (the key `make up` wrote)."""
    with httpx.Client(base_url="http://127.0.0.1:8000", timeout=90,
                      headers={"authorization": f"Bearer {api_key(stack)}"}) as c:
        yield c


@pytest.fixture(scope="session")
def pg(stack) -> Iterator[psycopg.Connection]:
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def rds(stack) -> Iterator[redis.Redis]:
    r = redis.Redis(port=6379)
    yield r
    r.close()


# Topics only the project's services publish on: every message read from
# them in a test is checked against its JSON Schema (schemas/). Tests that
# publish on the input topics check what they send (test_telemetry,
# test_trading).
VALIDATED_TOPICS = ("forecasts", "orders")


def topic_messages(rds: redis.Redis, topic: str) -> list[dict]:
    """The `data` of every CloudEvent published on a topic (Redis Streams)."""
    out = []
    for _, fields in rds.xrange(topic):
        event = json.loads(fields[b"data"])
        out.append(event.get("data", event))
        if topic in VALIDATED_TOPICS:
            messages.validate(topic, out[-1])
    return out


def eventually(check: Callable[[], object], timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def app_pid(name: str) -> int:
    """The pid of a service's app process."""
    return int(subprocess.run(["pgrep", "-f", f"python -m services.{name}$"], capture_output=True,
                              text=True, check=True).stdout.split()[0])


def restart_app(stack: dict, name: str, port: int) -> None:
    """Kill a service's app process (SIGKILL: no shutdown hook runs); the
    stack's supervisor starts it again as it was started, behind the same
    sidecar; return once it answers its health check."""
    os.kill(app_pid(name), 9)
    eventually(lambda: not _busy(port), timeout=10)
    assert eventually(lambda: healthy(port), timeout=90), f"{name} did not come back"


def kill_sidecar(name: str) -> int:
    """SIGKILL an app's daprd; its pid."""
    pid = int(subprocess.run(["pgrep", "-f", f"daprd .*--app-id {name}( |$)"], capture_output=True,
                             text=True, check=True).stdout.split()[0])
    os.kill(pid, 9)
    return pid


def intraday(env: dict, *args: str) -> str:
    """Run the `intraday` CLI against the test stack; its output."""
    r = subprocess.run([str(ROOT / ".venv/bin/intraday"), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"intraday {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def train_and_promote(env: dict, work: Path) -> str:
    """A small model trained on a generated fleet like the demo one, and
    promoted; its version. (The caller removes models/PROMOTED afterwards.)"""
    data = work / "fleet.parquet"
    intraday(env, "fleet", "generate", "--devices", "24", "--days", "14", "--faults", "none",
             "--out", str(data))
    out = intraday(env, "train", "--data", str(data), "--train-rows", "40000", "--trees", "30", "--promote")
    assert "promoted" in out
    return out.split()[1].rstrip(":")


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
