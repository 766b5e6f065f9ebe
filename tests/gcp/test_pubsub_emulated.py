"""The whole forecast path on Google Cloud Pub/Sub, swapped in by YAML only:
the stack runs with INTRADAY_COMPONENTS=gcp-emulated (components/gcp/pubsub.yaml
pointed at the Pub/Sub emulator of the Google Cloud CLI, everything else
local). `make test` runs this directory as a second session, on a stack of
its own.

What it shows: the production pub/sub component loads in every sidecar, the
subscriptions Dapr makes are the ones the chart's autoscalers watch, with
the production dead-letter policy; a forecast's message arrives on
`forecasts` and a price tick becomes a trade decision and its `orders`
message, all through Pub/Sub and nothing through Redis."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from intraday import messages
from tests.stack import dapr_headers, eventually, intraday

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "intraday-local"
EMULATOR = f"http://127.0.0.1:{os.environ.get('INTRADAY_PUBSUB_EMULATOR_PORT', '8085')}/v1/projects/{PROJECT}"


class Subscription:
    """A subscription of the test's own on a topic (made before anything is
    published: Pub/Sub delivers only what comes after)."""

    def __init__(self, topic: str):
        self.name = f"test-{topic}-{uuid.uuid4().hex[:8]}"
        r = httpx.put(f"{EMULATOR}/topics/{topic}")
        assert r.status_code in (200, 409), r.text  # 409: Dapr made it already
        r = httpx.put(f"{EMULATOR}/subscriptions/{self.name}",
                      json={"topic": f"projects/{PROJECT}/topics/{topic}", "ackDeadlineSeconds": 60})
        assert r.status_code == 200, r.text
        self.seen: list[dict] = []

    def pull(self) -> list[dict]:
        """Every message so far: the `data` of its CloudEvent."""
        r = httpx.post(f"{EMULATOR}/subscriptions/{self.name}:pull", json={"maxMessages": 1000}, timeout=30)
        assert r.status_code == 200, r.text
        received = r.json().get("receivedMessages", [])
        if received:
            httpx.post(f"{EMULATOR}/subscriptions/{self.name}:acknowledge",
                       json={"ackIds": [m["ackId"] for m in received]}).raise_for_status()
        for m in received:
            event = json.loads(base64.b64decode(m["message"]["data"]))
            self.seen.append(event.get("data", event))
        return self.seen


@pytest.fixture(scope="module")
def emulated(stack) -> dict:
    assert os.environ.get("INTRADAY_COMPONENTS") == "gcp-emulated"
    return stack


def test_every_sidecar_loaded_the_gcp_pubsub_component(emulated, gateway):
    for port in (3500, 3501, 3502, 3503):
        r = httpx.get(f"http://127.0.0.1:{port}/v1.0/metadata", headers=dapr_headers(emulated))
        assert r.status_code == 200, r.text
        components = {c["name"]: c["type"] for c in r.json()["components"]}
        assert components["pubsub"] == "pubsub.gcp.pubsub", components


def test_the_subscriptions_are_the_ones_the_chart_scales_on_with_the_dead_letter_policy(emulated, gateway):
    values = yaml.safe_load((ROOT / "charts" / "intraday" / "values.yaml").read_text())
    watched = {s["autoscaling"]["queue"]["subscription"] for s in values["services"].values()
               if s["autoscaling"].get("queue", {}).get("kind") == "pubsub"}
    assert watched == {"trading-prices", "telemetry-telemetry"}
    for name in watched:
        r = httpx.get(f"{EMULATOR}/subscriptions/{name}")
        assert r.status_code == 200, f"Dapr made no subscription {name}: {r.text}"
        sub = r.json()
        assert sub["topic"] == f"projects/{PROJECT}/topics/{name.split('-', 1)[1]}"
        dead_letter = f"projects/{PROJECT}/topics/dead-letter"
        assert sub["deadLetterPolicy"] == {"deadLetterTopic": dead_letter, "maxDeliveryAttempts": 10}


def test_a_forecast_is_published_on_pubsub(emulated, gateway, pg, rds):
    forecasts = Subscription("forecasts")
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "hp-0003"})
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["status"] == "COMPLETED"
    fid = view["forecast_id"]
    mine = eventually(lambda: [m for m in forecasts.pull() if m["forecast_id"] == fid], timeout=30)
    assert len(mine) == 1
    assert mine[0] == messages.forecast_message_of(view["result"])
    audited = pg.execute("SELECT count(*) FROM forecast_requests WHERE request_id = %s", (fid,)).fetchone()[0]
    assert audited == 1
    assert not rds.exists("forecasts"), "a message went through Redis"


def test_a_price_tick_becomes_a_decision_and_its_orders_message(emulated, gateway, pg, rds):
    orders = Subscription("orders")
    price = 123.25
    r = gateway.post("/prices", json={"price_eur_mwh": price, "at": datetime.now(UTC).isoformat()})
    assert r.status_code == 202, r.text
    row = eventually(lambda: pg.execute(
        "SELECT decision_id, buy_mwh, array_length(forecast_ids, 1) FROM trade_decisions"
        " WHERE price_eur_mwh = %s", (price,)).fetchone(), timeout=120)
    assert row is not None, "no trade decision: the tick did not reach trading over Pub/Sub"
    decision_id, buy, devices = row
    assert devices == 24
    published = eventually(lambda: [m for m in orders.pull() if m["decision_id"] == decision_id], timeout=30)
    assert len(published) == 1 and published[0]["buy_mwh"] == pytest.approx(buy, abs=1e-9)
    assert not rds.exists("prices") and not rds.exists("orders"), "a message went through Redis"


def test_the_first_start_serves_a_trained_model(emulated, gateway):
    """This stack started as a newcomer's first `make up` does: with no
    model yet, it trained one on the demo fleet and promoted it before the
    services came up, and forecasts come from it."""
    assert "no model is served yet: training one" in emulated["up_output"]
    served = json.loads(intraday(emulated["env"], "models", "list", "--json"))["promoted"]
    assert served and f"model {served}: trained" in emulated["up_output"]
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "hp-0005"})
    assert r.status_code == 200, r.text
    assert r.json()["result"]["model_version"] == served != "baseline"
