"""Each sidecar serves only the Dapr APIs its app calls (the allowlist in
each app's configuration, deploy/app_configs.py): any other is not served
(HTTP 404, as a route that does not exist; gRPC UNIMPLEMENTED), so a
process that got hold of the Dapr API token still cannot, say, read the
actors' state through the gateway's sidecar: its actor API is not served,
and its state API (the API keys' rate limits) reaches only its own keys."""

from __future__ import annotations

import grpc
import httpx
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2, state_pb2

from tests.stack import dapr_headers

HTTP = {"gateway": 3500, "forecaster": 3501, "telemetry": 3502, "trading": 3503}
GRPC = {"gateway": 50011, "forecaster": 50012, "telemetry": 50013, "trading": 50014}


@pytest.mark.parametrize(("app", "path"), [
    ("trading", "/v1.0/state/statestore/forecaster||DeviceActor||hp-0001||device"),
    ("gateway", "/v1.0/actors/DeviceActor/hp-0001/state/device"),
    ("telemetry", "/v1.0/state/statestore/any"),
    ("telemetry", "/v1.0/invoke/forecaster/method/models"),
    ("telemetry", "/v1.0/secrets/secretstore/pg-dsn"),
    ("trading", "/v1.0-alpha1/jobs/intraday-training"),
])
def test_an_api_the_app_does_not_call_is_not_served(stack, app, path):
    r = httpx.get(f"http://127.0.0.1:{HTTP[app]}{path}", headers=dapr_headers(stack), timeout=10)
    assert r.status_code == 404, (app, path, r.status_code, r.text[:200])


def test_the_gateway_s_state_api_reaches_only_its_own_keys(stack):
    """Keys are prefixed with the app id; another app's key (actor state:
    `forecaster||DeviceActor||...`) cannot be named through it."""
    r = httpx.get("http://127.0.0.1:3500/v1.0/state/statestore/forecaster||DeviceActor||hp-0001||device",
                  headers=dapr_headers(stack), timeout=10)
    assert r.status_code == 400 and "can't contain '||'" in r.text, r.text[:300]
    r = httpx.get("http://127.0.0.1:3500/v1.0/state/statestore/no-such-key", headers=dapr_headers(stack),
                  timeout=10)
    assert r.status_code == 204  # served: its own keys, none under that name


def test_the_apis_an_app_calls_are_served(stack):
    headers = dapr_headers(stack)
    for port in HTTP.values():  # metadata: the operators' look at every sidecar
        r = httpx.get(f"http://127.0.0.1:{port}/v1.0/metadata", headers=headers, timeout=10)
        assert r.status_code == 200
    r = httpx.get("http://127.0.0.1:3500/v1.0/invoke/telemetry/method/devices", headers=headers, timeout=30)
    assert r.status_code == 200  # the gateway invokes telemetry


@pytest.mark.parametrize("app", sorted(GRPC))
def test_daprs_grpc_api_is_closed_but_for_metadata(stack, app):
    token = dapr_headers(stack)["dapr-api-token"]
    with grpc.insecure_channel(f"127.0.0.1:{GRPC[app]}") as channel:
        stub = dapr_pb2_grpc.DaprStub(channel)
        meta = (("dapr-api-token", token),)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetState(state_pb2.GetStateRequest(store_name="statestore", key="any"), metadata=meta,
                          timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert stub.GetMetadata(metadata_pb2.GetMetadataRequest(), metadata=meta, timeout=10).id == app
