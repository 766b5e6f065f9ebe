"""Talking to this process's Dapr sidecar over its HTTP API.

Other apps are reached by Dapr service invocation (app id + method), topics
by pub/sub component name, actors by type and id: never by a hard-coded URL
of another service. Connections are pooled: one client per process (sync) and
one per event loop (async).
"""

from __future__ import annotations

import base64
import json as _json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import httpx
import numpy as np
import orjson

from intraday.forecasting.types import TelemetryWindow
from intraday.telemetry import window_batch
from intraday.timeutil import isoformat_z

PUBSUB = "pubsub"  # component name, same locally and on GCP
# The forecasts topic's own component (components/local/pubsub-forecasts.yaml:
# trimmed by count, the others by age).
FORECASTS_PUBSUB = "pubsub-forecasts"
# Where a subscriber's sidecar sends a message its app refused or kept failing
# (each subscription names it; services/gateway/dead_letters.py keeps them).
DEAD_LETTER_TOPIC = "dead-letter"
TIMEOUT = httpx.Timeout(10.0, connect=2.0)
LONG_TIMEOUT = httpx.Timeout(60.0, connect=2.0)  # bulk calls: a shard's windows, messages, state
# An actor call waits for the actor's turn, which a burst makes long. The
# only timeout on actor calls: the sidecars set none (components/*/resiliency.yaml).
ACTOR_TIMEOUT = httpx.Timeout(30.0, connect=2.0)
_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=64)
ASYNC_CONNECTIONS = 512  # async calls to the sidecar at once (a burst's requests wait beyond)


def sidecar_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('DAPR_HTTP_PORT', '3500')}"


def token_headers() -> dict[str, str]:
    """The Dapr API token this app presents to its sidecar (DAPR_API_TOKEN,
    which the sidecar requires when it has one too)."""
    token = os.environ.get("DAPR_API_TOKEN")
    return {"dapr-api-token": token} if token else {}


class SidecarError(RuntimeError):
    """The sidecar or the app behind it answered with an error."""

    def __init__(self, status_code: int, detail: Any):
        super().__init__(f"{status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _raise_for(r):
    if r.is_success:
        return r
    try:
        detail = r.json()
    except ValueError:
        detail = r.text
    raise SidecarError(r.status_code, detail)


_sync: httpx.Client | None = None


def sync_client() -> httpx.Client:
    global _sync
    if _sync is None:
        _sync = httpx.Client(base_url=sidecar_url(), timeout=TIMEOUT, limits=_LIMITS,
                             headers=token_headers())
    return _sync


@dataclass(frozen=True)
class Reply:
    """An async call's answer (the parts of httpx.Response callers use)."""

    status_code: int
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return _json.loads(self.content)


_session: aiohttp.ClientSession | None = None


async def _request(method: str, url: str, *, params: dict | None = None, json: Any = None,
                   content: bytes | str | None = None, headers: dict | None = None,
                   timeout: float | None = None) -> Reply:
    """An async call on the serving event loop, through one pooled aiohttp
    session. Not httpx here: its pool matches every waiting request against
    every connection on each event, which under a burst of hundreds cost the
    gateway ~20 ms of CPU per request; aiohttp's connector does not.
    (`sock_connect`, not `connect`: the latter counts the wait for a free
    connection of the pool, which a burst makes long.)"""
    global _session
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession(
            base_url=sidecar_url(), connector=aiohttp.TCPConnector(limit=ASYNC_CONNECTIONS),
            headers=token_headers(),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT.read, sock_connect=TIMEOUT.connect))
    kwargs: dict[str, Any] = {}
    if params:
        kwargs["params"] = {k: str(v) for k, v in params.items()}
    if json is not None:
        kwargs["data"] = _json.dumps(json)
        headers = {"content-type": "application/json", **(headers or {})}
    elif content is not None:
        kwargs["data"] = content
    if timeout is not None:
        kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout, sock_connect=TIMEOUT.connect)
    async with _session.request(method, url, headers=headers, **kwargs) as r:
        return Reply(r.status, await r.read(), r.headers)


# -- service invocation --------------------------------------------------

async def invoke(app_id: str, method: str, path: str, **kwargs: Any) -> Reply:
    r = await _request(method, f"/v1.0/invoke/{app_id}/method/{path}", **kwargs)
    return r


