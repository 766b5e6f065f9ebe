"""Nobody in without a key: the gateway takes API keys (hashed at rest in
PostgreSQL, with scopes), answers 401 without one and 403 outside its
scope, writes nothing for a refused request, and records the key's holder
as `requested_by`. Keys are made, listed and revoked by `intraday keys`."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx
import pytest

from tests.stack import (
    ROOT,
    IdentityProvider,
    api_key,
    app_headers,
    dapr_headers,
    eventually,
    intraday,
    topic_messages,
)

GATEWAY = "http://127.0.0.1:8000"
PROTECTED = [("POST", "/forecast/intraday", {"device_id": "hp-0001"}), ("POST", "/forecast/fleet", {}),
             ("GET", "/forecast/fc-anything", None), ("GET", "/devices", None),
             ("POST", "/prices", {"price_eur_mwh": 5000.0}), ("POST", "/warm", {"top": 0})]


def call(method: str, path: str, body, key: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.request(method, f"{GATEWAY}{path}", json=body, headers=headers, timeout=60)


def new_key(stack, name: str, scopes: str) -> str:
    out = intraday(stack["env"], "keys", "create", name, "--scopes", scopes)
    return out.strip().splitlines()[-1]  # the key alone on the last line


def counts(pg, rds) -> tuple:
    return (pg.execute("SELECT count(*) FROM forecast_requests").fetchone()[0],
            pg.execute("SELECT count(*) FROM trade_decisions").fetchone()[0],
            len(topic_messages(rds, "prices")))


@pytest.mark.parametrize("key", [None, "not-a-key", "ik_000000000000_" + "A" * 43])
def test_without_a_valid_key_every_route_is_401_and_nothing_is_written(stack, pg, rds, key):
    before = counts(pg, rds)
    for method, path, body in PROTECTED:
        r = call(method, path, body, key)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.headers.get("www-authenticate") == "Bearer" and r.json()["detail"]
    assert counts(pg, rds) == before
    assert httpx.get(f"{GATEWAY}/health", timeout=5).status_code == 200  # probes need no key


def test_a_key_works_only_within_its_scopes_and_names_the_requester(stack, pg, rds):
    name = f"desk-{uuid.uuid4().hex[:6]}"
    reader = new_key(stack, name, "forecast:read")
    assert call("GET", "/devices", None, reader).status_code == 200
    before = counts(pg, rds)
    for method, path, body in PROTECTED:
        if path in ("/devices", "/forecast/fc-anything"):
            continue
        r = call(method, path, body, reader)
        assert r.status_code == 403 and "lacks the scope" in r.json()["detail"], (path, r.text)
    assert counts(pg, rds) == before  # no price published, no forecast made

    requester = new_key(stack, name + "-req", "forecast:request,forecast:read")
    r = call("POST", "/forecast/intraday?wait=true", {"device_id": "hp-0009", "horizon_hours": 3.25,
                                                      "requested_by": "someone-else"}, requester)
    assert r.status_code == 200, r.text
    assert r.json()["result"]["requested_by"] == name + "-req"  # the key's holder, not the body's claim
    row = pg.execute("SELECT requested_by FROM forecast_requests WHERE request_id = %s",
                     (r.json()["forecast_id"],)).fetchone()
    assert row == (name + "-req",)


def test_keys_are_stored_as_hashes_and_listed_without_their_secret(stack, pg):
    key = new_key(stack, "hashed", "forecast:read")
    key_id = key.split("_")[1]
    row = pg.execute("SELECT name, scopes, secret_hash, last_used_at FROM api_keys WHERE key_id = %s",
                     (key_id,)).fetchone()
    assert row[0] == "hashed" and row[1] == ["forecast:read"] and row[3] is None
    secret = key[len(f"ik_{key_id}_"):]
    assert len(bytes(row[2])) == 32 and secret.encode() not in bytes(row[2])
    dump = str(pg.execute("SELECT * FROM api_keys").fetchall())
    assert secret not in dump
    listed = intraday(stack["env"], "keys", "list")
    assert key_id in listed and secret not in listed and "forecast:read" in listed
    assert call("GET", "/devices", None, key).status_code == 200
    used = pg.execute("SELECT last_used_at FROM api_keys WHERE key_id = %s", (key_id,)).fetchone()[0]
    assert used is not None


def test_a_revoked_key_is_refused(stack):
    key = new_key(stack, "leaving", "forecast:read")
    assert call("GET", "/devices", None, key).status_code == 200
    out = intraday(stack["env"], "keys", "revoke", "leaving")
    assert key.split("_")[1] in out
    time.sleep(1.2)  # the test stack trusts a verified key for 1 s
    r = eventually(lambda: (r := call("GET", "/devices", None, key)).status_code == 401 and r, timeout=10)
    assert r and "revoked" in r.json()["detail"]
    assert call("GET", "/devices", None, api_key(stack)).status_code == 200  # others unaffected


def test_bad_key_commands_fail_with_a_message(stack):
    for args, message in ((["create", "x", "--scopes", "forecast:write"], "unknown scopes"),
                          (["create", "bad name!", "--scopes", "all"], "invalid key name"),
                          (["revoke", "nobody-has-this-name"], "no active key")):
        r = subprocess.run([str(ROOT / ".venv/bin/intraday"), "keys", *args], env=stack["env"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_apps_and_sidecars_answer_only_each_other(stack):
    """The Dapr API token: a sidecar serves only callers that present it
    (its app does). The app API token: an app other than the gateway serves
    only calls that carry it (its sidecar's); probes and scrapes stay open."""
    for port in (3500, 3501, 3502, 3503):
        assert httpx.get(f"http://127.0.0.1:{port}/v1.0/metadata", timeout=5).status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}/v1.0/metadata", headers=dapr_headers(stack),
                         timeout=5).status_code == 200
    for port, path in ((8001, "/batching"), (8002, "/devices"), (8003, "/rule")):
        r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
        assert r.status_code == 401 and "sidecar" in r.json()["detail"], (port, r.text)
        wrong = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"dapr-api-token": "guess"}, timeout=10)
        assert wrong.status_code == 401
        assert httpx.get(f"http://127.0.0.1:{port}{path}", headers=app_headers(stack),
                         timeout=10).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    # Through the sidecars, with the token, everything works: a forecast end to end.
    r = httpx.post(f"{GATEWAY}/forecast/intraday", params={"wait": "true"}, timeout=60,
                   headers={"authorization": f"Bearer {api_key(stack)}"},
                   json={"device_id": "hp-0011", "horizon_hours": 1.5})
    assert r.status_code == 200, r.text


