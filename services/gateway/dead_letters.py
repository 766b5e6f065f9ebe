"""Dead letters: the messages a subscriber could not take, kept where an
operator sees them.

A subscriber (trading on `prices`, telemetry on `telemetry` and `weather`)
that refuses a message (DROP) or fails it until its sidecar's delivery
retries run out has the message published, as it came, on the
`dead-letter` topic (each subscription names it; on GCP, Pub/Sub's own
dead-letter policy sends there too). Without that, Redis Streams would
acknowledge the message and it would be gone with no trace.

The gateway subscribes to `dead-letter` and keeps each one in PostgreSQL
(intraday.audit.dead_letters), counts it (`intraday_dead_letters_total`,
the DeadLetters alert), and serves them to operators: `GET /dead-letters`
(also in `intraday status`) and `POST /dead-letters/{topic}/{id}/replay`,
which publishes the message again on its topic under its own id (the
consumers deduplicate on it)."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Callable
from typing import Annotated, Any

import psycopg
import psycopg_pool
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import ConnectionPool

from clients import metrics, sidecar
from intraday.audit import dead_letters

log = logging.getLogger("gateway.dead_letters")
# How long the inbox keeps trying to write a dead letter before it fails
# the delivery: longer than the stream's processing timeout
# (components/local/pubsub.yaml, 30 s), so that a failed write leaves the
# message unacknowledged, to come again, rather than dropped after the
# sidecar's retries.
WRITE_PATIENCE_S = 40.0
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,255}$"


def _from_sidecar(dapr_api_token: Annotated[str, Header()] = "") -> None:
    """Only this app's sidecar delivers messages: it sends the app API token."""
    expected = os.environ.get("APP_API_TOKEN", "")
    if not expected or not hmac.compare_digest(dapr_api_token.encode(), expected.encode()):
        raise HTTPException(401, "only this app's Dapr sidecar delivers messages (app API token)")


def router(admin: Any, pool: Callable[[], ConnectionPool]) -> APIRouter:
    api = APIRouter()

    def with_conn(fn: Callable[..., Any], *args: Any) -> Any:
        with pool().connection() as conn:
            return fn(conn, *args)

    @api.get("/dapr/subscribe", include_in_schema=False)
    async def subscriptions() -> list[dict]:
        return [{"pubsubname": sidecar.PUBSUB, "topic": sidecar.DEAD_LETTER_TOPIC,
                 "route": "/dead-letters/inbox"}]

    @api.post("/dead-letters/inbox", include_in_schema=False, dependencies=[Depends(_from_sidecar)])
    async def inbox(request: Request) -> dict:
        """One dead letter from the sidecar: SUCCESS once kept; DROP for a
        message that is not a CloudEvent with an id and a topic (kept in
        the log: there is nothing to key it by)."""
        try:
            event = await request.json()
        except ValueError:
            event = None
        if not isinstance(event, dict):
            log.error("dropped a dead letter that is not a JSON object")
            return {"status": "DROP"}
        deadline = time.monotonic() + WRITE_PATIENCE_S
        while True:
            try:
                new = await run_in_threadpool(with_conn, dead_letters.record, event)
                break
            except ValueError as e:
                log.error("dropped a dead letter: %s: %s", e, str(event)[:500])
                return {"status": "DROP"}
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as e:
                if time.monotonic() > deadline:
                    raise
                log.warning("dead letter %s not kept yet (%s); trying again", event.get("id"), e)
                await asyncio.sleep(1.0)
        if new:
            metrics.DEAD_LETTERS.labels(str(event["topic"])).inc()
            log.error("dead letter on %s: message %s from %s", event["topic"], event["id"],
                      event.get("source"))
        return {"status": "SUCCESS"}

    @api.get("/dead-letters")
    async def listing(limit: Annotated[int, Query(ge=1, le=500)] = 20, _: Any = Depends(admin)) -> dict:
        """Dead letters per topic (total, waiting to be sent again, newest)
        and the newest ones, without their payloads."""
        return await run_in_threadpool(with_conn, dead_letters.summary, limit)

    @api.get("/dead-letters/{topic}/{message_id}")
    async def one(topic: Annotated[str, Path(pattern=_ID)], message_id: Annotated[str, Path(pattern=_ID)],
                  _: Any = Depends(admin)) -> dict:
        """One dead letter: the whole message as its subscriber got it."""
        event = await run_in_threadpool(with_conn, dead_letters.read, topic, message_id)
        if event is None:
            raise HTTPException(404, f"no dead letter {message_id} on {topic}")
        return event

    @api.post("/dead-letters/{topic}/{message_id}/replay")
    async def replay(topic: Annotated[str, Path(pattern=_ID)], message_id: Annotated[str, Path(pattern=_ID)],
                     _: Any = Depends(admin)) -> dict:
        """Publish a dead letter again on its topic, under its own id (so a
        message that was in fact taken is not taken twice); for after its
        cause is mended."""
        if topic not in dead_letters.REPLAYABLE:
            raise HTTPException(422, f"dead letters of {topic} cannot be sent again from here; "
                                     f"only those of {', '.join(dead_letters.REPLAYABLE)}")
        event = await run_in_threadpool(with_conn, dead_letters.read, topic, message_id)
        if event is None:
            raise HTTPException(404, f"no dead letter {message_id} on {topic}")
        if not isinstance(event.get("data"), dict):
            raise HTTPException(422, "the dead letter has no JSON object to publish again")
        await sidecar.publish_async(topic, event["data"], message_id=message_id)
        await run_in_threadpool(with_conn, dead_letters.mark_replayed, topic, message_id)
        return {"replayed": True, "topic": topic, "message_id": message_id}

    return api