async def fetch_window(device_id: str, start: datetime, end: datetime) -> TelemetryWindow:
    r = _raise_for(
        await invoke(
            "telemetry", "GET", f"devices/{device_id}/window",
            params={"start": isoformat_z(start), "end": isoformat_z(end)},
        )
    )
    body = r.json()
    values = np.array([np.nan if v is None else v for v in body["values"]], dtype=np.float64)
    return TelemetryWindow(device_id, datetime.fromisoformat(body["start"]), values)


async def fetch_temperature(location: str, start: datetime, end: datetime,
                            as_of: datetime) -> tuple[np.ndarray, datetime | None]:
    """The temperature per quarter-hour as known at `as_of`, and when the
    newest forecast known then was issued (None: none was)."""
    r = _raise_for(
        await invoke(
            "telemetry", "GET", f"weather/{location}",
            params={"start": isoformat_z(start), "end": isoformat_z(end), "as_of": isoformat_z(as_of)},
        )
    )
    body = r.json()
    issued = body.get("forecast_issued_at")
    return (np.array([np.nan if v is None else v for v in body["values"]], dtype=np.float64),
            datetime.fromisoformat(issued) if issued else None)


async def fetch_device(device_id: str) -> dict:
    return _raise_for(await invoke("telemetry", "GET", f"devices/{device_id}")).json()


# -- state (the state store component: Redis locally) ------------------------

STATESTORE = "statestore"


async def get_state_bytes(key: str) -> bytes | None:
    r = await _request("GET", f"/v1.0/state/{STATESTORE}/{key}")
    if r.status_code == 204:
        return None
    body = _raise_for(r).json()
    return base64.b64decode(body["b64"])


async def get_state_versioned(key: str) -> tuple[Any, str | None]:
    """A JSON value and its ETag (None, None: no such key)."""
    r = await _request("GET", f"/v1.0/state/{STATESTORE}/{key}")
    if r.status_code == 204:
        return None, None
    return _raise_for(r).json(), r.headers.get("ETag")


async def save_state_if(key: str, value: Any, etag: str | None, ttl_seconds: int) -> bool:
    """Save `value` only if the key is still at `etag` (None: only if it
    does not exist, which Redis's state store spells ETag "0" for a key
    written first-write); False if another writer got there first."""
    item: dict[str, Any] = {"key": key, "value": value, "etag": etag or "0",
                            "options": {"concurrency": "first-write"},
                            "metadata": {"ttlInSeconds": str(ttl_seconds)}}
    r = await _request("POST", f"/v1.0/state/{STATESTORE}", json=[item])
    if r.status_code == 409:
        return False
    _raise_for(r)
    return True


async def save_state_bytes(key: str, data: bytes) -> None:
    payload = [{"key": key, "value": {"b64": base64.b64encode(data).decode()}}]
    _raise_for(await _request("POST", f"/v1.0/state/{STATESTORE}", json=payload, timeout=60.0))


def save_states(items: dict[str, Any], ttl_seconds: int) -> None:
    """Values (JSON) under keys, in one call, expiring after `ttl_seconds`."""
    body = [{"key": k, "value": v, "metadata": {"ttlInSeconds": str(ttl_seconds)}} for k, v in items.items()]
    _raise_for(sync_client().post(f"/v1.0/state/{STATESTORE}", json=body,
                                  timeout=LONG_TIMEOUT))


def get_states(keys: list[str]) -> dict[str, Any]:
    """The values under `keys` (missing ones left out), in one call."""
    r = _raise_for(sync_client().post(f"/v1.0/state/{STATESTORE}/bulk", json={"keys": keys},
                                      timeout=LONG_TIMEOUT))
    return {item["key"]: item["data"] for item in r.json() if item.get("data") is not None}


def delete_states(keys: list[str]) -> None:
    body = {"operations": [{"operation": "delete", "request": {"key": k}} for k in keys]}
    _raise_for(sync_client().post(f"/v1.0/state/{STATESTORE}/transaction", json=body))


# -- actors and pub/sub (sync: used from workflow activities) --------------

def call_actor(actor_type: str, actor_id: str, method: str, body: dict) -> Any:
    r = sync_client().post(f"/v1.0/actors/{actor_type}/{actor_id}/method/{method}", json=body,
                           timeout=ACTOR_TIMEOUT)
    return _raise_for(r).json()