def test_topics_are_scoped_to_their_publishers(stack, pg):
    """Only the gateway publishes prices (they move the trading service),
    only trading publishes orders (components/*/pubsub.yaml): any other
    app's sidecar refuses, and nothing is traded."""
    before = pg.execute("SELECT count(*) FROM trade_decisions").fetchone()[0]
    for port, topic in ((3503, "prices"), (3501, "prices"), (3502, "prices"), (3501, "orders"),
                        (3500, "orders"), (3503, "forecasts"), (3501, "forecasts")):
        r = httpx.post(f"http://127.0.0.1:{port}/v1.0/publish/pubsub/{topic}", headers=dapr_headers(stack),
                       json={"price_eur_mwh": 9999.0}, timeout=10)
        # Telemetry's sidecar does not serve publishing at all (its API allowlist:
        # test_sidecar_apis.py); the others refuse the topic (the forecaster's
        # forecasts go on their own component, pubsub-forecasts).
        assert r.status_code == (404 if port == 3502 else 403), (port, topic, r.status_code, r.text)
    # pubsub-forecasts carries the forecasts alone, from the forecaster alone.
    for port, topic, refused in ((3501, "prices", 403), (3500, "forecasts", 404), (3503, "forecasts", 404)):
        r = httpx.post(f"http://127.0.0.1:{port}/v1.0/publish/pubsub-forecasts/{topic}",
                       headers=dapr_headers(stack), json={"price_eur_mwh": 9999.0}, timeout=10)
        assert r.status_code == refused, (port, topic, r.status_code, r.text)
    eventually(lambda: False, timeout=2)
    assert pg.execute("SELECT count(*) FROM trade_decisions").fetchone()[0] == before


