"""The whole system from docker-compose.yml, run with podman (harness.py):
a session of its own (`make test-compose` runs it after `make images`,
with INTRADAY_COMPOSE=on; tests/stack.py's SESSIONS), up from a clean state
(volumes removed) and down at the end."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import redis

from tests.compose import harness


def _busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def composed() -> Iterator[dict]:
    missing = harness.missing_images()
    if missing:
        pytest.fail(f"images not built ({', '.join(missing)}): run `make images`")
    busy = [f"{name} :{port}" for name, port in harness.PUBLISHED.items() if _busy(port)]
    if busy:
        pytest.fail(f"ports in use ({', '.join(busy)}): stop the running stack with `make down`")
    harness.down()
    assert not harness.leftovers(), f"an earlier run left {harness.leftovers()}"
    t0 = time.monotonic()
    try:
        harness.compose("up", "-d", timeout=900)
        healthy = harness.wait_healthy(timeout=600, progress=lambda line: print(f"[compose] {line}"))
        yield {"healthy": healthy, "all_healthy_s": time.monotonic() - t0}
    finally:
        harness.down()


@pytest.fixture(scope="session")
def key(composed) -> str:
    return harness.make_key("compose-tests")


@pytest.fixture(scope="session")
def gateway(key) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=harness.GATEWAY, timeout=150,
                      headers={"authorization": f"Bearer {key}"}) as c:
        yield c


@pytest.fixture(scope="session")
def pg(composed) -> Iterator[psycopg.Connection]:
    with psycopg.connect(harness.pg_dsn(), autocommit=True, connect_timeout=10) as conn:
        yield conn


@pytest.fixture(scope="session")
def rds(composed) -> Iterator[redis.Redis]:
    client = redis.Redis(host=harness.ip_of("redis"), port=6379, socket_timeout=10)
    yield client
    client.close()
