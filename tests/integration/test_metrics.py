"""Metrics: `make up` runs Prometheus, scraping every sidecar (each on its
own port), the Dapr control plane, the gateway and Zipkin."""

from __future__ import annotations

import httpx

from tests.stack import eventually

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


def test_forecasts_are_measured_per_step_and_no_device_becomes_a_series(gateway):
    devices = ["hp-0010", "hp-0011", "hp-0012"]
    for d in devices:
        assert gateway.post("/forecast/intraday", params={"wait": "true"}, json={"device_id": d}) \
            .status_code == 200
    # Every step of the single-device workflow has a latency histogram.
    steps = eventually(lambda: {s["metric"]["step"] for s in query(
        'intraday_forecast_step_seconds_count{workflow="forecast"} > 0')} >= {
        "make_forecast", "deliver"} and True, timeout=30)
    assert steps, query('intraday_forecast_step_seconds_count{workflow="forecast"}')
    assert eventually(lambda: query('intraday_workflow_outcomes_total{workflow="forecast_workflow_v3",'
                                    'status="COMPLETED"} >= 3'), timeout=30)
    # The actors that served them were activated, and the model came from a cache tier.
    active = eventually(lambda: query('intraday_actors_active{actor_type="DeviceActor"} >= 3'), timeout=30)
    assert active, query("intraday_actors_active")
    assert query("sum(intraday_model_cache_lookups_total)")  # counted (0 under the baseline)
    # No model promoted (an earlier test's is unpromoted again): the next scrape says so.
    assert eventually(lambda: query('intraday_model_served{version="baseline"} == 1'), timeout=30)

    # Sidecars report per-device paths under their pattern (pathMatching in
    # components/config/): no series names a device.
    def per_device() -> list[dict]:
        return query('{__name__=~"dapr_http_(server|client)_.*", path=~".*hp-[0-9]+.*"}')

    patterned = eventually(lambda: query(
        'dapr_http_server_request_count{app_id="forecaster",'
        'path="/v1.0/actors/DeviceActor/{id}/method/{method}"}'), timeout=30)
    assert patterned and not per_device(), [s["metric"] for s in per_device()][:5]

    # The telemetry service summarises staleness over the fleet.
    assert eventually(lambda: query('intraday_fleet_devices > 0'), timeout=30)
    quantiles = {s["metric"]["quantile"] for s in query("intraday_telemetry_staleness_seconds")}
    assert quantiles == {"0.5", "0.9", "1"}
