"""Dead letters on the real stack: a message its subscriber refuses, or
fails until the sidecar's delivery retries run out, is not acknowledged
into nothing (what Redis Streams does without a dead-letter topic) but
kept by the gateway where an operator sees it (GET /dead-letters, the
metric, `intraday status`), and sent again once mended, taken once."""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import httpx
import pytest

from intraday import failpoints
from tests.stack import app_headers, dapr_headers, eventually, intraday

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _publish_raw(stack: dict, topic: str, data: dict, message_id: str) -> None:
    """Publish on the gateway's sidecar, past the gateway's own checks."""
    r = httpx.post(f"http://127.0.0.1:3500/v1.0/publish/pubsub/{topic}", json=data,
                   params={"metadata.cloudevent.id": message_id}, headers=dapr_headers(stack), timeout=10)
    assert r.status_code == 204, r.text


def _dead(gateway: httpx.Client, topic: str, message_id: str) -> dict | None:
    r = gateway.get(f"/dead-letters/{topic}/{message_id}")
    return r.json() if r.status_code == 200 else None


def _metric(text: str, topic: str) -> float:
    series = f'intraday_dead_letters_total{{topic="{topic}"}}'
    line = next(x for x in text.splitlines() if x.startswith(series))
    return float(line.rsplit(" ", 1)[1])


def _tick_rows(pg, message_id: str) -> int:
    decision_id = "td-" + hashlib.sha256(message_id.encode()).hexdigest()[:16]
    return pg.execute("SELECT count(*) FROM price_ticks WHERE tick_id = %s", (decision_id,)).fetchone()[0]


def test_a_message_its_subscriber_refuses_is_kept_where_an_operator_sees_it(stack, gateway):
    before = _metric(httpx.get("http://127.0.0.1:8000/metrics").text, "prices")
    message_id = f"malformed-{uuid.uuid4().hex[:8]}"
    _publish_raw(stack, "prices", {"price_eur_mwh": "not a price"}, message_id)
    letter = eventually(lambda: _dead(gateway, "prices", message_id), timeout=30)
    assert letter, "the refused price message was not kept as a dead letter"
    assert letter["id"] == message_id and letter["topic"] == "prices"
    assert letter["data"] == {"price_eur_mwh": "not a price"}
    listing = gateway.get("/dead-letters", params={"limit": 50}).json()
    assert listing["topics"]["prices"]["waiting"] >= 1
    assert message_id in [d["message_id"] for d in listing["latest"]]
    assert _metric(httpx.get("http://127.0.0.1:8000/metrics").text, "prices") == before + 1
    status = json.loads(intraday(stack["env"], "status", "--json"))
    assert status["dead_letters"]["topics"]["prices"]["waiting"] >= 1
    assert message_id in intraday(stack["env"], "dead-letters", "list", "--limit", "50")
    # Delivered again (as a second dead-lettering of the same message would be): one row, counted once.
    _publish_raw(stack, "prices", {"price_eur_mwh": "not a price"}, message_id)
    time.sleep(3)
    again = gateway.get("/dead-letters", params={"limit": 50}).json()
    assert again["topics"]["prices"]["total"] == listing["topics"]["prices"]["total"]
    assert _metric(httpx.get("http://127.0.0.1:8000/metrics").text, "prices") == before + 1


def test_a_message_whose_handler_keeps_failing_is_dead_lettered_then_replayed_once(stack, gateway, pg):
    """Trading fails every price message for 45 s (a failpoint): the
    sidecar's retries (24 s) run out, the tick goes to dead-letter, no tick
    is recorded. Sent again once trading is mended, it is taken; sent a
    second time, it is still one tick."""
    tick_id = f"dl-{uuid.uuid4().hex[:8]}"
    message_id = f"tick-{tick_id}"
    armed = failpoints.arm(stack["failpoints"], failpoints.TRADING_ON_PRICE, fail=45)
    try:
        r = gateway.post("/prices", json={"price_eur_mwh": 91.5, "tick_id": tick_id})
        assert r.status_code == 202 and r.json()["message_id"] == message_id, r.text
        letter = eventually(lambda: _dead(gateway, "prices", message_id), timeout=60)
        assert letter, "a message failed past its retries was not dead-lettered"
        assert _tick_rows(pg, message_id) == 0
    finally:
        assert eventually(lambda: not armed.exists() or time.time() > float(armed.read_text().split()[1]),
                          timeout=60)
        armed.unlink(missing_ok=True)
    for _ in range(2):
        r = gateway.post(f"/dead-letters/prices/{message_id}/replay")
        assert r.status_code == 200, r.text
        taken = eventually(lambda: _tick_rows(pg, message_id) == 1, timeout=30)
        assert taken, "the replayed tick was not taken"
    time.sleep(3)
    assert _tick_rows(pg, message_id) == 1
    listing = gateway.get("/dead-letters", params={"limit": 50}).json()
    mine = next(d for d in listing["latest"] if d["message_id"] == message_id)
    assert mine["replayed_at"] is not None


def test_a_handler_that_fails_for_a_few_seconds_loses_nothing(stack, gateway, pg):
    """Failing for 10 s is inside the delivery retries: taken, not dead-lettered."""
    tick_id = f"brief-{uuid.uuid4().hex[:8]}"
    failpoints.arm(stack["failpoints"], failpoints.TRADING_ON_PRICE, fail=10)
    assert gateway.post("/prices", json={"price_eur_mwh": 92.5, "tick_id": tick_id}).status_code == 202
    assert eventually(lambda: _tick_rows(pg, f"tick-{tick_id}") == 1, timeout=60)
    assert _dead(gateway, "prices", f"tick-{tick_id}") is None


def test_dead_letters_are_for_the_sidecar_and_for_operators_only(stack, gateway):
    event = {"id": "forged", "topic": "prices", "data": {}}
    assert httpx.post("http://127.0.0.1:8000/dead-letters/inbox", json=event).status_code == 401
    assert httpx.post("http://127.0.0.1:8000/dead-letters/inbox", json=event,
                      headers={"dapr-api-token": "wrong"}).status_code == 401
    assert _dead(gateway, "prices", "forged") is None
    assert httpx.get("http://127.0.0.1:8000/dead-letters").status_code == 401
    reader = stack["idp"].token("a-reader", "forecast:read")
    r = httpx.get("http://127.0.0.1:8000/dead-letters", headers={"authorization": f"Bearer {reader}"})
    assert r.status_code == 403, r.text
    r = gateway.post("/dead-letters/orders/anything/replay")
    assert r.status_code == 422 and "cannot be sent again" in r.text
    assert gateway.post("/dead-letters/prices/no-such-letter/replay").status_code == 404
    # The sidecar's own token is what the inbox takes (it is how messages arrive).
    assert httpx.post("http://127.0.0.1:8000/dead-letters/inbox", json={"no": "id"},
                      headers=app_headers(stack)).json() == {"status": "DROP"}
