"""Grafana dashboards as code (grafana-foundation-sdk, Grafana 11 schema).

    .venv/bin/python -m observability.dashboards     # writes observability/grafana/dashboards/*.json

The JSON is committed: Grafana provisions it from that folder
(observability/grafana/provisioning/), and a unit test fails when it is not
what this module generates. Every panel's queries are run against the live
Prometheus by tests/integration/test_dashboards.py, so a panel cannot
silently show nothing. Metric names: clients/metrics.py (the apps) and
the Dapr sidecars' own (dapr_*).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row, ThresholdsConfig
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphThresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Threshold, ThresholdsMode

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")  # provisioned with this uid
SLA_SECONDS = 30
RATE = "$__rate_interval"


def query(expr: str, legend: str = "") -> Dataquery:
    q = Dataquery().expr(expr).datasource(DATASOURCE)
    return q.legend_format(legend) if legend else q


def quantiles(metric: str, by: str = "", where: str = "", qs=(0.5, 0.95, 0.99)) -> list[Dataquery]:
    """p50/p95/p99 of a histogram (per label `by`, if given)."""
    labels = f"{{{where}}}" if where else ""
    group = f"{by}, le" if by else "le"
    return [query(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{labels}[{RATE}])))",
                  f"p{round(q * 100)}" + (f" {{{{{by}}}}}" if by else "")) for q in qs]


def timeseries(title: str, unit: str, *targets: Dataquery, description: str = "",
               sla: float | None = None, width: int = 12) -> Timeseries:
    panel = Timeseries().title(title).unit(unit).span(width).height(8).datasource(DATASOURCE)
    if description:
        panel = panel.description(description)
    for ref, t in zip("ABCDEFGH", targets, strict=False):
        panel = panel.with_target(t.ref_id(ref))
    if sla is not None:  # the SLA as a dashed red line
        panel = panel.thresholds(ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
            [Threshold(None, "green"), Threshold(sla, "red")]))
        panel = panel.thresholds_style(GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED))
    return panel


def stat(title: str, unit: str, target: Dataquery, width: int = 6) -> Stat:
    return Stat().title(title).unit(unit).span(width).height(4).datasource(DATASOURCE) \
        .with_target(target.ref_id("A"))


def forecasts() -> Dashboard:
    gateway = 'service="gateway", route=~"/forecast/.*", method="POST"'
    return (
        Dashboard("Intraday / Forecasts").uid("intraday-forecasts").tags(["intraday"])
        .refresh("10s").time("now-1h", "now")
        .description("Latency against the 30 s SLA, throughput, errors and batching")
        .with_row(Row("Latency"))
        .with_panel(timeseries("Forecast latency at the gateway", "s",
                               *quantiles("intraday_http_request_seconds", "route", gateway),
                               sla=SLA_SECONDS, description="POST /forecast/*: percentiles per route"))
        .with_panel(timeseries("Forecast latency at the forecaster", "s",
                               *quantiles("intraday_forecast_seconds", "kind"), sla=SLA_SECONDS,
                               description="single: one device's workflow; batch: a dynamic batch; "
                                           "fleet: a portfolio forecast"))
        .with_panel(timeseries("p99 per workflow step", "s",
                               query("intraday:forecast_step_seconds:p99_5m", "{{workflow}} {{step}}"),
                               description="Where a slow forecast's time went", width=24))
        .with_row(Row("Throughput and errors"))
        .with_panel(timeseries("Requests", "reqps", query(
            f'sum by (route, code) (rate(intraday_http_request_seconds_count{{{gateway}}}[{RATE}]))',
            "{{route}} {{code}}")))
        .with_panel(timeseries("Error ratio (5xx)", "percentunit", query(
            f'sum(rate(intraday_http_request_seconds_count{{{gateway}, code=~"5.."}}[{RATE}])) or vector(0)',
            "5xx / s"), query("intraday:forecast_error_ratio:5m or vector(0)", "5xx share (5 m)")))
        .with_panel(timeseries("Workflow outcomes", "ops", query(
            f"sum by (workflow, status) (rate(intraday_workflow_outcomes_total[{RATE}]))",
            "{{workflow}} {{status}}")))
        .with_row(Row("Batching"))
        .with_panel(timeseries("Devices per batch", "short",
                               *quantiles("intraday_forecast_batch_devices", "kind", qs=(0.5, 0.99)),
                               description="batch: dynamic batches of single requests; shard: a fleet "
                                           "forecast's shards; fleet: whole fleet forecasts"))
        .with_panel(timeseries("In flight and queued", "short",
                               query("sum by (kind) (intraday_forecasts_in_flight)", "in flight {{kind}}"),
                               query("sum(intraday_batch_queue_depth)", "queued for a batch")))
    )


def fleet() -> Dashboard:
    return (
        Dashboard("Intraday / Fleet").uid("intraday-fleet").tags(["intraday"])
        .refresh("30s").time("now-6h", "now")
        .description("Device actors, telemetry freshness, the served model and its caches")
        .with_row(Row("Model"))
        .with_panel(stat("Served model", "none", query("max by (version) (intraday_model_served)",
                                                        "{{version}}")))
        .with_panel(stat("Model age", "s", query("max(intraday_model_age_seconds)")))
        .with_panel(stat("Devices", "short", query("max(intraday_fleet_devices)")))
        .with_panel(stat("Stale over 1 h", "percentunit", query("intraday:telemetry_stale_ratio:1h")))
        .with_panel(timeseries("Model cache hit rate per tier", "percentunit", query(
            f'sum by (tier) (rate(intraday_model_cache_lookups_total{{result="hit"}}[{RATE}]))'
            f" / sum by (tier) (rate(intraday_model_cache_lookups_total[{RATE}]))", "{{tier}}"),
            description="memory -> state store (Redis) -> object store"))
        .with_panel(timeseries("Model cache lookups", "ops", query(
            f"sum by (tier, result) (rate(intraday_model_cache_lookups_total[{RATE}]))",
            "{{tier}} {{result}}")))
        .with_row(Row("Live accuracy"))
        .with_panel(stat("Portfolio P10-P90, 7 days", "percentunit",
                         query('max(intraday_live_score{level="portfolio", measure="coverage"})')))
        .with_panel(stat("Portfolio bias, 7 days", "percentunit",
                         query('max(intraday_live_score{level="portfolio", measure="bias"})')))
        .with_panel(stat("Device P10-P90, 7 days", "percentunit",
                         query('max(intraday_live_score{level="device", measure="coverage"})')))
        .with_panel(stat("Forecasts scored, 7 days", "short", query("max(intraday_live_scored_forecasts)")))
        .with_panel(timeseries("Live WAPE and bias", "percentunit", *[
            query(f'max by (level) (intraday_live_score{{measure="{m}"}})', f"{m} {{{{level}}}}")
            for m in ("wape", "bias")],
            description="Published forecasts of the last 7 delivery days scored against their readings "
                        "(WAPE of the mean for the portfolio, of P50 for devices)"))
        .with_row(Row("Actors"))
        .with_panel(timeseries("Actor activations and deactivations", "ops", *[
            query(f"sum by (actor_type) (rate(intraday_actor_{event}s_total[{RATE}]))",
                  f"{event}s {{{{actor_type}}}}") for event in ("activation", "deactivation")]))
        .with_panel(timeseries("Actors active", "short", query(
            "sum by (actor_type) (intraday_actors_active)", "{{actor_type}}")))
        .with_row(Row("Telemetry"))
        .with_panel(timeseries("Staleness across the fleet", "s", query(
            "max by (quantile) (intraday_telemetry_staleness_seconds)", "q{{quantile}}"),
            description="Age of each device's newest reading: median, 90th percentile, worst"))
        .with_panel(timeseries("Ingested rows", "rowsps", query(
            f"sum by (outcome) (rate(intraday_ingest_rows_total[{RATE}]))", "{{outcome}}")))
    )


def trading() -> Dashboard:
    return (
        Dashboard("Intraday / Trading").uid("intraday-trading").tags(["intraday"])
        .refresh("10s").time("now-6h", "now")
        .description("Price ticks, the moves that triggered forecasts, decisions and orders")
        .with_panel(timeseries("Price ticks by verdict", "ops", query(
            f"sum by (verdict) (rate(intraday_price_ticks_total[{RATE}]))", "{{verdict}}")))
        .with_panel(timeseries("Decisions", "ops", query(
            f"sum by (result) (rate(intraday_trade_decisions_total[{RATE}]))", "{{result}}"),
            description="new, or repeat: a redelivered price message found its decision recorded"))
        .with_panel(timeseries("Order volume", "MWh", query(
            f"sum by (side) (increase(intraday_order_mwh_total[{RATE}]))", "{{side}}")))
        .with_panel(timeseries("Price move to decision", "s",
                               *quantiles("intraday_decision_seconds", qs=(0.5, 0.99)), sla=SLA_SECONDS))
    )


def dapr() -> Dashboard:
    return (
        Dashboard("Intraday / Dapr").uid("intraday-dapr").tags(["intraday", "dapr"])
        .refresh("10s").time("now-1h", "now")
        .description("The sidecars: HTTP API, service invocation, workflows, actors, components")
        .with_row(Row("Sidecars"))
        .with_panel(timeseries("Sidecar HTTP API latency p99", "ms", query(
            "histogram_quantile(0.99, sum by (app_id, le) "
            f"(rate(dapr_http_server_latency_bucket[{RATE}])))", "{{app_id}}")))
        .with_panel(timeseries("Service invocations sent", "ops", query(
            f"sum by (app_id, dst_app_id) (rate(dapr_runtime_service_invocation_req_sent_total[{RATE}]))",
            "{{app_id}} -> {{dst_app_id}}")))
        .with_row(Row("Workflows"))
        .with_panel(timeseries("Workflow executions", "ops", query(
            f"sum by (workflow_name, status) (rate(dapr_runtime_workflow_execution_count[{RATE}]))",
            "{{workflow_name}} {{status}}")))
        .with_panel(timeseries("Activity executions", "ops", query(
            f"sum by (activity_name, status) (rate(dapr_runtime_workflow_activity_execution_count[{RATE}]))",
            "{{activity_name}} {{status}}")))
        .with_panel(timeseries("Workflow scheduling latency p99", "ms", query(
            "histogram_quantile(0.99, sum by (workflow_name, le) "
            f"(rate(dapr_runtime_workflow_scheduling_latency_bucket[{RATE}])))", "{{workflow_name}}")))
        .with_panel(timeseries("Activity execution latency", "ms", *quantiles(
            "dapr_runtime_workflow_activity_execution_latency", "activity_name", qs=(0.5, 0.99))))
        .with_row(Row("Actors and components"))
        .with_panel(timeseries("Pending actor calls", "short", query(
            "sum by (actor_type) (dapr_runtime_actor_pending_actor_calls)", "{{actor_type}}")))
        .with_panel(timeseries("State store latency p99", "ms", query(
            "histogram_quantile(0.99, sum by (app_id, operation, le) "
            f"(rate(dapr_component_state_latencies_bucket[{RATE}])))", "{{app_id}} {{operation}}")))
        .with_panel(timeseries("Pub/sub messages published", "ops", query(
            f"sum by (app_id, topic) (rate(dapr_component_pubsub_egress_count[{RATE}]))",
            "{{app_id}} {{topic}}")))
        .with_panel(timeseries("Pub/sub messages delivered", "ops", query(
            f"sum by (app_id, topic, process_status) (rate(dapr_component_pubsub_ingress_count[{RATE}]))",
            "{{app_id}} {{topic}} {{process_status}}")))
    )


DASHBOARDS = {"forecasts": forecasts, "fleet": fleet, "trading": trading, "dapr": dapr}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard["panels"] if p.get("type") != "row"
            for t in p.get("targets", [])]


def main(out: Path = OUT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        (out / f"{name}.json").write_text(render(name))
        print(f"wrote {out / f'{name}.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
