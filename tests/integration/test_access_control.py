"""Sidecars talk to each other over mTLS, with certificates from Dapr's
Sentry (`make up` runs it), and the called app's sidecar allows service
invocation per calling app (accessControl in components/config/local.yaml):
only the gateway and the trading service may invoke the forecaster, only
the gateway may call telemetry's ingest."""

from __future__ import annotations

import httpx
import pytest

from tests.stack import dapr_headers

SIDECARS = {"gateway": 3500, "forecaster": 3501, "telemetry": 3502, "trading": 3503}


def _invoke(stack, caller: str, method: str, app: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{SIDECARS[caller]}/v1.0/invoke/{app}/method/{path}",
                         headers=dapr_headers(stack), timeout=30, **kwargs)


def test_every_sidecar_and_the_control_plane_hold_a_certificate_from_sentry(stack):
    metrics = httpx.get("http://127.0.0.1:59093/", timeout=5).text
    signed = next(float(line.split()[1]) for line in metrics.splitlines()
                  if line.startswith("dapr_sentry_cert_sign_success_total"))
    assert signed >= len(SIDECARS) + 2  # four sidecars, placement, scheduler


@pytest.mark.parametrize(("caller", "app", "method", "path"), [
    ("trading", "telemetry", "POST", "ingest"),  # only the gateway ingests
    ("forecaster", "telemetry", "POST", "ingest"),
    # (telemetry's sidecar does not serve service invocation at all: test_sidecar_apis.py)
    ("trading", "forecaster", "POST", "forecasts"),  # trading asks for fleet forecasts only
    ("trading", "forecaster", "POST", "warm"),  # warming is the gateway's (models:admin)
    ("gateway", "trading", "GET", "decisions"),  # nothing invokes trading
    ("trading", "telemetry", "GET", "devices"),
    ("forecaster", "telemetry", "GET", "ingest/acl-forecaster"),  # the forecaster reads, never ingests
])
def test_an_app_outside_the_policy_is_refused_and_nothing_is_done(stack, pg, caller, app, method, path):
    batches = pg.execute("SELECT count(*) FROM forecast_requests").fetchone()[0]
    r = _invoke(stack, caller, method, app, path, content=b"device_id,timestamp,power\n",
                params={"batch_id": f"acl-{caller}"})
    assert r.status_code == 403, r.text
    assert "access control policy has denied access" in r.json()["message"], r.text
    assert f"spiffe://public/ns/default/{caller}" in r.json()["message"]
    assert pg.execute("SELECT count(*) FROM forecast_requests").fetchone()[0] == batches


@pytest.mark.parametrize(("caller", "app", "path"), [
    ("gateway", "telemetry", "devices"),
    ("forecaster", "telemetry", "devices"),
    ("gateway", "forecaster", "forecasts/fc-nothing-here"),
    ("trading", "forecaster", "forecasts/fc-nothing-here"),
    ("forecaster", "telemetry", "devices/hp-0001/window"),
    ("gateway", "telemetry", "ingest/acl-none"),
])
def test_the_apps_in_the_policy_are_let_through(stack, caller, app, path):
    r = _invoke(stack, caller, "GET", app, path)
    # The app answered (404: no such forecast; 422: a window needs its span).
    assert r.status_code in (200, 404, 422) and "access control" not in r.text, r.text
