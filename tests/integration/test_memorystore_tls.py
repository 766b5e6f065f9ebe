"""The actor state store of production, components/gcp/statestore.yaml as it
is, against a Redis that asks what Memorystore asks: TLS with the server's
own CA, and an AUTH string. A daprd loads the file with its host and AUTH
string from the secret store the file names (a local file store here,
Secret Manager there) and the CA beside the system roots (SSL_CERT_DIR, as
the chart mounts it); state is written and read through the sidecar,
transactions keep their ETags, and the data is in that Redis. A wrong AUTH
string or an untrusted CA stops the sidecar with the reason."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parents[2]
DAPRD = Path(os.environ.get("DAPR_HOME", Path.home() / ".dapr")) / "bin" / "daprd"
COMPONENT = ROOT / "components" / "gcp" / "statestore.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificate(subject: str, key, issuer_name: x509.Name, issuer_key, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _make_certs(directory: Path) -> dict[str, Path]:
    """A CA of the test's own (as Memorystore's server CA is its own) and the
    server's certificate from it."""
    directory.mkdir(parents=True)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memorystore-test-ca")])
    ca = _certificate("memorystore-test-ca", ca_key, ca_name, ca_key, ca=True)
    server = _certificate("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    paths = {"ca": directory / "ca" / "server-ca.pem", "cert": directory / "server.crt",
             "key": directory / "server.key"}
    paths["ca"].parent.mkdir()
    paths["ca"].write_bytes(_pem(ca))
    paths["cert"].write_bytes(_pem(server))
    paths["key"].write_bytes(_pem(server_key))
    return paths


@pytest.fixture(scope="module")
def memorystore(tmp_path_factory) -> Iterator[dict]:
    """A Redis with TLS only (no plain port) and a password."""
    work = tmp_path_factory.mktemp("memorystore")
    certs = _make_certs(work / "certs")
    port, password = _free_port(), secrets.token_urlsafe(24)
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs["cert"]), "--tls-key-file", str(certs["key"]),
         "--tls-ca-cert-file", str(certs["ca"]), "--tls-auth-clients", "no",
         "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, password=password, ssl=True,
                         ssl_ca_certs=str(certs["ca"]), socket_timeout=5)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "the TLS Redis did not start"
            time.sleep(0.1)
    try:
        yield {"port": port, "password": password, "certs": certs, "work": work, "client": client}
    finally:
        client.close()
        server.terminate()
        server.wait(10)


def _components(directory: Path, host: str, auth: str) -> Path:
    """components/gcp/statestore.yaml unchanged, beside a secret store of
    the name it reads its host and AUTH string from."""
    component = yaml.safe_load(COMPONENT.read_text())
    store = component["auth"]["secretStore"]
    refs = {m["name"]: m["secretKeyRef"] for m in component["spec"]["metadata"] if "secretKeyRef" in m}
    secrets_file = directory / "secrets.json"
    directory.mkdir(parents=True)
    secrets_file.write_text(json.dumps({refs["redisHost"]["key"]: host, refs["redisPassword"]["key"]: auth}))
    shutil.copy(COMPONENT, directory / "statestore.yaml")
    (directory / "secretstore.yaml").write_text(yaml.safe_dump({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Component", "metadata": {"name": store},
        "spec": {"type": "secretstores.local.file", "version": "v1",
                 "metadata": [{"name": "secretsFile", "value": str(secrets_file)}]}}))
    return directory


