"""The apps' tracing setup: where spans go by setting, and JSON logs that
carry the current trace (clients/tracing.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """
import logging
from opentelemetry.sdk.trace import TracerProvider
from clients import tracing

tracing.setup("forecaster")
logging.getLogger("outside").warning("no span here")
tracer = TracerProvider().get_tracer("test")
with tracer.start_as_current_span("request") as span:
    ctx = span.get_span_context()
    logging.getLogger("inside").info("in a span", extra={"device_id": "hp-0001"})
    print(format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), tracing.current_trace_id())
"""


def test_logs_are_json_lines_with_the_current_trace_and_span():
    env = {**os.environ, "INTRADAY_TRACES_EXPORTER": "none"}
    r = subprocess.run([sys.executable, "-c", SNIPPET], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    trace_id, span_id, current = r.stdout.split()
    assert current == trace_id
    lines = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    outside = next(rec for rec in lines if rec["logger"] == "outside")
    inside = next(rec for rec in lines if rec["logger"] == "inside")
    assert outside["level"] == "WARNING" and outside["service"] == "forecaster"
    assert outside["trace_id"] in (None, "0", "0" * 32)  # no trace
    assert inside["message"] == "in a span" and inside["device_id"] == "hp-0001"
    assert (inside["trace_id"], inside["span_id"]) == (trace_id, span_id)


def test_the_exporter_follows_the_setting(monkeypatch):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.exporter.zipkin.json import ZipkinExporter

    from clients.tracing import _exporter
    from intraday.config import Settings

    zipkin = _exporter(Settings(traces_exporter="zipkin", zipkin_url="http://127.0.0.1:19411/api/v2/spans"))
    assert isinstance(zipkin, ZipkinExporter) and zipkin.endpoint == "http://127.0.0.1:19411/api/v2/spans"
    assert isinstance(_exporter(Settings(traces_exporter="otlp")), OTLPSpanExporter)
    with pytest.raises(ValueError):
        Settings(traces_exporter="jaeger")
    with pytest.raises(ValueError):
        Settings(trace_sample_ratio=1.5)
