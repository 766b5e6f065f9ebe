"""charts/intraday, checked by the real tools that run without a cluster:
`helm lint --strict` and `helm template` with each values file; every
rendered document against its schema, strictly (Kubernetes' own kinds by
kubernetes-validate, Dapr's and KEDA's by their CRDs from the Go module
sources: an unknown kind or field fails); and what the manifests must mean
(scopes, autoscaling, disruption budgets, no plaintext secret, the same
components, configuration and resiliency as every local run)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from clients import secrets
from deploy import app_configs

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "intraday"
APPS = ("gateway", "forecaster", "telemetry", "trading")
KUBERNETES = "1.37.0"
DAPR_MODULE = "github.com/dapr/dapr@v1.18.2"
KEDA_MODULE = "github.com/kedacore/keda/v2@v2.17.2"
NAMESPACE = "trading-desk"
VALUES = {
    "gke": ["-f", str(CHART / "values-gke.yaml")],
    "gke-keda": ["-f", str(CHART / "values-gke.yaml"), "--set", "autoscaling.mode=keda"],
    "kind": ["-f", str(CHART / "values-kind.yaml")],
}


def _helm(*args: str) -> subprocess.CompletedProcess:
    helm = shutil.which("helm", path=str(ROOT / ".venv" / "bin")) or shutil.which("helm")
    assert helm, "helm not found: run `make setup`"
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


@cache
def _render(name: str, *extra: str) -> tuple[dict, ...]:
    r = _helm("template", "intraday", str(CHART), "--namespace", NAMESPACE, *VALUES[name], *extra)
    assert r.returncode == 0, r.stderr
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


def _kind(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _module_dir(module: str) -> Path:
    r = subprocess.run(["go", "mod", "download", "-json", module], capture_output=True, text=True,
                       timeout=300, cwd="/tmp")
    assert r.returncode == 0, r.stdout + r.stderr
    return Path(json.loads(r.stdout)["Dir"])


def _closed(schema: dict) -> dict:
    """A CRD's schema with unknown fields refused where the API server
    would prune them silently (structural schemas drop what they do not
    name, so a misspelt field would vanish without an error)."""
    schema = copy.deepcopy(schema)

    def close(s):
        if isinstance(s, dict):
            if (s.get("type") == "object" and "properties" in s and "additionalProperties" not in s
                    and not s.get("x-kubernetes-preserve-unknown-fields")):
                s["additionalProperties"] = False
            for v in s.values():
                close(v)
        elif isinstance(s, list):
            for v in s:
                close(v)

    close(schema)
    return schema


@cache
def _crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> the CRD's openAPIV3Schema, closed."""
    files = sorted((_module_dir(DAPR_MODULE) / "charts" / "dapr" / "crds").glob("*.yaml"))
    files += sorted((_module_dir(KEDA_MODULE) / "config" / "crd" / "bases").glob("keda.sh_*.yaml"))
    schemas = {}
    for f in files:
        for crd in yaml.safe_load_all(f.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            for v in crd["spec"]["versions"]:
                key = (f"{crd['spec']['group']}/{v['name']}", crd["spec"]["names"]["kind"])
                schemas[key] = _closed(v["schema"]["openAPIV3Schema"])
    return schemas


def _validate(doc: dict) -> None:
    crd = _crd_schemas().get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        body = {k: v for k, v in doc.items() if k != "metadata"}
        jsonschema.validate(body, {**crd, "properties": {k: v for k, v in crd["properties"].items()
                                                          if k != "metadata"}})
        # Its metadata, as any object's.
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]},
                                     KUBERNETES, strict=True)
        return
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


# -- helm itself ----------------------------------------------------------


@pytest.mark.parametrize("values", ["values-gke.yaml", "values-kind.yaml"])
def test_the_chart_lints_strictly(values):
    r = _helm("lint", "--strict", str(CHART), "-f", str(CHART / values))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 chart(s) failed" in r.stdout


