"""Metrics: `make up` runs Prometheus, scraping every sidecar (each on its
own port), the Dapr control plane, the gateway and Zipkin."""

from __future__ import annotations

import httpx

from tests.integration.conftest import eventually

PROMETHEUS = "http://127.0.0.1:9090"


def query(expr: str) -> list[dict]:
    r = httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expr}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["data"]["result"]


def test_prometheus_scrapes_every_sidecar_and_sees_a_forecast(gateway):
    def targets() -> dict[str, str]:
        active = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return {t["scrapeUrl"]: t["health"] for t in active}

    healthy = eventually(lambda: (t := targets()) and all(h == "up" for h in t.values()) and t, timeout=30)
    assert healthy, targets()
    ports = (9091, 9092, 9093, 9094, 8000, 8001, 8002, 8003)  # sidecars, apps
    assert {f"http://127.0.0.1:{p}/metrics" for p in ports} <= set(healthy)

    r = gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": "hp-0004"})
    assert r.status_code == 200, r.text
    # The gateway's sidecar counted its service invocation of the forecaster,
    # answered 200 (label `path`: the sidecar's own port, its own series).
    series = eventually(lambda: query(
        'dapr_http_server_request_count{app_id="gateway",'
        'path="/v1.0/invoke/forecaster/method/forecasts",status="200"}'), timeout=30)
    assert series and series[0]["metric"]["instance"] == "127.0.0.1:9094"
    assert float(series[0]["value"][1]) >= 1

    # Every app observes its requests in a latency histogram, by route
    # template; Prometheus computes percentiles from it.
    # (Over the buckets as counted so far: a rate needs two scrapes apart.)
    p99 = eventually(lambda: [r for r in query(
        'histogram_quantile(0.99, sum by (le) (intraday_http_request_seconds_bucket'
        '{service="gateway",route="/forecast/intraday",code="200"}))') if r["value"][1] != "NaN"],
        timeout=30)
    assert p99 and 0 < float(p99[0]["value"][1]) <= 60
    forecaster = query('sum by (route) (intraday_http_request_seconds_count{service="forecaster"})')
    assert "/forecasts" in {s["metric"]["route"] for s in forecaster}


def test_prometheus_evaluates_the_sla_rules(stack):
    def evaluated() -> dict[str, dict]:
        groups = httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = {r["name"]: r for g in groups for r in g["rules"]}
        return rules if rules and all(r["health"] != "unknown" for r in rules.values()) else {}

    rules = eventually(evaluated, timeout=45)  # evaluated every 15 s
    assert {"ForecastLatencySLA", "ForecastErrors", "TargetDown",
            "intraday:forecast_latency_seconds:p99_5m"} <= set(rules)
    assert all(r["health"] == "ok" for r in rules.values()), {k: r.get("lastError") for k, r in rules.items()}
    # Prometheus starts before the apps, so TargetDown may be pending at
    # first; with every target up it goes back to inactive.
    assert eventually(lambda: evaluated().get("TargetDown", {}).get("state") == "inactive", timeout=45)
