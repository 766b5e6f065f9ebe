"""The services read their secrets (the audit DSN, the API keys' pepper)
from the Dapr secret store at startup (clients/secrets.py): locally the
file `make up` writes, readable only through the sidecars of the services
that need it."""

from __future__ import annotations

import glob
from pathlib import Path

import httpx

from intraday.config import Settings
from tests.stack import ROOT, dapr_headers


def _secret(stack, port: int, name: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/v1.0/secrets/secretstore/{name}", headers=dapr_headers(stack),
                     timeout=10)


def test_the_services_read_their_secrets_from_the_store(stack):
    settings = Settings(data_dir=stack["data_dir"])
    r = _secret(stack, 3500, "api-key-pepper")  # the gateway's sidecar
    assert r.status_code == 200 and r.json() == {"api-key-pepper": settings.api_key_pepper}
    assert _secret(stack, 3501, "pg-dsn").json() == {"pg-dsn": settings.pg_dsn}
    assert (ROOT / ".data" / "secrets.json").stat().st_mode & 0o077 == 0  # the file is the owner's only
    for service in ("gateway", "forecaster", "trading"):
        log = Path(sorted(glob.glob(str(ROOT / ".dapr" / "logs" / f"{service}_app_*.log")))[-1]).read_text()
        assert "from the secret store secretstore" in log, service


def test_a_service_without_secrets_cannot_read_them(stack):
    r = _secret(stack, 3502, "pg-dsn")  # telemetry is outside the store's scopes
    assert r.status_code != 200 and "pg-dsn" not in r.text.replace("pg-dsn not", "")
    assert "postgresql://" not in r.text


def test_each_sidecar_reads_only_the_secrets_its_app_needs(stack):
    """Secret scoping (each app's configuration, deploy/app_configs.py): the
    pepper the gateway hashes API keys with is refused to the forecaster's
    and the trading service's sidecars, which read the audit DSN only."""
    settings = Settings(data_dir=stack["data_dir"])
    for port in (3501, 3503):  # forecaster, trading
        assert _secret(stack, port, "pg-dsn").json() == {"pg-dsn": settings.pg_dsn}
        r = _secret(stack, port, "api-key-pepper")
        assert r.status_code == 403, (port, r.status_code, r.text)
        assert settings.api_key_pepper not in r.text
    assert _secret(stack, 3500, "pg-dsn").status_code == 200  # the gateway reads both
