"""Toxiproxy's HTTP API (127.0.0.1:8474, started by `stack.sh up` with
INTRADAY_TOXIPROXY=on): the proxies on the stack's links and the faults
put on them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

API = "http://127.0.0.1:8474"
# The link -> the proxy on it (scripts/stack.sh, `proxies`).
LINKS = {"daprd-placement": "placement", "daprd-scheduler": "scheduler", "daprd-redis": "redis",
         "app-postgres": "postgres", "daprd-app": "forecaster-app"}
# A fault -> the toxics that make it: (type, stream, attributes). A
# blackhole passes nothing either way (and closes the connections when it
# ends, as both ends' TCP would have given up); a reset answers every
# connection, open or new, with a TCP RST; latency delays every answer 2 s.
FAULTS = {
    "blackhole": [("timeout", "upstream", {"timeout": 0}), ("timeout", "downstream", {"timeout": 0})],
    "reset": [("reset_peer", "upstream", {"timeout": 0})],
    "latency 2 s": [("latency", "downstream", {"latency": 2000, "jitter": 0})],
}


def add(proxy: str, kind: str, stream: str, attributes: dict) -> str:
    name = f"{kind}-{stream}"
    r = httpx.post(f"{API}/proxies/{proxy}/toxics", timeout=5, json={
        "name": name, "type": kind, "stream": stream, "toxicity": 1.0, "attributes": attributes})
    r.raise_for_status()
    return name


def remove(proxy: str, name: str) -> None:
    r = httpx.delete(f"{API}/proxies/{proxy}/toxics/{name}", timeout=5)
    if r.status_code != 404:
        r.raise_for_status()


def active(proxy: str) -> list[str]:
    r = httpx.get(f"{API}/proxies/{proxy}/toxics", timeout=5)
    r.raise_for_status()
    return [t["name"] for t in r.json()]


@contextmanager
def fault(link: str, kind: str) -> Iterator[None]:
    """The fault `kind` on `link` while the block runs; gone after it, whatever happens."""
    proxy = LINKS[link]
    names = []
    try:
        for toxic, stream, attributes in FAULTS[kind]:
            names.append(add(proxy, toxic, stream, attributes))
        yield
    finally:
        for name in names:
            remove(proxy, name)
