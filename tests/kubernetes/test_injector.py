"""Dapr's sidecar injector against the real API server (conftest.py): the
chart's pods get their `daprd` from the injector, as on a cluster.

Dapr's control plane as the Dapr Helm chart runs it, minus the cluster:
Sentry (`--mode kubernetes`: its root and issuer in the `dapr-trust-bundle`
Secret, identities checked by TokenReview against the API server) and the
injector (`make setup` builds both from the dapr module, v1.18.2), on
loopback. The injector proves who it is to Sentry with a service account
token bound to a Pod object of its own, as the kubelet would hand it one,
serves its webhook with the certificate Sentry issues for
`dapr-sidecar-injector.dapr-system.svc`, and patches the webhook
configuration's CA bundle itself. The API server reaches it through an
ExternalName Service (no cluster network here: a ClusterIP needs
kube-proxy), still verifying the certificate for the Service's name.

Not shown here (no kubelet, no nodes): the injected sidecar running, its
certificate from Sentry inside the pod, and the pod's readiness."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kubernetes.chart import apply, dump, manifest
from tests.kubernetes.conftest import Cluster, _free_port, _stop, _wait

SYSTEM = "dapr-system"
DAPR_BIN = Path.home() / ".dapr" / "bin"
# What the Dapr Helm chart gives the injector (its release image, daprd at /daprd; the
# Dockerfile's `dapr` target is for Compose, daprd behind its own entry).
SIDECAR_IMAGE = "daprio/daprd:1.18.2"


def _dapr_binary(name: str) -> str:
    found = shutil.which(name, path=str(DAPR_BIN))
    if not found:
        pytest.fail(f"{name} not found in {DAPR_BIN}: run `make setup`")
    return found


def _start(cluster: Cluster, name: str, args: list[str],
           env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    log = cluster.logs / f"{name}.log"
    proc = subprocess.Popen([_dapr_binary(name), *args], env={**os.environ, **env},
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def _objects(*docs: dict) -> str:
    return dump(list(docs))


@pytest.fixture(scope="module")
def injector(cluster: Cluster, crds) -> Iterator[dict]:
    """Sentry and the injector running, the webhook configured; the port the
    injector serves on and the trust anchors it was given."""
    work = cluster.logs
    webhook_port = _free_port()
    cluster.kubectl("apply", "-f", "-", stdin=_objects(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM}},
        *({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": SYSTEM}}
          for sa in ("dapr-sentry", "dapr-injector")),
        # Sentry fills these with the root and issuer it makes (as the Dapr chart leaves them).
        *({"apiVersion": "v1", "kind": kind, "metadata": {"name": "dapr-trust-bundle", "namespace": SYSTEM}}
          for kind in ("Secret", "ConfigMap")),
        # The control plane's configuration, as the Dapr chart makes it.
        {"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
         "metadata": {"name": "daprsystem", "namespace": SYSTEM},
         "spec": {"mtls": {"enabled": True, "workloadCertTTL": "24h", "allowedClockSkew": "15m",
                           "controlPlaneTrustDomain": "cluster.local",
                           "sentryAddress": f"dapr-sentry.{SYSTEM}.svc.cluster.local:443"}}},
        # The injector's pod, for its identity (never scheduled: there is no node).
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": "dapr-sidecar-injector-0", "namespace": SYSTEM,
                      "annotations": {"dapr.io/control-plane": "injector"}},
         "spec": {"serviceAccountName": "dapr-injector",
                  "containers": [{"name": "dapr-sidecar-injector", "image": SIDECAR_IMAGE}]}},
    ))
    kube = {"NAMESPACE": SYSTEM, "KUBECONFIG": str(cluster.kubeconfig)}
    if os.getuid() == 0:  # Dapr in Kubernetes mode refuses root (as in a pod); tests here run as root
        kube["DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK"] = "true"
    sentry_port, sentry_health = _free_port(), _free_port()
    (work / "sentry-credentials").mkdir(exist_ok=True)  # watched; the CA itself is in the Secret
    sentry, sentry_log = _start(cluster, "sentry", [
        "--mode", "kubernetes", "--kubeconfig", str(cluster.kubeconfig), "--trust-domain", "cluster.local",
        "--listen-address", "127.0.0.1", "--port", str(sentry_port),
        "--healthz-listen-address", "127.0.0.1", "--healthz-port", str(sentry_health),
        "--metrics-listen-address", "127.0.0.1", "--metrics-port", str(_free_port()),
        "--issuer-credentials", str(work / "sentry-credentials")], kube)
    injector_proc = None
    try:
        _wait(f"http://127.0.0.1:{sentry_health}/healthz", sentry, sentry_log, 90)
        anchors = cluster.get("configmap", "dapr-trust-bundle", "-n", SYSTEM)["data"]["ca.crt"]
        (work / "trust-anchors.pem").write_text(anchors)
        token = cluster.kubectl(
            "create", "token", "dapr-injector", "-n", SYSTEM, "--audience", "dapr.io/sentry",
            "--duration", "1h", "--bound-object-kind", "Pod",
            "--bound-object-name", "dapr-sidecar-injector-0").stdout.strip()
        (work / "injector-token").write_text(token)
        cluster.kubectl("apply", "-f", "-", stdin=_objects(
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "dapr-sidecar-injector", "namespace": SYSTEM},
             "spec": {"type": "ExternalName", "externalName": "localhost",
                      "ports": [{"name": "https", "port": webhook_port, "protocol": "TCP"}]}},
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
             "metadata": {"name": "dapr-sidecar-injector"},
             "webhooks": [{
                 "name": "sidecar-injector.dapr.io", "sideEffects": "None",
                 "admissionReviewVersions": ["v1"], "reinvocationPolicy": "IfNeeded",
                 # Fail, not the Dapr chart's Ignore: an injector that does not answer must show here.
                 "failurePolicy": "Fail", "timeoutSeconds": 10,
                 # Until the injector patches in Sentry's trust anchors, nothing verifies.
                 "clientConfig": {"caBundle": base64.b64encode(b"not yet").decode(),
                                  "service": {"namespace": SYSTEM, "name": "dapr-sidecar-injector",
                                              "port": webhook_port, "path": "/mutate"}},
                 "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                            "resources": ["pods"]}],
                 "namespaceSelector": {"matchLabels": {"intraday.tests/injected": "true"}}}]},
        ))
        injector_health = _free_port()
        injector_proc, injector_log = _start(cluster, "injector", [
            "--kubeconfig", str(cluster.kubeconfig),
            "--listen-address", "127.0.0.1", "--port", str(webhook_port),
            "--healthz-listen-address", "127.0.0.1", "--healthz-port", str(injector_health),
            "--metrics-listen-address", "127.0.0.1", "--metrics-port", str(_free_port())],
            {**kube, "SIDECAR_IMAGE": SIDECAR_IMAGE, "SIDECAR_IMAGE_PULL_POLICY": "IfNotPresent",
             "KUBE_CLUSTER_DOMAIN": "cluster.local",
             "DAPR_SENTRY_ADDRESS": f"127.0.0.1:{sentry_port}",
             "DAPR_TRUST_ANCHORS_FILE": str(work / "trust-anchors.pem"),
             "DAPR_CONTROL_PLANE_TRUST_DOMAIN": "cluster.local",
             "DAPR_SENTRY_TOKEN_FILE": str(work / "injector-token")})
        # Ready once it has its certificate and has patched the webhook's CA bundle.
        _wait(f"http://127.0.0.1:{injector_health}/healthz", injector_proc, injector_log, 90)
        yield {"port": webhook_port, "anchors": anchors, "process": injector_proc}
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", "dapr-sidecar-injector",
                        "--ignore-not-found", check=False)
        if injector_proc is not None:
            _stop(injector_proc)
        _stop(sentry)


@pytest.fixture
def injected(cluster: Cluster, namespace: str) -> str:
    """`namespace`, opted in to the injector's webhook."""
    cluster.kubectl("label", "namespace", namespace, "intraday.tests/injected=true")
    return namespace