def _component(topic: str) -> str:
    """The pub/sub component a topic is on."""
    return FORECASTS_PUBSUB if topic == "forecasts" else PUBSUB


def publish(topic: str, data: dict, headers: dict[str, str] | None = None) -> None:
    _raise_for(sync_client().post(f"/v1.0/publish/{_component(topic)}/{topic}", json=data,
                                  headers=headers))


def publish_bulk(topic: str, events: list[tuple[str, dict]]) -> None:
    """Many messages in one call (Dapr's bulk publish API), each with its
    entry id; a failed entry raises, and the caller's retry publishes the
    batch again (consumers deduplicate on the forecast id)."""
    if not events:
        return
    body = [{"entryId": entry_id, "event": data, "contentType": "application/json"}
            for entry_id, data in events]
    # orjson, not httpx's json=: the same JSON (shortest round-trip floats,
    # keys in order) in a fraction of the time under the GIL, which the
    # other shards wait for (bench/results/fleet-profile.json). Forecasts
    # hold no NaN (the API could not serve one either). NumPy arrays (the
    # forecast messages' watts) are written as JSON arrays.
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    r = _raise_for(sync_client().post(f"/v1.0-alpha1/publish/bulk/{_component(topic)}/{topic}",
                                      content=content, headers={"content-type": "application/json"},
                                      timeout=LONG_TIMEOUT))
    failed = r.json().get("failedEntries") if r.content else None
    if failed:
        raise SidecarError(500, f"bulk publish on {topic}: {len(failed)} of {len(events)} entries failed: "
                                f"{failed[0]}")


def fetch_windows(device_ids: list[str], start: datetime, end: datetime,
                  cut: datetime | None = None) -> window_batch.WindowBatch:
    """The windows [start, end) of many devices in one telemetry query (the
    same values `fetch_window` gives one device), rows in the order asked;
    with `cut`, only [cut, end) is shipped (TelemetryWindow.cut)."""
    body = {"device_ids": device_ids, "start": isoformat_z(start), "end": isoformat_z(end)}
    if cut is not None:
        body["cut"] = isoformat_z(cut)
    r = _raise_for(sync_client().post("/v1.0/invoke/telemetry/method/windows", json=body,
                                      timeout=LONG_TIMEOUT))
    return window_batch.decode(r.content, len(device_ids))


async def publish_async(topic: str, data: dict, message_id: str | None = None) -> None:
    """Publish `data` on `topic`. With `message_id`, the message's CloudEvent
    id is that (not a random one): the same message published twice (a
    retried request, a redelivery that decides again) carries one id, which
    its consumers deduplicate on."""
    params = {"metadata.cloudevent.id": message_id} if message_id else None
    _raise_for(await _request("POST", f"/v1.0/publish/{_component(topic)}/{topic}", json=data,
                              params=params))


async def call_actor_async(actor_type: str, actor_id: str, method: str, body: dict) -> Any:
    r = await _request("POST", f"/v1.0/actors/{actor_type}/{actor_id}/method/{method}", json=body,
                       timeout=ACTOR_TIMEOUT.read)
    return _raise_for(r).json()


def shutdown() -> None:
    """Ask this app's sidecar to shut down: its restart policy (Compose's,
    the pod's) brings it back (services/forecaster/engine_guard.py)."""
    _raise_for(sync_client().post("/v1.0/shutdown"))


async def schedule_job(name: str, schedule: str, data: dict) -> None:
    """Register (or, with no schedule, remove) a Dapr job with this app's
    sidecar, retrying until the sidecar and its scheduler answer. Dapr's
    scheduler then calls the app's `POST /job/<name>` on schedule."""
    import asyncio
    import logging

    log = logging.getLogger(__name__)
    path = f"/v1.0-alpha1/jobs/{name}"
    while True:
        try:
            # With data: daprd 1.18 cannot answer a GET of a job without it.
            job = {"schedule": schedule, "overwrite": True, "data": data}
            r = await (_request("POST", path, json=job) if schedule else _request("DELETE", path))
            if r.is_success or (not schedule and r.status_code in (404, 500)):
                log.info("job %s: %s", name, schedule or "none")
                return
            log.warning("scheduling the job %s: %s %s", name, r.status_code, r.text[:300])
        except Exception as e:  # noqa: BLE001 - the sidecar is not up yet
            log.info("scheduling the job %s: %s", name, str(e)[:200])
        await asyncio.sleep(5)