@pytest.mark.parametrize("bad, reason", [
    (["--set", "dapr.stateStore.redis.password=hunter2"], "additional properties 'password' not allowed"),
    (["--set", "autoscaling.mode=manual"], "/autoscaling/mode"),
    (["--set", "services.forecaster.autoscaling.maxReplicas=0"],
     "/services/forecaster/autoscaling/maxReplicas"),
    (["--set", "gcp.projectId="], "gcp.projectId is required"),
    (["--set", "training.schedule=daily at three"], "/training/schedule"),
])
def test_bad_values_are_refused_with_the_reason(bad, reason):
    r = _helm("template", "intraday", str(CHART), *VALUES["gke"], *bad)
    assert r.returncode != 0 and reason in r.stderr, r.stderr


# -- every document against its schema -------------------------------------


@pytest.mark.parametrize("values", sorted(VALUES))
def test_every_rendered_document_is_valid_against_its_schema(values):
    docs = _render(values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy", "Component",
            "Configuration", "Resiliency", "Job"} <= kinds
    for doc in docs:
        try:
            _validate(doc)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message}")


def test_the_validation_refuses_an_unknown_kind_or_field():
    deployment = copy.deepcopy(_kind(_render("gke"), "Deployment")["forecaster"])
    deployment["spec"]["replica"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)
    component = copy.deepcopy(_kind(_render("gke"), "Component")["pubsub"])
    component["spec"]["metdata"] = component["spec"].pop("metadata")
    with pytest.raises(jsonschema.ValidationError):
        _validate(component)
    scaled = copy.deepcopy(_kind(_render("gke-keda"), "ScaledObject")["trading"])
    scaled["spec"]["maxReplicas"] = scaled["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        _validate(scaled)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        _validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


# -- what the manifests mean ---------------------------------------------------


def _local(name: str) -> dict:
    return yaml.safe_load((ROOT / "components" / "local" / f"{name}.yaml").read_text())


def _meta(component: dict) -> dict[str, dict]:
    return {m["name"]: m for m in component["spec"]["metadata"]}


@pytest.mark.parametrize("values", sorted(VALUES))
def test_the_components_are_the_local_ones_with_their_scopes(values):
    components = _kind(_render(values), "Component")
    assert set(components) == {"pubsub", "pubsub-forecasts", "statestore", "secretstore"}
    for pubsub in ("pubsub", "pubsub-forecasts"):
        local_pubsub = _meta(_local(pubsub))
        for name in ("publishingScopes", "subscriptionScopes"):
            assert _meta(components[pubsub])[name]["value"] == local_pubsub[name]["value"]
    assert set(components["pubsub"]["scopes"]) == set(APPS)
    assert components["pubsub-forecasts"]["scopes"] == ["forecaster"]
    # The actor and workflow hosts hold the state store; the services that
    # read secrets (clients/secrets.py) hold the secret store.
    assert set(components["statestore"]["scopes"]) == set(_local("statestore")["scopes"]) >= {"forecaster",
                                                                                              "trading"}
    assert _meta(components["statestore"])["actorStateStore"]["value"] == "true"
    assert set(components["secretstore"]["scopes"]) == set(secrets.NEEDED)


def test_on_gcp_the_state_store_is_memorystore_with_tls_and_auth_from_the_secret_store():
    docs = _render("gke")
    store = _kind(docs, "Component")["statestore"]
    meta = _meta(store)
    assert meta["enableTLS"]["value"] == "true"
    assert "secretKeyRef" in meta["redisHost"] and "secretKeyRef" in meta["redisPassword"]
    assert store["auth"]["secretStore"] == "secretstore"
    assert _kind(docs, "Component")["pubsub"]["spec"]["type"] == "pubsub.gcp.pubsub"
    assert _meta(_kind(docs, "Component")["pubsub"])["projectId"]["value"] == "intraday-production"
    # The sidecars that use the store trust Memorystore's CA beside the system roots.
    for app in ("forecaster", "trading"):
        pod = _kind(docs, "Deployment")[app]["spec"]["template"]
        ann = pod["metadata"]["annotations"]
        ca_dir = ann["dapr.io/volume-mounts"].split(":")[1]
        assert ann["dapr.io/env"] == f"SSL_CERT_DIR={ca_dir}"
        assert {"name": "memorystore-ca", "configMap": {"name": "memorystore-ca"}} in pod["spec"]["volumes"]


SECRETISH = re.compile(r"token|password|passwd|dsn|pepper|secret|auth|credential|private", re.I)


@pytest.mark.parametrize("values", sorted(VALUES))
def test_no_plaintext_secret(values):
    docs = _render(values)
    assert not _kind(docs, "Secret")
    workloads = [*_kind(docs, "Deployment").values(), *_kind(docs, "Job").values()]
    for d in workloads:
        for c in d["spec"]["template"]["spec"]["containers"]:
            for env in c["env"]:
                if env["name"] == "INTRADAY_SECRET_STORE":  # the store's name
                    continue
                if SECRETISH.search(env["name"]) or env["name"] == "INTRADAY_CLICKHOUSE_URL":
                    assert "valueFrom" in env and "value" not in env, env
    for c in _kind(docs, "Component").values():
        for m in c["spec"]["metadata"]:
            if SECRETISH.search(m["name"]) or m["name"] == "redisHost" and values == "gke":
                assert "secretKeyRef" in m and "value" not in m, (c["metadata"]["name"], m)


@pytest.mark.parametrize("values", sorted(VALUES))
def test_each_deployment_has_its_sidecar_service_account_pdb_and_service(values):
    docs = _render(values)
    deployments = _kind(docs, "Deployment")
    assert set(deployments) == set(APPS)
    configs = _kind(docs, "Configuration")
    run_file = {a["appID"]: a for a in yaml.safe_load((ROOT / "dapr.yaml").read_text())["apps"]}
    for app, d in deployments.items():
        pod = d["spec"]["template"]
        ann = pod["metadata"]["annotations"]
        container = pod["spec"]["containers"][0]
        assert ann["dapr.io/enabled"] == "true" and ann["dapr.io/app-id"] == app
        port = container["ports"][0]["containerPort"]
        assert int(ann["dapr.io/app-port"]) == port == run_file[app]["appPort"]
        assert ann["dapr.io/config"] == f"intraday-{app}" and ann["dapr.io/config"] in configs
        # Its sidecar reads the secrets its app needs, and no other.
        scope, = configs[ann["dapr.io/config"]]["spec"]["secrets"]["scopes"]
        assert (scope["storeName"], scope["defaultAccess"]) == ("secretstore", "deny")
        assert scope.get("allowedSecrets", []) == list(secrets.NEEDED.get(app, ()))
        assert configs[ann["dapr.io/config"]]["spec"]["api"]["allowed"] == app_configs.api_rules(app)
        assert ann["dapr.io/log-as-json"] == "true" and ann["dapr.io/enable-metrics"] == "true"
        assert int(ann["dapr.io/graceful-shutdown-seconds"]) < pod["spec"]["terminationGracePeriodSeconds"]
        assert ann["dapr.io/max-body-size"] == run_file[app].get("maxBodySize", ann["dapr.io/max-body-size"])
        assert ann["dapr.io/sidecar-memory-request"] and ann["dapr.io/sidecar-memory-limit"]
        assert container["command"] == ["python", "-m", f"services.{app}"]
        # Its own service account, a budget and a Service selecting its pods.
        assert pod["spec"]["serviceAccountName"] == app
        labels = pod["metadata"]["labels"]
        for kind, selector in (("PodDisruptionBudget", lambda o: o["spec"]["selector"]["matchLabels"]),
                               ("Service", lambda o: o["spec"]["selector"])):
            obj = _kind(docs, kind)[app]
            assert selector(obj).items() <= labels.items(), (kind, app)
        assert _kind(docs, "PodDisruptionBudget")[app]["spec"]["maxUnavailable"] == 1
        assert app in _kind(docs, "ServiceAccount")


def test_workload_identity_only_where_gcp_is_used():
    gke = _kind(_render("gke"), "ServiceAccount")
    for app, sa in gke.items():
        assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == \
            f"intraday-{app}@intraday-production.iam.gserviceaccount.com"
    kind = _kind(_render("kind"), "ServiceAccount")
    assert all("annotations" not in sa["metadata"] for sa in kind.values())


def test_the_configuration_and_resiliency_are_the_repositorys_with_this_namespace():
    docs = _render("gke")
    config = _kind(docs, "Configuration")["intraday-forecaster"]["spec"]
    source = yaml.safe_load((ROOT / "components" / "config" / "gcp.yaml").read_text())["spec"]
    assert config["metrics"] == source["metrics"] and config["workflow"] == source["workflow"]
    policies = config["accessControl"]["policies"]
    expected = source["accessControl"]["policies"]
    def rules(ps):
        return [(p["appId"], p["operations"]) for p in ps]

    assert rules(policies) == rules(expected)
    assert {p["namespace"] for p in policies} == {NAMESPACE}
    assert config["accessControl"]["defaultAction"] == "deny"
    assert config["tracing"]["otel"]["endpointAddress"].endswith(":4317")
    resiliency = _kind(docs, "Resiliency")["intraday"]
    source = yaml.safe_load((ROOT / "components" / "gcp" / "resiliency.yaml").read_text())
    assert resiliency["spec"] == source["spec"]


def _behaviour_is_fast_up_slow_down(behavior: dict) -> None:
    up, down = behavior["scaleUp"], behavior["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 10
    assert up["policies"] == [{"type": "Percent", "value": 100, "periodSeconds": 10}]  # doubling
    assert down["stabilizationWindowSeconds"] == 300
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]


def _subscriptions() -> dict[str, set[str]]:
    """app -> the topics it may subscribe to (the pub/sub component)."""
    scopes = _meta(_local("pubsub"))["subscriptionScopes"]["value"]
    return {app: set(filter(None, topics.split(","))) for app, topics in
            (part.split("=") for part in scopes.split(";"))}


def test_the_hpas_scale_on_cpu_and_queue_depth_fast_up_slow_down():
    docs = _render("gke")
    hpas = _kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == set(APPS)
    forecaster = hpas["forecaster"]["spec"]
    assert (forecaster["minReplicas"], forecaster["maxReplicas"]) == (2, 100)
    for app, hpa in hpas.items():
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": app}
        assert 2 <= spec["minReplicas"] <= spec["maxReplicas"] <= 100
        assert {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 70}}} in spec["metrics"]
        _behaviour_is_fast_up_slow_down(spec["behavior"])
        # Dapr names a service's subscription <app id>-<topic>: the queue it
        # scales on is one it really consumes.
        for m in spec["metrics"]:
            if m["type"] == "External" and "subscription_id" in str(m):
                sub = m["external"]["metric"]["selector"]["matchLabels"]["resource.labels.subscription_id"]
                assert sub.removeprefix(f"{app}-") in _subscriptions()[app], sub
    queue = [m for m in forecaster["metrics"] if m["type"] == "External"]
    assert queue and "intraday_batch_queue_depth" in queue[0]["external"]["metric"]["name"]
    assert not any("replicas" in d["spec"] for d in _kind(docs, "Deployment").values())  # the HPA owns them


