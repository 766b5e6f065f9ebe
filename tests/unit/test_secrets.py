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


def test_a_one_shot_command_reads_the_stores_file_and_the_key_it_makes_matches_the_gateways(env, tmp_path):
    """Compose's `migrate` container: `intraday keys create` there hashes
    with the pepper of the secret `intraday`, the one the gateway reads."""
    import json
    import os

    from intraday.config import Settings, load_secrets_file

    env.setenv("INTRADAY_API_KEY_PEPPER", "")  # undone after the test, as what the file sets
    env.delenv("INTRADAY_API_KEY_PEPPER")
    env.delenv("INTRADAY_SECRETS_FILE", raising=False)
    assert load_secrets_file() == []
    path = tmp_path / "intraday.json"
    path.write_text(json.dumps({"pg-dsn": "postgresql://intraday:x@postgres:5432/intraday",
                                "api-key-pepper": "a-pepper-of-the-compose-secret-file-0123"}))
    env.setenv("INTRADAY_SECRETS_FILE", str(path))
    env.setenv("INTRADAY_PG_DSN", "postgresql://given@127.0.0.1/intraday")  # the environment wins
    assert load_secrets_file() == ["INTRADAY_API_KEY_PEPPER"]
    assert os.environ["INTRADAY_PG_DSN"] == "postgresql://given@127.0.0.1/intraday"
    assert Settings().api_key_pepper == "a-pepper-of-the-compose-secret-file-0123"


@pytest.mark.parametrize("content,reason", [(None, "No such file"), ("[1, 2]", "not a JSON object"),
                                            ("{nope", "Expecting property name")])
def test_a_bad_secrets_file_is_refused_with_the_reason(env, tmp_path, content, reason):
    from intraday.config import load_secrets_file

    path = tmp_path / "intraday.json"
    if content is not None:
        path.write_text(content)
    env.setenv("INTRADAY_SECRETS_FILE", str(path))
    with pytest.raises(ValueError, match=reason):
        load_secrets_file()
