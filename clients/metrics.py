"""Every Prometheus metric the apps expose (on `/metrics`), in one place.

Labels are bounded: services, routes (templates, not paths), workflow
steps, cache tiers, outcomes; never a device or a forecast id. The
dashboards (observability/dashboards.py) and the alert rules
(observability/rules.yml) read these names.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

# Seconds, from a cache hit to the 60 s deadline and past it.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

# -- every service -----------------------------------------------------------
REQUEST_SECONDS = Histogram(
    "intraday_http_request_seconds", "HTTP requests an app served, by route and status code",
    ["service", "method", "route", "code"], buckets=LATENCY_BUCKETS)

# -- forecaster ----------------------------------------------------------------
FORECAST_SECONDS = Histogram(
    "intraday_forecast_seconds",
    "A forecast from its request at the forecaster to its result (single: one device's workflow; "
    "batch: a dynamic batch of single requests; fleet: a portfolio forecast)",
    ["kind"], buckets=LATENCY_BUCKETS)
STEP_SECONDS = Histogram(
    "intraday_forecast_step_seconds", "Time in each step of the forecast workflows",
    ["workflow", "step"], buckets=LATENCY_BUCKETS)
BATCH_DEVICES = Histogram(
    "intraday_forecast_batch_devices", "Devices per batch: dynamic batches of single requests, "
    "shards and whole fleet forecasts", ["kind"], buckets=SIZE_BUCKETS)
WORKFLOW_OUTCOMES = Counter(
    "intraday_workflow_outcomes", "Workflow instances the forecaster waited for, by final status",
    ["workflow", "status"])
IN_FLIGHT = Gauge("intraday_forecasts_in_flight", "Forecasts being made now", ["kind"])
QUEUE_DEPTH = Gauge("intraday_batch_queue_depth",
                    "Single requests waiting for a batch (grows when batches cannot keep up)")
MODEL_CACHE = Counter(
    "intraday_model_cache_lookups", "Model lookups per cache tier (memory -> state store -> object store)",
    ["tier", "result"])
MODEL_INFO = Gauge("intraday_model_served", "1 for the model version served now "
                   "(version \"baseline\": no model is promoted)", ["version"])
MODEL_AGE = Gauge("intraday_model_age_seconds", "Age of the served model (since it was trained)")
# Live accuracy (intraday/forecasting/live.py): the last 7 delivery days'
# scores of the published forecasts, read from the audit store (every
# replica exports the same numbers; NaN before anything is scored).
LIVE_SCORE = Gauge("intraday_live_score",
                   "Published forecasts scored against their readings over the last 7 days: wape, bias, "
                   "pinball (kW) and P10-P90 coverage, per level (portfolio, device)", ["level", "measure"])
LIVE_FORECASTS = Gauge("intraday_live_scored_forecasts",
                       "Forecasts scored against readings over the last 7 days")
FORECASTS_SCORED = Counter("intraday_forecasts_scored",
                           "Published forecasts scored by this process, by kind (fleet, device)", ["kind"])
ACTOR_ACTIVATIONS = Counter("intraday_actor_activations", "Actor activations", ["actor_type"])
ACTOR_DEACTIVATIONS = Counter("intraday_actor_deactivations", "Actor deactivations", ["actor_type"])
ACTORS_ACTIVE = Gauge("intraday_actors_active", "Actors active in this process", ["actor_type"])

# -- telemetry -----------------------------------------------------------------
INGEST_ROWS = Counter("intraday_ingest_rows", "Telemetry rows ingested, by outcome", ["outcome"])
STALENESS = Gauge(
    "intraday_telemetry_staleness_seconds",
    "Age of each device's newest reading, summarised over the fleet", ["quantile"])
STALE_DEVICES = Gauge("intraday_telemetry_stale_devices",
                      "Devices whose newest reading is older than the threshold", ["threshold"])
FLEET_DEVICES = Gauge("intraday_fleet_devices", "Devices in the fleet")
WEATHER_ROWS = Counter("intraday_weather_rows", "Weather rows stored, by kind (observed, forecast)", ["kind"])
WEATHER_STALE_LOCATIONS = Gauge(
    "intraday_weather_stale_locations",
    "Locations of the fleet's devices without a temperature forecast issued within the threshold "
    "(INTRADAY_WEATHER_FORECAST_MAX_AGE_HOURS)")
WEATHER_PULLS = Counter("intraday_weather_pulls", "Pulls of the weather provider's forecasts, by outcome",
                        ["outcome"])
REGISTRY_CHANGES = Counter("intraday_registry_devices_written",
                           "Devices the registry's changes wrote, by outcome", ["outcome"])

WORKFLOWS_MENDED = Counter("intraday_workflows_mended", "Workflow instances the watchdog found stuck past "
                           "their deadline or lost, by what it did (redriven, failed)",
                           ["workflow", "action"])
SIDECAR_RESTARTS = Counter("intraday_sidecar_restarts", "Restarts of its sidecar the app asked for, by "
                           "reason (workflow-engine-wedged: services/forecaster/engine_guard.py)", ["reason"])
WORKFLOW_QUEUE_SECONDS = Histogram(
    "intraday_workflow_queue_seconds", "From a workflow instance's start to its first step running (the "
    "scheduler's backlog), by workflow", ["workflow"], buckets=LATENCY_BUCKETS)

# -- messages ------------------------------------------------------------------
DEAD_LETTERS = Counter("intraday_dead_letters", "Messages no subscriber could take, kept by the gateway "
                       "from the dead-letter topic, by their topic", ["topic"])

# -- trading -------------------------------------------------------------------
PRICE_TICKS = Counter("intraday_price_ticks", "Price messages received, by what the rule made of them",
                      ["verdict"])
TRADE_DECISIONS = Counter("intraday_trade_decisions", "Trade decisions taken (new) or found recorded "
                          "(repeat: a redelivered message)", ["result"])
ORDER_MWH = Counter("intraday_order_mwh", "Energy ordered by the trade decisions", ["side"])
DECISION_SECONDS = Histogram("intraday_decision_seconds",
                             "From a price move to its decision published on `orders`",
                             buckets=LATENCY_BUCKETS)


LIVE_MEASURES = ("wape", "bias", "pinball", "coverage")


def set_live(summary: dict) -> None:
    """The live gauges from an `intraday.audit.scores.summary`."""
    LIVE_FORECASTS.set(summary["forecasts"])
    for level, measures in summary["week"].items():
        for measure in LIVE_MEASURES:
            value = measures.get(measure)
            LIVE_SCORE.labels(level, measure).set(float("nan") if value is None else value)


_served: dict[str, datetime | None] = {}


def set_model(version: str) -> None:
    """Record which model is served (one series at 1) and when it was
    trained, read from its version (`YYYYmmddTHHMMSSZ-<digest>`, see
    modelstore.ModelStore.save; the baseline has no age)."""
    if version in _served:
        return
    try:
        trained = datetime.strptime(version[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        trained = None
    _served.clear()
    _served[version] = trained
    MODEL_INFO.clear()
    MODEL_INFO.labels(version).set(1)


def _model_age() -> float:
    trained = next(iter(_served.values()), None)
    return (datetime.now(UTC) - trained).total_seconds() if trained else float("nan")


MODEL_AGE.set_function(_model_age)


def _initialise() -> None:
    """Every known label set at 0 from the start, so a rate is 0 rather than
    absent before the first event (and a dashboard shows a line, not a gap)."""
    for tier, result in (("memory", "hit"), ("memory", "miss"), ("state", "hit"), ("state", "miss"),
                         ("object_store", "hit")):
        MODEL_CACHE.labels(tier, result)
    for actor_type in ("DeviceActor", "TradingRuleActor"):
        ACTOR_ACTIVATIONS.labels(actor_type)
        ACTOR_DEACTIVATIONS.labels(actor_type)
        ACTORS_ACTIVE.labels(actor_type)
    for workflow in ("forecast_workflow_v3", "batch_forecast_workflow", "fleet_forecast_workflow"):
        for status in ("COMPLETED", "FAILED"):
            WORKFLOW_OUTCOMES.labels(workflow, status)
    for kind in ("single", "batch", "fleet"):
        IN_FLIGHT.labels(kind)
    for kind in ("fleet", "device"):
        FORECASTS_SCORED.labels(kind)
    LIVE_FORECASTS.set(float("nan"))
    for level in ("portfolio", "device"):
        for measure in LIVE_MEASURES:
            LIVE_SCORE.labels(level, measure).set(float("nan"))
    for outcome in ("inserted", "duplicates", "already_stored", "quarantined", "rejected"):
        INGEST_ROWS.labels(outcome)
    for kind in ("observed", "forecast"):
        WEATHER_ROWS.labels(kind)
    for outcome in ("added", "updated", "reactivated", "retired"):
        REGISTRY_CHANGES.labels(outcome)
    for outcome in ("ok", "failed"):
        WEATHER_PULLS.labels(outcome)
    for verdict in ("move", "no_move", "decided", "malformed"):
        PRICE_TICKS.labels(verdict)
    for result in ("new", "repeat"):
        TRADE_DECISIONS.labels(result)
    for side in ("buy", "sell"):
        ORDER_MWH.labels(side)
    for topic in ("prices", "telemetry", "weather"):
        DEAD_LETTERS.labels(topic)
    for workflow in ("forecast_workflow_v3", "batch_forecast_workflow", "fleet_forecast_workflow",
                     "training_workflow"):
        for action in ("redriven", "failed"):
            WORKFLOWS_MENDED.labels(workflow, action)
    for workflow in ("forecast_workflow_v3", "fleet_forecast_workflow", "training_workflow"):
        WORKFLOW_QUEUE_SECONDS.labels(workflow)
    SIDECAR_RESTARTS.labels("workflow-engine-wedged")


_initialise()
