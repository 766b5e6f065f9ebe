"""Traces: `make up` runs a Zipkin server; every sidecar and every app
reports its spans there, one W3C trace per request: from the gateway
through the sidecars, the workflow and its activities, the actors, the
telemetry service and pub/sub to the trading decision. The audit rows name
the trace that made them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx

from tests.stack import eventually, topic_messages

ZIPKIN = "http://127.0.0.1:9411"
ACTOR_ROUTE = "put /actors/{actor_type_name}/{actor_id}/method/{method_name}"  # dapr-ext-fastapi's


def trace(trace_id: str) -> list[dict]:
    r = httpx.get(f"{ZIPKIN}/api/v2/trace/{trace_id}", timeout=5)
    return r.json() if r.status_code == 200 else []


def complete_trace(trace_id: str, services: set[str], names: set[str]) -> list[dict]:
    """The trace once Zipkin holds spans of `services` named `names`, and
    the parent of every span but the root (sidecars and apps export in
    batches, a few seconds apart)."""
    def ready() -> list[dict]:
        spans = trace(trace_id)
        have = {s["localEndpoint"]["serviceName"] for s in spans}
        ids = {s["id"] for s in spans}
        orphans = [s for s in spans if s.get("parentId") and s["parentId"] not in ids]
        return spans if services <= have and names <= {s.get("name") for s in spans} and not orphans \
            else []

    return eventually(ready, timeout=45) or trace(trace_id)


class Tree:
    def __init__(self, spans: list[dict]):
        self.by_id = {s["id"]: s for s in spans}
        self.spans = spans

    def find(self, service: str, name: str, kind: str | None = None) -> list[dict]:
        return [s for s in self.spans if s["localEndpoint"]["serviceName"] == service
                and s.get("name") == name and (kind is None or s.get("kind") == kind)]

    def ancestors(self, span: dict) -> list[dict]:
        out = []
        while (parent := self.by_id.get(span.get("parentId"))) is not None:
            out.append(parent)
            span = parent
        return out

    def descends(self, child: dict, parent: dict) -> bool:
        return any(a["id"] == parent["id"] for a in self.ancestors(child))


def test_a_price_move_is_one_trace_from_the_gateway_to_the_order(gateway, pg, rds):
    price = 300.0 + uuid.uuid4().int % 1000  # far from any price before: a move
    assert gateway.post("/prices", json={"price_eur_mwh": price, "at": datetime.now(UTC).isoformat()}) \
        .status_code == 202
    row = eventually(lambda: pg.execute(
        "SELECT decision_id, trace_id, portfolio_forecast_id FROM trade_decisions WHERE price_eur_mwh = %s",
        (price,)).fetchone(), timeout=60)
    assert row is not None, "no decision for the price move"
    decision_id, trace_id, fleet_id = row
    assert trace_id and len(trace_id) == 32 and int(trace_id, 16)

    # The audit rows of the fleet forecast behind the decision, and of the
    # device forecasts it made, name the same trace.
    assert pg.execute("SELECT trace_id FROM fleet_forecasts WHERE fleet_forecast_id = %s",
                      (fleet_id,)).fetchone()[0] == trace_id
    made = pg.execute("SELECT DISTINCT trace_id FROM forecast_requests WHERE fleet_forecast_id = %s",
                      (fleet_id,)).fetchall()
    assert [t for (t,) in made] in ([trace_id], [])  # [] when every device forecast existed before
    order = eventually(lambda: [m for m in topic_messages(rds, "orders") if m["decision_id"] == decision_id])
    assert order and order[0]["trace_id"] == trace_id

    spans = complete_trace(trace_id, {"gateway", "trading", "forecaster", "telemetry"},
                           {"post /windows", "activity: record_fleet", "/v1.0/publish/pubsub/orders"})
    t = Tree(spans)
    assert {s["traceId"] for s in spans} == {trace_id}
    # The parent chain: gateway -> (pub/sub) -> trading -> its rule actor;
    # trading -> (service invocation) -> forecaster -> workflow activities
    # -> telemetry; trading -> `orders`.
    root = t.find("gateway", "post /prices", "SERVER")
    assert len(root) == 1 and not root[0].get("parentId"), [s.get("name") for s in spans
                                                             if not s.get("parentId")]
    (root,) = root
    (trading,) = t.find("trading", "post /prices", "SERVER")
    assert t.descends(trading, root)
    actor = [s for s in t.find("trading", ACTOR_ROUTE, "SERVER") if t.descends(s, trading)]
    assert len(actor) >= 2  # Observe, then Decided (a call the sidecar retried is one more)
    (fleet,) = t.find("forecaster", "post /fleet-forecasts", "SERVER")
    assert t.descends(fleet, trading)
    shards = t.find("forecaster", "activity: forecast_shard")  # 24 devices, 12 a shard (tests/stack.py)
    (record,) = t.find("forecaster", "activity: record_fleet")
    assert len(shards) == 2 and all(t.descends(s, fleet) for s in shards) and t.descends(record, fleet)
    windows = t.find("telemetry", "post /windows", "SERVER")
    # Every shard reads its windows (a device read again whole: one more), under its own span.
    assert all(any(t.descends(w, s) for s in shards) for w in windows)
    assert all(any(t.descends(w, s) for w in windows) for s in shards)
    (recorded,) = [s for s in spans if s["localEndpoint"]["serviceName"] == "trading"
                   and "INSERT INTO trade_decisions" in s.get("tags", {}).get("db.statement", "")]
    assert recorded["tags"]["db.system"] == "postgresql" and t.descends(recorded, trading)
    (orders,) = t.find("trading", "/v1.0/publish/pubsub/orders")
    assert t.descends(orders, trading)


def test_a_forecast_names_its_trace_and_the_trace_holds_the_workflow_and_the_actor(gateway, pg):
    # A horizon no other test asks for: a new forecast, made in this request's trace
    # (one made before, by a fleet forecast say, names the trace that made it).
    r = gateway.post("/forecast/intraday", params={"wait": "true"},
                     json={"device_id": "hp-0003", "horizon_hours": 11.75})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"]
    trace_id = body["result"]["trace_id"]
    # The next request is a trace of its own (the forecaster's batcher once
    # ran every forecast in the context of the request that started it).
    again = gateway.post("/forecast/intraday", params={"wait": "true"},
                         json={"device_id": "hp-0004", "horizon_hours": 11.75}).json()
    assert again["created"] and again["result"]["trace_id"] not in (None, trace_id)
    # The audit row, and GET /forecast/{id} (served from it), name the same trace.
    assert pg.execute("SELECT trace_id FROM forecast_requests WHERE request_id = %s",
                      (body["forecast_id"],)).fetchone()[0] == trace_id
    assert gateway.get(f"/forecast/{body['forecast_id']}").json()["result"]["trace_id"] == trace_id

    steps = {f"activity: {a}" for a in ("make_forecast", "deliver")}  # workflows/forecast.py
    spans = complete_trace(trace_id, {"gateway", "forecaster", "telemetry"}, steps)
    t = Tree(spans)
    (root,) = [s for s in spans if not s.get("parentId")]
    assert root["localEndpoint"]["serviceName"] == "gateway" and root["name"] == "post /forecast/intraday"
    # Each step of the workflow is a span under the forecaster's request
    # (daprd carries the trace context from the workflow client's call).
    # (A sidecar may retry the invocation under load: each attempt is a
    # request span of the trace, and the workflow runs once.)
    requests = t.find("forecaster", "post /forecasts", "SERVER")
    assert requests and all(t.descends(r, root) for r in requests), \
        [(s["localEndpoint"]["serviceName"], s.get("name"), s.get("parentId")) for s in spans]
    for step in steps:  # (more than one span: the step's retries)
        spans_of_step = t.find("forecaster", step)
        assert spans_of_step and all(any(t.descends(s, r) for r in requests) for s in spans_of_step), step
    # The actor's methods (Prepare, then Forecast) run under the step that calls them.
    actor_calls = t.find("forecaster", ACTOR_ROUTE, "SERVER")
    assert sum(any(t.descends(call, s) for s in t.find("forecaster", "activity: make_forecast"))
               for call in actor_calls) >= 2
    # The delivery's PostgreSQL statements (the audit row) are spans of it.
    assert any(t.descends(s, step) and s.get("kind") == "CLIENT" and s["name"] in ("insert", "create")
               for s in spans for step in t.find("forecaster", "activity: deliver"))
