"""The chart as the Kubernetes tests apply it: rendered with a values set
(tests/unit/test_chart.py's) and applied server-side, strictly."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import yaml

from tests.unit.test_chart import CHART, VALUES, _helm

if TYPE_CHECKING:
    from tests.kubernetes.conftest import Cluster

CHART_NAME = "intraday"


def manifest(values: str, namespace: str) -> list[dict]:
    """The chart rendered with a values set (tests/unit/test_chart.py's) into `namespace`."""
    r = _helm("template", CHART_NAME, str(CHART), "--namespace", namespace, *VALUES[values])
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def dump(docs: list[dict]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)


def apply(cluster: Cluster, namespace: str, docs: list[dict],
          check: bool = True) -> subprocess.CompletedProcess:
    return cluster.kubectl("apply", "--server-side", "--validate=strict", "--field-manager=intraday-tests",
                           "-n", namespace, "-f", "-", stdin=dump(docs), check=check)