def _pod_of(deployment: dict, name: str) -> dict:
    """The pod a ReplicaSet would make from a Deployment (no controller manager here)."""
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {**template["metadata"], "name": name,
                         "namespace": deployment["metadata"]["namespace"]},
            "spec": template["spec"]}


def _args(container: dict) -> dict[str, str]:
    """A container's `--flag value` arguments (a flag alone maps to "")."""
    args, out = container.get("args", []), {}
    for i, a in enumerate(args):
        if a.startswith("--"):
            nxt = args[i + 1] if i + 1 < len(args) else ""
            out[a] = "" if nxt.startswith("--") else nxt
    return out


def test_the_webhook_carries_sentrys_trust_anchors_patched_by_the_injector(cluster, injector):
    webhook = cluster.get("mutatingwebhookconfiguration", "dapr-sidecar-injector")["webhooks"][0]
    assert base64.b64decode(webhook["clientConfig"]["caBundle"]).decode() == injector["anchors"]
    secret = cluster.get("secret", "dapr-trust-bundle", "-n", SYSTEM)["data"]
    assert {"ca.crt", "issuer.crt", "issuer.key"} <= set(secret), "Sentry did not store its CA"


@pytest.mark.parametrize("values,app", [("kind", "gateway"), ("gke", "forecaster")])
def test_a_chart_pod_gets_the_sidecar_its_annotations_describe(cluster, injector, injected, values, app):
    docs = manifest(values, injected)
    apply(cluster, injected, [d for d in docs if d["kind"] in ("ServiceAccount", "Configuration")])
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == app)
    deployment["metadata"]["namespace"] = injected
    pod = _pod_of(deployment, f"{app}-0")
    made = json.loads(cluster.kubectl("create", "-o", "json", "-f", "-", stdin=dump([pod])).stdout)
    assert [c["name"] for c in made["spec"]["containers"]] == [app, "daprd"]
    daprd = made["spec"]["containers"][1]
    assert daprd["image"] == SIDECAR_IMAGE
    notes = pod["metadata"]["annotations"]
    args = _args(daprd)
    assert args["--app-id"] == notes["dapr.io/app-id"] == app
    for flag, note in [("--app-port", "app-port"), ("--config", "config"), ("--log-level", "log-level"),
                       ("--max-body-size", "max-body-size"), ("--metrics-port", "metrics-port"),
                       ("--dapr-graceful-shutdown-seconds", "graceful-shutdown-seconds")]:
        assert args[flag] == notes[f"dapr.io/{note}"], flag
    if notes.get("dapr.io/enable-app-health-check") == "true":
        assert args["--app-health-check-path"] == notes["dapr.io/app-health-check-path"]
    # In Kubernetes mode, with mTLS from Sentry, whose trust anchors it is given.
    assert args["--mode"] == "kubernetes" and "--enable-mtls" in args
    assert args["--sentry-address"] == f"dapr-sentry.{SYSTEM}.svc.cluster.local:443"
    env = {e["name"]: e for e in daprd["env"]}
    assert env["DAPR_TRUST_ANCHORS"]["value"] == injector["anchors"]
    # The API tokens from the chart's secrets; the sidecar's resources from its annotations.
    for name, note in [("DAPR_API_TOKEN", "api-token-secret"), ("APP_API_TOKEN", "app-token-secret")]:
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == notes[f"dapr.io/{note}"]
    resources = daprd["resources"]
    assert resources["requests"]["memory"] == notes["dapr.io/sidecar-memory-request"]
    assert resources["limits"]["memory"] == notes["dapr.io/sidecar-memory-limit"]
    # Extra mounts and environment where the values ask for them (GKE: Memorystore's CA).
    if "dapr.io/volume-mounts" in notes:
        volume, path = notes["dapr.io/volume-mounts"].split(":")
        assert {"name": volume, "mountPath": path, "readOnly": True} in daprd["volumeMounts"]
        name, value = notes["dapr.io/env"].split("=")
        assert env[name]["value"] == value
    assert values != "gke" or "dapr.io/volume-mounts" in notes