class Sidecar:
    def __init__(self, resources: Path, env: dict[str, str], log: Path):
        self.http = _free_port()
        ports = [_free_port() for _ in range(3)]
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DAPR_", "APP_API"))} | env
        self.process = subprocess.Popen(
            [str(DAPRD), "--app-id", "forecaster", "--resources-path", str(resources),
             "--dapr-http-port", str(self.http), "--dapr-grpc-port", str(ports[0]),
             "--dapr-internal-grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
             "--log-level", "info"],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{self.http}"

    def ready(self, timeout: float = 40) -> bool:
        """True once the sidecar is up with its components; False if it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/v1.0/healthz/outbound", timeout=1).status_code == 204:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _start(memorystore: dict, name: str, auth: str, trust_ca: bool) -> Sidecar:
    resources = _components(memorystore["work"] / name, f"127.0.0.1:{memorystore['port']}", auth)
    env = {"SSL_CERT_DIR": str(memorystore["certs"]["ca"].parent)} if trust_ca else {}
    return Sidecar(resources, env, memorystore["work"] / f"{name}.log")


def test_the_tls_redis_refuses_plain_connections_and_unauthenticated_clients(memorystore):
    plain = redis.Redis(host="127.0.0.1", port=memorystore["port"], socket_timeout=3)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    no_password = redis.Redis(host="127.0.0.1", port=memorystore["port"], ssl=True,
                              ssl_ca_certs=str(memorystore["certs"]["ca"]), socket_timeout=3)
    with pytest.raises(redis.AuthenticationError):
        no_password.ping()


def test_the_production_state_store_works_over_tls_with_auth(memorystore):
    component = yaml.safe_load(COMPONENT.read_text())
    meta = {m["name"]: m for m in component["spec"]["metadata"]}
    assert meta["enableTLS"]["value"] == "true" and "insecureSkipTLSVerify" not in meta
    assert meta["actorStateStore"]["value"] == "true"
    sidecar = _start(memorystore, "good", memorystore["password"], trust_ca=True)
    try:
        assert sidecar.ready(), sidecar.log.read_text()[-3000:]
        with httpx.Client(base_url=f"{sidecar.url}/v1.0/state/statestore", timeout=10) as state:
            key = f"device-{secrets.token_hex(4)}"
            r = state.post("", json=[{"key": key, "value": {"window": [1.5, 2.5]}}])
            assert r.status_code == 204, r.text
            r = state.get(f"/{key}")
            assert r.status_code == 200 and r.json() == {"window": [1.5, 2.5]}
            etag = r.headers["etag"]
            # Actors write transactionally with ETags: a stale one is refused.
            def upsert(value: list[float]) -> httpx.Response:
                return state.post("/transaction", json={"operations": [{"operation": "upsert", "request": {
                    "key": key, "value": {"window": value}, "etag": etag,
                    "options": {"concurrency": "first-write"}}}]})

            r = upsert([3.5])
            assert r.status_code == 204, r.text
            r = upsert([9.9])
            assert r.status_code >= 400 and "failed to set key" in r.text, r.text
            r = state.post("", json=[{"key": key, "value": {"window": [9.9]}, "etag": etag,
                                      "options": {"concurrency": "first-write"}}])
            assert r.status_code == 409, r.text
            assert state.get(f"/{key}").json() == {"window": [3.5]}
        # In that Redis, under the app's key prefix.
        stored = memorystore["client"].hgetall(f"forecaster||{key}")
        assert json.loads(stored[b"data"]) == {"window": [3.5]}
    finally:
        sidecar.stop()


@pytest.mark.parametrize("case, reason", [("wrong-auth", "WRONGPASS"),
                                          ("untrusted-ca", "certificate signed by unknown authority")])
def test_a_wrong_auth_string_or_an_untrusted_ca_stops_the_sidecar_with_the_reason(memorystore, case, reason):
    auth = "not-the-auth-string" if case == "wrong-auth" else memorystore["password"]
    sidecar = _start(memorystore, case, auth, trust_ca=case != "untrusted-ca")
    try:
        # Its HTTP port may answer for a moment before the failed component
        # stops it, so what is asserted is that it stops, with the reason.
        try:
            code = sidecar.process.wait(40)
        except subprocess.TimeoutExpired:
            pytest.fail("the sidecar stayed up against a store it cannot use")
        assert code != 0
        log = sidecar.log.read_text()
        assert reason in log and "statestore" in log, log[-3000:]
    finally:
        sidecar.stop()
