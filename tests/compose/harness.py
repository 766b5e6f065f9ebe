"""docker-compose.yml run with podman and podman-compose, with the override
for a machine that cannot pull images (deploy/podman/compose.local.yml; the
images from `make images`). Used by tests/compose and bench/compose.py.

podman 4.3 runs no health check on its own (that needs systemd) and
ignores `depends_on: condition: service_healthy` (podman >= 4.6), so
`wait_healthy` runs each container's health check itself until all pass,
as the engine would; containers that start before what they need exit and
come back by their restart policy, as they would on any engine; the
one-shot `migrate` waits for PostgreSQL itself (`intraday db migrate --wait`)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "intraday"  # docker-compose.yml's `name`
FILES = ("-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "deploy" / "podman" / "compose.local.yml"))
IMAGES = ("intraday:latest", "intraday-forecaster:latest", "intraday-telemetry-chdb:latest",
          "intraday-dapr:1.18.2", "intraday-local/redis:latest", "intraday-local/postgres:latest",
          "intraday-local/prometheus:latest", "intraday-local/zipkin:latest")
GATEWAY = "http://127.0.0.1:8000"
PUBLISHED = {"gateway": 8000, "zipkin": 9411, "prometheus": 9090}
PG_PASSWORD = (ROOT / "deploy" / "compose-postgres-password").read_text().strip()
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf")}


def run(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ...: exit {r.returncode}\n"
                           f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def podman(*args: str, **kw) -> subprocess.CompletedProcess:
    return run("podman", *args, **kw)


def compose(*args: str, **kw) -> subprocess.CompletedProcess:
    return run(str(ROOT / ".venv" / "bin" / "podman-compose"), *FILES, *args, **kw)


def make_key(name: str) -> str:
    """An all-scopes API key, made as docs/deployment.md says (the one-shot
    `migrate` container, which reads the Compose secret's file)."""
    r = compose("run", "-T", "--rm", "migrate", "intraday", "keys", "create", name, "--scopes", "all",
                timeout=300)
    return r.stdout.strip().splitlines()[-1]


def missing_images() -> list[str]:
    return [i for i in IMAGES if podman("image", "exists", i, check=False).returncode != 0]


def containers(all_: bool = True) -> list[dict]:
    """The project's containers (podman ps --format json)."""
    args = ["ps", "--format", "json", "--filter", f"label=io.podman.compose.project={PROJECT}"]
    return json.loads(podman(*args, *(["--all"] if all_ else [])).stdout or "[]")


def service_of(c: dict) -> str:
    return str(c["Labels"].get("com.docker.compose.service") or c["Labels"].get("io.podman.compose.service"))


def name_of(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def inspect(service: str) -> dict:
    """`podman inspect` of a service's container."""
    return dict(json.loads(podman("inspect", name_of(service)).stdout)[0])


def has_healthcheck(name: str) -> bool:
    found = json.loads(podman("inspect", name).stdout)[0]
    return bool((found.get("Config") or {}).get("Healthcheck"))


def wait_healthy(timeout: float = 600, progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Until every long-running container is running and its health check
    passes, and the one-shot `migrate` exited 0; seconds since the call at
    which each service was first seen healthy."""
    t0 = time.monotonic()
    healthy: dict[str, float] = {}
    last = ""
    while True:
        pending = []
        for c in containers():
            service, name = service_of(c), c["Names"][0]
            if service in healthy:
                continue
            if service == "migrate":
                if c["State"] == "exited" and c.get("ExitCode", 1) != 0:  # a one-shot: it will not come back
                    raise RuntimeError(f"migrate exited {c.get('ExitCode')}:\n"
                                       f"{podman('logs', name, check=False).stderr[-2000:]}")
                if c["State"] == "exited":
                    healthy[service] = time.monotonic() - t0
                else:
                    pending.append(service)
                continue
            ok = c["State"] == "running" and (
                not has_healthcheck(name)
                or podman("healthcheck", "run", name, check=False, timeout=30).returncode == 0)
            if ok:
                healthy[service] = time.monotonic() - t0
            else:
                pending.append(service)
        if healthy and not pending:
            return healthy
        waited = time.monotonic() - t0
        if waited > timeout:
            raise TimeoutError(f"not healthy after {timeout:.0f} s: {', '.join(sorted(pending))}")
        line = f"{len(healthy)} healthy, waiting for {', '.join(sorted(pending))}"
        if progress and line != last:
            progress(f"{waited:5.0f} s: {line}")
            last = line
        time.sleep(2)


def ip_of(service: str) -> str:
    """A container's address on the project's network (reached from this host)."""
    networks = inspect(service)["NetworkSettings"]["Networks"]
    return str(next(iter(networks.values()))["IPAddress"])


def pg_dsn() -> str:
    return f"postgresql://intraday:{PG_PASSWORD}@{ip_of('postgres')}:5432/intraday"


def leftovers() -> dict[str, list[str]]:
    """What of the project is still there: containers, pods, networks."""
    label = f"label=io.podman.compose.project={PROJECT}"
    names = {
        "containers": podman("ps", "--all", "--format", "{{.Names}}", "--filter", label).stdout.split(),
        "pods": podman("pod", "ps", "--format", "{{.Name}}", "--filter", f"name={PROJECT}").stdout.split(),
        "networks": [n for n in podman("network", "ls", "--format", "{{.Name}}").stdout.split()
                     if n.startswith(f"{PROJECT}_")],
    }
    return {k: v for k, v in names.items() if v}


def down(volumes: bool = True) -> None:
    compose("down", *(["--volumes"] if volumes else []), "--timeout", "20", timeout=600, check=False)
