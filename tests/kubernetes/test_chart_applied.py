"""charts/intraday applied to a real Kubernetes API server (conftest.py):
Dapr's and KEDA's CRDs installed from their Go module sources, then the
chart rendered with each values file (as tests/unit/test_chart.py renders
it) and applied server-side with strict field validation, every object
created and read back, then deleted. A broken value or an unknown field
is refused by the server with the reason, and nothing is created.

What `helm install --dry-run=server` cannot show (Helm 4 sends nothing to
the server with it), this does: the server's own admission, defaulting and
validation, and the CRDs' structural schemas."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.kubernetes.chart import apply, dump, manifest
from tests.unit.test_chart import VALUES


def test_the_server_is_a_real_kubernetes_api_server(cluster):
    version = cluster.kubectl("version", "-o", "json").stdout
    assert '"gitVersion": "v1.37.2"' in version.replace('":"', '": "'), version
    # Its own kinds are served and it refuses what it does not know.
    r = cluster.kubectl("get", "scaledobjects", check=False)
    assert r.returncode != 0 and "the server doesn't have a resource type" in r.stderr


@pytest.mark.parametrize("values", sorted(VALUES))
def test_the_chart_is_applied_strictly_read_back_and_deleted(cluster, crds, namespace, values):
    docs = manifest(values, namespace)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "Component", "Configuration", "Resiliency"} <= kinds
    assert kinds & crds, "no object of the Dapr or KEDA kinds rendered"
    r = apply(cluster, namespace, docs)
    assert r.stdout.count("serverside-applied") == len(docs), r.stdout
    # Read back from the server: every object, as stored (defaults applied).
    stored = cluster.kubectl("get", "-n", namespace, "-f", "-", "-o", "yaml", stdin=dump(docs)).stdout
    items = yaml.safe_load(stored)
    items = items["items"] if items.get("kind") == "List" else [items]
    assert sorted((i["kind"], i["metadata"]["name"]) for i in items) == \
        sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    for item in items:
        assert item["metadata"]["uid"] and item["metadata"]["namespace"] == namespace
        if item["kind"] == "Deployment":
            annotations = item["spec"]["template"]["metadata"]["annotations"]
            assert annotations["dapr.io/app-id"] == item["metadata"]["name"]
            assert item["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"]  # defaulted
    # Deleted: nothing of the release is left.
    cluster.kubectl("delete", "-n", namespace, "-f", "-", "--wait=true", stdin=dump(docs))
    left = cluster.kubectl("get", "-n", namespace, "-f", "-", "--ignore-not-found", "-o", "name",
                           stdin=dump(docs)).stdout.split()
    assert left == []


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    return copy.deepcopy(next(d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])))


@pytest.mark.parametrize("break_it,reason", [
    (lambda d: d["spec"].__setitem__("replicas", -1), "spec.replicas: Invalid value: -1"),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("imagePullPolicyy", "Always"),
     '.spec.template.spec.containers[name="gateway"].imagePullPolicyy: field not declared in schema'),
    (lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"].__setitem__(
        "cpu", "a lot"), "quantities must match the regular expression"),
], ids=["negative-replicas", "unknown-field", "bad-quantity"])
def test_a_broken_deployment_is_refused_with_the_reason_and_nothing_is_made(cluster, namespace, break_it,
                                                                            reason):
    deployment = _one(manifest("kind", namespace), "Deployment", "gateway")
    deployment["spec"]["replicas"] = 1
    break_it(deployment)
    r = apply(cluster, namespace, [deployment], check=False)
    assert r.returncode != 0 and reason in r.stderr, r.stderr
    assert cluster.kubectl("get", "deployments", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_a_dapr_component_with_an_unknown_field_is_refused_by_its_crd(cluster, crds, namespace):
    component = _one(manifest("kind", namespace), "Component")
    component["spec"]["versionn"] = "v1"
    r = apply(cluster, namespace, [component], check=False)
    assert r.returncode != 0 and ".spec.versionn: field not declared in schema" in r.stderr, r.stderr
    assert cluster.kubectl("get", "components.dapr.io", "-n", namespace, "-o", "name").stdout.strip() == ""
