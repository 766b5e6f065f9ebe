"""The gateway fuzzed from its own OpenAPI schema (Schemathesis): every
operation, with valid and invalid inputs, as a caller holding every scope.
No answer may be a server error or break the schema it declares, and a
rejected request writes nothing: afterwards every forecast the fuzzing key
recorded is one it was told about, no actor exists for a device that is not
in the fleet, and `prices` holds only the prices that were accepted.

`INTRADAY_FUZZ_EXAMPLES` sets the cases per operation (default 25 in the
suite; bench/fuzz.py runs thousands) and `INTRADAY_FUZZ_REPORT` names a
file for the answers per operation and status."""

from __future__ import annotations

import json
import os
from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from services.gateway.app import app
from tests.stack import intraday, topic_messages

GATEWAY = "http://127.0.0.1:8000"
EXAMPLES = int(os.environ.get("INTRADAY_FUZZ_EXAMPLES", "25"))
# Every operation but a training's start: each case it accepts is minutes of
# both cores (tests/integration/test_training.py refuses its bad input).
schema = schemathesis.openapi.from_dict(app.openapi()).exclude(method="POST", path="/models/train")
ACCEPTED: dict[str, set] = {"forecasts": set(), "prices": set()}
STATE: dict = {}
ANSWERS: Counter[tuple[str, int]] = Counter()  # (operation, status) -> cases


@pytest.fixture(scope="module")
def fuzz_key(stack, rds):
    out = intraday(stack["env"], "keys", "create", "fuzz", "--scopes", "all")
    STATE["key"] = out.strip().splitlines()[-1]
    STATE["prices_before"] = len(topic_messages(rds, "prices"))
    return STATE["key"]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_breaks_the_gateway(case, fuzz_key):
    response = case.call(base_url=GATEWAY, headers={"authorization": f"Bearer {fuzz_key}"}, timeout=150)
    ANSWERS[f"{case.method} {case.path}", response.status_code] += 1
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
    if 200 <= response.status_code < 300:
        body = response.json() if response.content else {}
        if isinstance(body, dict) and "forecast_id" in body:
            ACCEPTED["forecasts"].add(body["forecast_id"])
        if case.path == "/prices":
            ACCEPTED["prices"].add(case.body["price_eur_mwh"])


def test_rejected_requests_wrote_nothing(stack, pg, rds, fuzz_key):
    """Runs after the fuzzing (same module, in order)."""
    fleet = {r[0] for r in pg.execute("SELECT DISTINCT device_id FROM forecast_requests").fetchall()}
    fleet |= {k.decode().split("||")[2] for k in rds.scan_iter("forecaster||DeviceActor||*||device")}
    known = {d["device_id"] for d in httpx.get(
        f"{GATEWAY}/devices", headers={"authorization": f"Bearer {fuzz_key}"}, timeout=30).json()}
    assert fleet <= known, sorted(fleet - known)[:10]
    rows = pg.execute("SELECT request_id, fleet_forecast_id FROM forecast_requests"
                      " WHERE requested_by = 'fuzz'").fetchall()
    told = ACCEPTED["forecasts"]
    unexplained = [rid for rid, fl in rows if rid not in told and fl not in told]
    assert not unexplained, unexplained[:10]
    fleets = [r[0] for r in pg.execute(
        "SELECT fleet_forecast_id FROM fleet_forecasts WHERE requested_by = 'fuzz'")]
    assert set(fleets) <= ACCEPTED["forecasts"]
    published = topic_messages(rds, "prices")[STATE["prices_before"]:]
    assert {m["price_eur_mwh"] for m in published} <= ACCEPTED["prices"]
    if report := os.environ.get("INTRADAY_FUZZ_REPORT"):
        by_operation: dict[str, dict[str, int]] = {}
        for (operation, status), n in sorted(ANSWERS.items()):
            by_operation.setdefault(operation, {})[str(status)] = n
        with open(report, "w") as f:
            json.dump({"answers": by_operation, "forecasts_accepted": len(ACCEPTED["forecasts"]),
                       "prices_accepted": len(ACCEPTED["prices"]), "rows_by_fuzz_key": len(rows),
                       "unexplained_rows": len(unexplained)}, f, indent=2)
