"""Where the services' secrets come from (clients/secrets.py): production
refuses to start without a secret store, or with the secrets in its plain
environment; locally without a store the settings stay as given."""

from __future__ import annotations

import pytest

from clients import secrets


@pytest.fixture
def env(monkeypatch):
    for name in ("INTRADAY_SECRET_STORE", "INTRADAY_ENVIRONMENT", *secrets.SETTINGS.values()):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_production_refuses_to_start_without_a_secret_store(env):
    env.setenv("INTRADAY_ENVIRONMENT", "production")
    with pytest.raises(secrets.SecretsRefused, match="INTRADAY_SECRET_STORE"):
        secrets.load("gateway")


def test_production_refuses_secrets_given_in_the_environment(env):
    env.setenv("INTRADAY_ENVIRONMENT", "production")
    env.setenv("INTRADAY_SECRET_STORE", "secretstore")
    env.setenv("INTRADAY_PG_DSN", "postgresql://audit@db/intraday?sslmode=require")
    with pytest.raises(secrets.SecretsRefused, match="INTRADAY_PG_DSN given in the environment"):
        secrets.load("forecaster")


def test_a_service_without_secrets_needs_no_store(env):
    env.setenv("INTRADAY_ENVIRONMENT", "production")
    assert secrets.load("telemetry") == []


def test_locally_without_a_store_the_settings_stay_as_given(env):
    env.setenv("INTRADAY_PG_DSN", "postgresql://someone@127.0.0.1:5432/other")
    assert secrets.load("gateway") == []
    import os

    assert os.environ["INTRADAY_PG_DSN"] == "postgresql://someone@127.0.0.1:5432/other"


def test_an_unreachable_store_stops_the_service_with_the_reason(env):
    env.setenv("INTRADAY_SECRET_STORE", "secretstore")
    env.setenv("DAPR_HTTP_PORT", "1")  # nothing listens there
    env.setattr(secrets, "SIDECAR_WAIT_SECONDS", 0.5)
    with pytest.raises(secrets.SecretsRefused, match="no sidecar"):
        secrets.load("trading")
