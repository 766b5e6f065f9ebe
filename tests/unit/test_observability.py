"""The Prometheus configuration and the SLA rules, checked and unit-tested
by Prometheus's own promtool (installed by `make setup`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

OBSERVABILITY = Path(__file__).resolve().parents[2] / "observability"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed: run make setup")
    return subprocess.run(["promtool", *args], cwd=OBSERVABILITY, capture_output=True, text=True,
                          timeout=60)


def test_the_prometheus_config_and_its_rules_are_valid():
    r = promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "11 rules found" in r.stdout + r.stderr


def test_the_sla_alerts_fire_when_they_should_and_only_then():
    """rules_test.yml: p99 over 30 s on a route pages after 2 minutes, fast
    routes do not; one request in ten failing pages after 5 minutes."""
    r = promtool("test", "rules", "rules_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_broken_rule_is_refused(tmp_path):
    bad = tmp_path / "rules.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: rate(up[5m]\n")
    r = promtool("check", "rules", str(bad))
    assert r.returncode != 0
