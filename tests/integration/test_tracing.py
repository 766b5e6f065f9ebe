"""Traces: `make up` runs a Zipkin server, and every sidecar reports its
spans there (components/config/local.yaml), one trace per hop chain."""

from __future__ import annotations

import httpx

from tests.integration.conftest import eventually

ZIPKIN = "http://127.0.0.1:9411"


def test_a_forecast_request_is_one_trace_across_the_sidecars(gateway):
    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "hp-0003"})
    assert r.status_code == 200, r.text

    services = eventually(lambda: {"gateway", "forecaster"} <= set(
        httpx.get(f"{ZIPKIN}/api/v2/services", timeout=5).json()), timeout=30)
    assert services, httpx.get(f"{ZIPKIN}/api/v2/services", timeout=5).json()

    def invocation_traces() -> list[list[dict]]:
        """Traces that hold the gateway's call to the forecaster."""
        traces = httpx.get(f"{ZIPKIN}/api/v2/traces", timeout=5,
                           params={"serviceName": "gateway", "limit": 100}).json()
        return [t for t in traces if any("forecaster" in (s.get("name") or "") for s in t)
                and {"gateway", "forecaster"} <= {s["localEndpoint"]["serviceName"] for s in t}]

    traces = eventually(invocation_traces, timeout=45)  # sidecars export every few seconds
    assert traces, "no trace of the gateway invoking the forecaster"
    # The call crosses two sidecars in one trace: the gateway's (client)
    # and the forecaster's (server), the latter a child of the former.
    trace = max(traces, key=len)
    by_service = {s["localEndpoint"]["serviceName"] for s in trace}
    assert {"gateway", "forecaster"} <= by_service, by_service
    ids = {s["id"] for s in trace}
    forecaster_spans = [s for s in trace if s["localEndpoint"]["serviceName"] == "forecaster"]
    assert any(s.get("parentId") in ids for s in forecaster_spans)
    assert len({s["traceId"] for s in trace}) == 1