def test_a_key_over_its_rate_gets_429_with_retry_after_and_changes_nothing(stack, pg, rds):
    # (No prices here: a price moves the trading service, and later tests
    # count on the forecasts a move makes.)
    other = new_key(stack, "busy-desk", "forecast:read")
    out = intraday(stack["env"], "keys", "create", "slow-desk", "--scopes", "forecast:read,forecast:request",
                   "--rate", "3")
    limited = out.strip().splitlines()[-1]
    assert "3/min" in intraday(stack["env"], "keys", "list")
    answers = [call("GET", "/devices", None, limited) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert int(answers[3].headers["retry-after"]) == 20  # one request every 20 s at 3 a minute
    assert "rate" in answers[3].json()["detail"]
    before = counts(pg, rds)
    r = call("POST", "/forecast/intraday?wait=true", {"device_id": "hp-0013", "horizon_hours": 2.75}, limited)
    assert r.status_code == 429 and counts(pg, rds) == before  # refused before anything ran
    assert call("GET", "/devices", None, other).status_code == 200  # other keys are not held back


def test_an_oversized_body_is_refused_with_413_before_anything_runs(stack, pg):
    mine = "SELECT count(*) FROM fleet_forecasts WHERE requested_by = 'local'"  # not trading's
    before = pg.execute(mine).fetchone()[0]
    big = {"devices": [f"hp-{k:07d}" for k in range(250_000)]}  # about 3.5 MB
    r = call("POST", "/forecast/fleet", big, api_key(stack))
    assert r.status_code == 413 and "bytes" in r.json()["detail"]
    streamed = httpx.post(f"{GATEWAY}/forecast/fleet", timeout=30,
                          headers={"authorization": f"Bearer {api_key(stack)}",
                                   "content-type": "application/json"},
                          content=iter([b'{"devices": [' + b'"hp-0001",' * 100_000] * 3 + [b'"hp-0001"]}']))
    assert streamed.status_code == 413
    assert pg.execute(mine).fetchone()[0] == before


def test_a_token_from_the_identity_provider_works_within_its_scopes(stack, pg, rds):
    """The gateway takes the identity provider's JWTs beside its own keys:
    the token's `scope` claim is what it may do, its subject (or email)
    is who `requested_by` names; an expired token, or one signed by a key
    the provider does not publish, is refused with nothing written."""
    idp = stack["idp"]
    reader = idp.token("desk-9", "forecast:read openid")
    assert call("GET", "/devices", None, reader).status_code == 200
    before = counts(pg, rds)
    refused = call("POST", "/forecast/intraday", {"device_id": "hp-0001"}, reader)
    assert refused.status_code == 403 and "forecast:request" in refused.json()["detail"]
    assert call("GET", "/devices", None, idp.token("desk-9", "forecast:read", ttl=-120)).status_code == 401
    impostor = IdentityProvider()  # same issuer, audience and key id; another key
    try:
        assert call("GET", "/devices", None, impostor.token("desk-9", "forecast:read")).status_code == 401
    finally:
        impostor.close()
    assert counts(pg, rds) == before

    trader = idp.token("u-4711", "forecast:request forecast:read", email="trader@desk9.example")
    r = httpx.post(f"{GATEWAY}/forecast/intraday", params={"wait": "true"}, timeout=60,
                   json={"device_id": "hp-0006", "horizon_hours": 2},
                   headers={"authorization": f"Bearer {trader}"})
    assert r.status_code == 200, r.text
    assert pg.execute("SELECT requested_by FROM forecast_requests WHERE request_id = %s",
                      (r.json()["forecast_id"],)).fetchone()[0] == "trader@desk9.example"
