"""Traces and logs of the apps, with OpenTelemetry.

The sidecars trace every Dapr hop themselves (components/config/); the apps
add their own spans to the same W3C traces: FastAPI server spans, the
clients they call the sidecar with (httpx, aiohttp), PostgreSQL (psycopg)
and the workflow client's gRPC calls (dapr-ext-workflow then carries the
trace context into the workflow, whose activities run in spans of it).
No spans inside workflow functions: they replay.

Where spans go is a setting (`INTRADAY_TRACES_EXPORTER`): the local Zipkin
server, an OpenTelemetry collector over OTLP, Cloud Trace, or nowhere.
Logs are JSON lines carrying `trace_id` and `span_id`.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from intraday.config import get_settings

# The workflow client's calls worth a span; the worker's stream to daprd
# (GetWorkItems, Complete*Task) is plumbing and would make a trace per step.
WORKFLOW_CLIENT_CALLS = ("StartInstance", "WaitForInstanceCompletion", "RaiseEvent",
                         "TerminateInstance", "PurgeInstances")
# Requests nobody debugs a forecast by: probes, scrapes, Dapr's discovery.
UNTRACED_URLS = "health,metrics,dapr/config,dapr/subscribe,healthz"
_configured = False


def setup(service: str) -> None:
    """Configure this process's logging and tracing (once, before the app
    module is imported, so that every client it creates is instrumented)."""
    global _configured
    if _configured:
        return
    _configured = True
    settings = get_settings()
    _setup_logging(service)
    if settings.traces_exporter == "none":
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.namespace": "intraday",
                                  "deployment.environment": settings.environment}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
    trace.set_tracer_provider(provider)

    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    HTTPXClientInstrumentor().instrument()
    AioHttpClientInstrumentor().instrument()
    PsycopgInstrumentor().instrument()


def _exporter(settings):
    kind = settings.traces_exporter
    if kind == "zipkin":
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        return ZipkinExporter(endpoint=settings.zipkin_url)
    if kind == "otlp":  # OTEL_EXPORTER_OTLP_ENDPOINT and friends configure it
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if kind == "gcp":  # the project from the environment (Workload Identity on GKE)
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        return CloudTraceSpanExporter()
    raise ValueError(f"unknown traces exporter {kind!r}")


def _setup_logging(service: str) -> None:
    from opentelemetry.instrumentation.logging import LoggingInstrumentor
    from pythonjsonlogger.core import RESERVED_ATTRS
    from pythonjsonlogger.json import JsonFormatter

    # Puts the current span's ids on every log record (otelTraceID, otelSpanID).
    LoggingInstrumentor().instrument(set_logging_format=False, inject_trace_context=True)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s %(otelTraceID)s %(otelSpanID)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                       "otelTraceID": "trace_id", "otelSpanID": "span_id"},
        static_fields={"service": service}, timestamp=False,
        reserved_attrs=[*RESERVED_ATTRS, "otelTraceSampled", "otelServiceName"]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # The workflow engine logs every step of every instance at INFO, httpx every request.
    for name in ("durabletask-worker", "durabletask-client", "WorkflowRuntime", "DaprWorkflowClient",
                 "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def instrument_app(app) -> None:
    """Server spans for every request the app serves (a child of the
    caller's trace when its sidecar passes a traceparent)."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # No spans for the ASGI messages inside a request (one per body chunk).
    FastAPIInstrumentor.instrument_app(app, excluded_urls=UNTRACED_URLS, exclude_spans=["receive", "send"])


def instrument_workflow_client() -> None:
    """Spans for the workflow client's calls, and the trace context on them
    (daprd then parents the workflow's activities on it). To call after
    dapr.ext.workflow is imported and before its channels exist: the SDK
    instruments gRPC at import, without a filter, and the instrumentor is a
    singleton whose filter a later construction sets."""
    from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient, filters

    instrumentor = GrpcInstrumentorClient(
        filter_=filters.any_of(*(filters.method_name(name) for name in WORKFLOW_CLIENT_CALLS)))
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), None outside a trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
