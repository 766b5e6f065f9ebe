"""A real Kubernetes API server for the chart's tests: kube-apiserver and
kubectl v1.37 (built by `make setup` from the k8s.io/kubernetes Go module,
scripts/kubernetes) over etcd (Debian's etcd-server), started on loopback
ports of their own in a temporary directory and stopped after the module.

No controller manager, scheduler or kubelet: objects are admitted,
validated and stored as on a cluster, but no pod is made from a
Deployment. Authentication is a static token; authorization AlwaysAllow
(what is checked here is what the server accepts, not who may send it)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.kubernetes.chart import dump
from tests.unit.test_chart import DAPR_MODULE, KEDA_MODULE, _module_dir

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "intraday-tests-kubernetes-admin"


def _binary(name: str) -> str:
    found = shutil.which(name, path=str(ROOT / ".venv" / "bin")) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: run `make setup`")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    url: str
    kubeconfig: Path
    logs: Path

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess:
        r = subprocess.run([_binary("kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
                           input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
        return r

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float, **kw) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{log.stem} exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2, **kw).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{log.stem} not ready in {timeout:.0f} s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("kubernetes")
    etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    etcd_log = work / "etcd.log"
    etcd = subprocess.Popen(
        [_binary("etcd"), "--name", "intraday-tests", "--data-dir", str(work / "etcd"),
         "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-cluster", f"intraday-tests=http://127.0.0.1:{peer_port}",
         "--listen-metrics-urls", "", "--log-level", "warn"],
        stdout=etcd_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    api = None
    try:
        _wait(f"{etcd_url}/health", etcd, etcd_log, 60)
        # The service account signing key, and the admin's static token.
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (work / "sa.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        (work / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (work / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")
        api_log = work / "kube-apiserver.log"
        api = subprocess.Popen(
            [_binary("kube-apiserver"), "--etcd-servers", etcd_url,
             "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
             "--secure-port", str(api_port), "--cert-dir", str(work / "certs"),
             "--token-auth-file", str(work / "tokens.csv"), "--authorization-mode", "AlwaysAllow",
             "--service-account-issuer", "https://kubernetes.default.svc",
             "--service-account-key-file", str(work / "sa.pub"),
             "--service-account-signing-key-file", str(work / "sa.key"),
             "--service-cluster-ip-range", "10.96.0.0/16",
             # On loopback there is no address for the `kubernetes` Service's endpoints.
             "--endpoint-reconciler-type", "none"],
            stdout=api_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        url = f"https://127.0.0.1:{api_port}"
        _wait(f"{url}/readyz", api, api_log, 180, verify=False,
              headers={"Authorization": f"Bearer {TOKEN}"})
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "tests",
            "clusters": [{"name": "tests", "cluster": {"server": url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "tests", "context": {"cluster": "tests", "user": "admin"}}]}))
        os.chmod(kubeconfig, 0o600)
        yield Cluster(url, kubeconfig, work)
    finally:
        if api is not None:
            _stop(api)
        _stop(etcd)


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> set[str]:
    """Dapr's and KEDA's CRDs, from their Go modules' sources; their kinds."""
    files = sorted((_module_dir(DAPR_MODULE) / "charts" / "dapr" / "crds").glob("*.yaml"))
    files += sorted((_module_dir(KEDA_MODULE) / "config" / "crd" / "bases").glob("keda.sh_*.yaml"))
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text())
            if d and d.get("kind") == "CustomResourceDefinition"]
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=dump(docs))
    cluster.kubectl("wait", "--for", "condition=Established", "--timeout", "60s",
                    *(f"crd/{d['metadata']['name']}" for d in docs))
    return {d["spec"]["names"]["kind"] for d in docs}


_made = iter(range(1, 1000))


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace of the test's own (with no controller manager, a deleted
    namespace stays Terminating: never reused)."""
    name = f"intraday-{next(_made)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
