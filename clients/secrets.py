"""A service's secrets from its Dapr secret store, read once at startup
(before the settings are), so that in production the audit database's DSN
and the API keys' pepper live in a secret store (GCP Secret Manager), not in
the pod's environment. Locally the store is the file `make up` writes.

INTRADAY_SECRET_STORE names the store component (empty: the settings come
from the environment, as for the CLI). Production refuses to start without
one, and refuses those settings given as plain environment variables.
(One-shot commands without a sidecar read the store's file instead:
intraday.config.load_secrets_file.)
"""

from __future__ import annotations

import os
import time

import httpx

from clients.sidecar import sidecar_url, token_headers
from intraday.config import SECRET_SETTINGS as SETTINGS  # secret name in the store -> the setting it fills

NEEDED = {"gateway": ("pg-dsn", "api-key-pepper"), "forecaster": ("pg-dsn",), "trading": ("pg-dsn",)}
SIDECAR_WAIT_SECONDS = 60.0


class SecretsRefused(SystemExit):
    """The service must not start: the reason is its exit message."""


def load(service: str) -> list[str]:
    """Put the service's secrets from the store into its settings'
    environment; the settings loaded (logged by the caller, once logging
    is set up)."""
    store = os.environ.get("INTRADAY_SECRET_STORE", "")
    production = os.environ.get("INTRADAY_ENVIRONMENT", "local") == "production"
    needed = NEEDED.get(service, ())
    if not store:
        if production and needed:
            raise SecretsRefused(f"{service}: production reads {', '.join(needed)} from a Dapr secret store; "
                                 "set INTRADAY_SECRET_STORE to its component name")
        return []
    plain = [SETTINGS[name] for name in needed if SETTINGS[name] in os.environ]
    if production and plain:
        raise SecretsRefused(f"{service}: {', '.join(plain)} given in the environment; production reads them "
                             f"from the secret store {store!r} only")
    if not needed:
        return []
    with httpx.Client(base_url=sidecar_url(), headers=token_headers(), timeout=10) as client:
        _wait_for_sidecar(client)
        for name in needed:
            r = client.get(f"/v1.0/secrets/{store}/{name}")
            if r.status_code != 200:
                raise SecretsRefused(f"{service}: secret {name!r} not readable from {store!r}: "
                                     f"{r.status_code} {r.text[:300]}")
            os.environ[SETTINGS[name]] = r.json()[name]
    return [SETTINGS[name] for name in needed]


def _wait_for_sidecar(client: httpx.Client) -> None:
    """The sidecar starts beside the app: wait until it has loaded its
    components (its outbound health)."""
    deadline = time.monotonic() + SIDECAR_WAIT_SECONDS
    while True:
        try:
            if client.get("/v1.0/healthz/outbound").status_code == 204:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SecretsRefused(f"no sidecar at {sidecar_url()} within {SIDECAR_WAIT_SECONDS:.0f} s "
                                 "to read secrets from")
        time.sleep(0.2)