def test_keda_mode_scales_on_the_pubsub_subscriptions_instead():
    docs = _render("gke-keda")
    assert not _kind(docs, "HorizontalPodAutoscaler")
    scaled = _kind(docs, "ScaledObject")
    assert set(scaled) == set(APPS)
    assert _kind(docs, "TriggerAuthentication")["intraday-gcp"]["spec"]["podIdentity"] == {"provider": "gcp"}
    for app, so in scaled.items():
        spec = so["spec"]
        assert spec["scaleTargetRef"] == {"name": app}
        _behaviour_is_fast_up_slow_down(spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"])
        for t in spec["triggers"]:
            if t["type"] == "gcp-pubsub":
                assert t["metadata"]["subscriptionName"].removeprefix(f"{app}-") in _subscriptions()[app]
    assert [t["type"] for t in scaled["trading"]["spec"]["triggers"]] == ["cpu", "gcp-pubsub"]
    assert [t["type"] for t in scaled["forecaster"]["spec"]["triggers"]] == ["cpu", "prometheus"]


def test_network_policies_deny_by_default_and_open_only_what_is_used():
    docs = _render("gke")
    policies = _kind(docs, "NetworkPolicy")
    deny = policies["intraday-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    pods = {app: d["spec"]["template"]["metadata"]["labels"] for app, d in _kind(docs, "Deployment").items()}
    # Every pod is under the deny-all, and reaches the others' sidecars on 50002 only.
    assert all(deny["podSelector"]["matchLabels"].items() <= labels.items() for labels in pods.values())
    sidecars = policies["intraday-sidecars"]["spec"]["ingress"]
    assert sidecars == [{"from": [{"podSelector": deny["podSelector"]}],
                         "ports": [{"port": 50002, "protocol": "TCP"}]}]
    gateway = policies["intraday-gateway"]["spec"]
    assert gateway["podSelector"]["matchLabels"].items() <= pods["gateway"].items()
    assert gateway["ingress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    assert gateway["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.129.0.0/23"}}]


def test_telemetry_is_pointed_at_a_clickhouse_server_or_cluster():
    def env(docs) -> dict:
        container = _kind(docs, "Deployment")["telemetry"]["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e for e in container["env"]}

    one = env(_render("gke"))
    assert one["INTRADAY_TELEMETRY_BACKEND"]["value"] == "clickhouse"
    assert one["INTRADAY_CLICKHOUSE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "clickhouse", "key": "url"}
    assert "INTRADAY_CLICKHOUSE_CLUSTER" not in one
    cluster = env(_render("gke", "--set", "clickhouse.cluster=intraday"))
    assert cluster["INTRADAY_CLICKHOUSE_CLUSTER"]["value"] == "intraday"
    for app in ("gateway", "forecaster", "trading"):  # only telemetry opens the store
        container = _kind(_render("gke"), "Deployment")[app]["spec"]["template"]["spec"]["containers"][0]
        assert not any(e["name"].startswith("INTRADAY_CLICKHOUSE") for e in container["env"])


def test_the_forecaster_schedules_the_daily_training_as_configured():
    def env(docs, app="forecaster") -> dict:
        container = _kind(docs, "Deployment")[app]["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    default = env(_render("gke"))
    assert default["INTRADAY_TRAINING_SCHEDULE"] == "0 0 3 * * *"
    assert (default["INTRADAY_TRAINING_DAYS"], default["INTRADAY_TRAINING_ROWS"]) == ("30", "1500000")
    assert env(_render("gke", "--set", "training.schedule="))["INTRADAY_TRAINING_SCHEDULE"] == ""
    assert "INTRADAY_TRAINING_SCHEDULE" not in env(_render("gke"), "gateway")


def test_the_telemetry_service_pulls_the_weather_provider_as_configured():
    def env(docs, app="telemetry") -> dict:
        container = _kind(docs, "Deployment")[app]["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    default = env(_render("gke"))
    assert default["INTRADAY_WEATHER_PROVIDER_URL"] == ""
    assert default["INTRADAY_WEATHER_SCHEDULE"] == "@every 1h"
    url = "https://api.open-meteo.com/v1/forecast"
    assert env(_render("gke", "--set", f"weather.providerUrl={url}"))["INTRADAY_WEATHER_PROVIDER_URL"] == url
    assert "INTRADAY_WEATHER_PROVIDER_URL" not in env(_render("gke"), "forecaster")
    assert env(_render("gke"), "forecaster")["INTRADAY_WEATHER_FORECAST_MAX_AGE_HOURS"] == "18"
    refused = _helm("template", "intraday", str(CHART), *VALUES["gke"],
                    "--set", "weather.providerUrl=not a url")
    assert refused.returncode != 0 and "providerUrl" in refused.stderr


def test_every_sidecar_annotation_is_one_the_dapr_injector_reads():
    """The injector ignores an annotation it does not know: each one the
    chart sets is in Dapr 1.18's list (its source, from the Go module)."""
    source = (_module_dir(DAPR_MODULE) / "pkg" / "injector" / "annotations" / "annotations.go").read_text()
    known = set(re.findall(r'"(dapr\.io/[a-z0-9-]+)"', source))
    assert len(known) > 50
    for values in sorted(VALUES):
        for d in _kind(_render(values), "Deployment").values():
            used = {k for k in d["spec"]["template"]["metadata"]["annotations"] if k.startswith("dapr.io/")}
            assert used <= known, (values, used - known)
