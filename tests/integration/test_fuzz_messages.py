"""Malformed telemetry and prices, at the ingest endpoint and on the
`telemetry` and `prices` topics (wrong types, NaN, huge values, far-future
and ancient timestamps, unknown fields, non-objects): the endpoint answers
4xx or a report, never a server error; a message is stored, quarantined or
dropped with a reason, never redelivered forever; no price trades; the
services stay up. Runs last, beside test_fuzz.py (conftest orders them)."""

from __future__ import annotations

import json
import math
import uuid

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.stack import dapr_headers, eventually

SIDECAR = "http://127.0.0.1:3500"  # the gateway's, the one app allowed to publish both topics
INGEST = f"{SIDECAR}/v1.0/invoke/telemetry/method/ingest"

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    st.sampled_from(["hp-0001", "hp-0002", "", "hp-0001'; DROP TABLE devices;--",
                                     "2026-12-02T00:00:00Z", "9999-12-31T23:59:59Z", "1900-01-01T00:00:00Z",
                                     "NaN", "-1e308", "1e309"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=6)
reading = st.fixed_dictionaries(
    {}, optional={"device_id": values, "timestamp": values, "power": values, "heating_electricity": values,
                  "dhw_electricity": values, "watts": values})
batch = st.one_of(
    st.fixed_dictionaries({"readings": st.lists(reading, max_size=6)},
                          optional={"batch_id": st.one_of(st.text(max_size=30), st.integers(), st.none())}),
    values)
price = st.one_of(st.fixed_dictionaries({}, optional={"price_eur_mwh": values, "at": values,
                                                       "market": values}), values)


def _json(body) -> bytes:
    # Python's json writes NaN and Infinity, which strict JSON readers refuse:
    # the services must cope with both.
    return json.dumps(body, allow_nan=True).encode()


@pytest.fixture(scope="module")
def sidecar(stack):
    with httpx.Client(timeout=60, headers={**dapr_headers(stack), "content-type": "application/json"}) as c:
        yield c


@given(body=batch)
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_ingest_endpoint_answers_every_batch_with_a_reason(sidecar, body):
    r = sidecar.post(INGEST, content=_json(body))
    assert r.status_code < 500, (body, r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.json()["detail"]


@given(body=batch)
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_telemetry_messages_are_taken_or_dropped(sidecar, body):
    r = sidecar.post(f"{SIDECAR}/v1.0/publish/pubsub/telemetry", content=_json(body))
    assert r.status_code in (204, 400), r.text


@given(body=price)
@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_malformed_prices_are_dropped(sidecar, body):
    if isinstance(body, dict) and isinstance(body.get("price_eur_mwh"), int | float) \
            and not isinstance(body["price_eur_mwh"], bool) and math.isfinite(body["price_eur_mwh"]):
        body["price_eur_mwh"] = "not a price"  # a well-formed price would trade: this is about the rest
    r = sidecar.post(f"{SIDECAR}/v1.0/publish/pubsub/prices", content=_json(body))
    assert r.status_code in (204, 400), r.text


def test_no_message_is_redelivered_forever_and_nothing_traded(stack, sidecar, pg, rds):
    """After the fuzzing: both topics' consumer groups have nothing pending
    (every message acknowledged: stored, quarantined or dropped), the
    services answer, and a marker published last arrives (so nothing
    poisonous blocks the stream)."""
    def pending(topic: str) -> int:
        return sum(g["pending"] for g in rds.xinfo_groups(topic))

    assert eventually(lambda: pending("telemetry") == 0 and pending("prices") == 0, timeout=120), \
        {t: pending(t) for t in ("telemetry", "prices")}
    marker = f"fuzz-marker-{uuid.uuid4().hex[:8]}"
    assert sidecar.post(f"{SIDECAR}/v1.0/publish/pubsub/telemetry", content=_json(
        {"batch_id": marker, "readings": [{"device_id": "hp-0001", "timestamp": "2026-01-05T00:00:00Z",
                                           "power": 1.0}]})).status_code == 204
    assert eventually(lambda: sidecar.get(f"{SIDECAR}/v1.0/invoke/telemetry/method/ingest/{marker}")
                      .status_code == 200, timeout=60)
    assert pg.execute("SELECT count(*) FROM trade_decisions WHERE price_eur_mwh <> price_eur_mwh"
                      " OR abs(price_eur_mwh) > 1e12").fetchone()[0] == 0  # no NaN or absurd price traded
    for port in (8000, 8001, 8002, 8003):
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