def test_a_pod_without_the_annotation_is_left_alone(cluster, injector, injected):
    # (No controller manager makes a namespace's `default` service account here.)
    account = {"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "plain", "namespace": injected}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": injected},
           "spec": {"serviceAccountName": "plain", "containers": [{"name": "plain", "image": "plain:1"}]}}
    cluster.kubectl("create", "-f", "-", stdin=dump([account]))
    made = json.loads(cluster.kubectl("create", "-o", "json", "-f", "-", stdin=dump([pod])).stdout)
    assert [c["name"] for c in made["spec"]["containers"]] == ["plain"]


def test_with_the_injector_down_a_dapr_pod_is_refused_not_made_without_its_sidecar(cluster, injector,
                                                                                   injected):
    # Last in this module: it stops the injector. The webhook fails closed here (not the Dapr
    # chart's Ignore), so a pod that needs a sidecar is never made without one.
    docs = manifest("kind", injected)
    apply(cluster, injected, [d for d in docs if d["kind"] == "ServiceAccount"])
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "trading")
    deployment["metadata"]["namespace"] = injected
    _stop(injector["process"])
    r = cluster.kubectl("create", "-f", "-", stdin=dump([_pod_of(deployment, "trading-0")]), check=False)
    assert r.returncode != 0 and 'failed calling webhook "sidecar-injector.dapr.io"' in r.stderr, r.stderr
    assert cluster.kubectl("get", "pods", "-n", injected, "-o", "name").stdout.strip() == ""
