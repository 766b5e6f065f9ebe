"""One configuration object for every process, read from INTRADAY_* variables.

Defaults describe the local stack started by `make up`; production sets the
variables (the docs' settings reference). `Settings` refuses the local defaults
for credentials-bearing settings when INTRADAY_ENVIRONMENT=production.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_PG_DSN = "postgresql://intraday@127.0.0.1:5432/intraday"
LOCAL_API_KEY_PEPPER = "intraday-local-pepper"  # refused in production
# The settings that are secrets: their name in a secret store -> the setting (clients/secrets.py).
SECRET_SETTINGS = {"pg-dsn": "INTRADAY_PG_DSN", "api-key-pepper": "INTRADAY_API_KEY_PEPPER"}


class Settings(BaseSettings):
    """Every process's settings, from `INTRADAY_<NAME>` variables. Each field's
    docstring is its description: the docs' settings reference is generated
    from them (docs/gen_pages.py)."""

    model_config = SettingsConfigDict(env_prefix="INTRADAY_", frozen=True, use_attribute_docstrings=True)

    environment: Literal["local", "production"] = "local"
    """`production` refuses to start with local defaults or without TLS: the local PostgreSQL DSN or one
    without `sslmode=require`/`verify-ca`/`verify-full`, the local API-key pepper (or one under 32
    characters), a plain-HTTP ClickHouse URL, the local Zipkin, failpoints."""
    data_dir: Path = REPO_ROOT / ".data"
    """Redis, PostgreSQL, the scheduler, chDB and the logs of the local stack."""

    telemetry_backend: Literal["chdb", "clickhouse"] = "chdb"
    """The telemetry store: chDB in-process (owned by the telemetry service) or a ClickHouse server."""
    clickhouse_url: str = "http://127.0.0.1:8123"
    """The ClickHouse server (`clickhouse` backend; https in production)."""
    clickhouse_database: str = "intraday"
    """Its database."""
    clickhouse_cluster: str = ""
    """A ClickHouse cluster's name (its remote_servers entry): the schema is then sql/clickhouse-cluster
    (replicated tables per shard, Distributed tables of the same names) and inserts wait for the
    shards."""

    pg_dsn: str = LOCAL_PG_DSN
    """The audit database (forecasts, trade decisions, trainings, API keys); read from the secret store
    where one is configured."""

    http_host: str = "127.0.0.1"
    """The address the services listen on: their own sidecar's (localhost) only, unless a pod's port
    must be reached from outside it (`0.0.0.0`: the gateway in Compose, every pod in `charts/` for the
    probes and scrapes)."""

    gateway_url: str = "http://127.0.0.1:8000"
    """The public entry point, for the CLI and the benchmarks."""
    telemetry_url: str = "http://127.0.0.1:8002"
    """The telemetry service, where `intraday ingest` sends files while the service holds the chDB
    store."""

    model_store: str = ""
    """The object store of model artifacts (under models/): a directory or `gs://bucket[/prefix]`;
    empty: the data directory."""
    model_refresh_seconds: float = 30.0
    """How often a forecaster re-reads which version is promoted."""
    training_schedule: str = "0 0 3 * * *"
    """The daily training workflow's Dapr job: a six-field cron (seconds first) or `@every 24h`; empty
    schedules none."""
    training_days: int = 30
    """The scheduled training's window."""
    training_rows: int = 1_500_000
    """The scheduled training's sampled rows."""
    scoring_schedule: str = "@every 1h"
    """Live accuracy (services/forecaster/scoring.py): the Dapr job that scores published forecasts
    against their readings; empty: none."""
    watchdog_schedule: str = "@every 30s"
    """The workflow watchdog's Dapr job (services/forecaster/watchdog.py): how often instances past
    their deadline are looked for; empty: none."""
    watchdog_grace_seconds: float = 30.0
    """How long past its deadline an instance may run before the watchdog mends it."""
    workflow_patches_withheld: str = ""
    """Workflow patches (workflows/patches.py) this process runs without, as the release before them
    did (comma-separated; the deploy test). Refused in production."""
    scoring_lag_hours: float = 6.0
    """How long after a forecast's last interval its readings are waited for before it is scored."""
    scoring_lookback_days: int = 14
    """How far back unscored forecasts are looked for."""
    compiled_trees: bool = True
    """Serve with treelite/tl2cgen-compiled trees (the same numbers, about twice as fast); false:
    LightGBM's predictor."""
    history_days: int = 30
    """Days of quarter-hour power a DeviceActor keeps."""
    weather_forecast_max_age_hours: float = 18.0
    """A location whose newest temperature forecast is older has no fresh forecast: a note on its
    devices' forecasts and a metric."""
    weather_provider_url: str = ""
    """The Open-Meteo forecast endpoint the telemetry service pulls temperature forecasts from
    (intraday/telemetry/openmeteo.py, e.g. https://api.open-meteo.com/v1/forecast); empty: off."""
    weather_schedule: str = "@every 1h"
    """The pull's Dapr job (`intraday-weather`) schedule."""
    weather_model: str = "best_match"
    """The provider's weather model."""
    weather_past_hours: int = 6
    """The provider's recent hours, stored as observations."""
    baseline_days: int = 14
    """Days the seasonal baseline draws its quantiles from."""
    max_horizon_hours: int = 48
    """The longest horizon a request may ask for."""
    forecast_deadline_seconds: float = 60.0
    """How long a request with `wait=true` waits for its forecast."""
    actor_idle_timeout_seconds: int = 900
    """An idle DeviceActor deactivates after this long."""
    batch_max_size: int = 500
    """Dynamic batching of concurrent single-device requests (forecaster): devices per batch at most."""
    batch_max_in_flight: int = 2
    """Batches at once."""
    batch_max_wait_ms: float = 5.0
    """How long a batch may wait to fill once a slot is free under load."""
    fleet_shard_size: int = 1000
    """Devices per shard of a fleet forecast (at most 2,000: the telemetry `POST /windows` limit;
    measured in bench/load.py)."""
    fleet_parallel_shards: int = Field(default=3, ge=1, le=64)
    """Shards of one fleet forecast in flight at a time: one reads while another infers and a third
    publishes and audits (on 10,000 devices 2, 3 and 10 took the same time within the spread; 3 keeps
    the forecaster's memory bounded)."""

    price_move_threshold_eur_mwh: float = 5.0
    """The trading rule: a new forecast when the price moved at least this much since the last one."""
    price_debounce_seconds: float = 30.0
    """And at most once in this period."""
    portfolio: str = "all"
    """The device ids the trading service forecasts, comma-separated, or `all`."""
    imbalance_cost_short_eur_mwh: float = 100.0
    """Imbalance cost of being short (EUR/MWh): the position targets the portfolio's
    short / (short + long) quantile (equal costs: its median)."""
    imbalance_cost_long_eur_mwh: float = 100.0
    """Imbalance cost of being long (EUR/MWh)."""

    api_key_pepper: str = LOCAL_API_KEY_PEPPER
    """The server-side secret API keys are hashed with (intraday/auth.py); production sets its own, 32
    characters or more, from a secret store."""
    api_key_cache_seconds: float = 10.0
    """How long the gateway trusts a verified key before asking PostgreSQL again (a revoked key is
    refused within this time)."""
    api_rate_per_minute: int = Field(6000, gt=0)
    """Requests a minute per key (bursts of up to a minute's worth) unless the key has its own
    (`intraday keys create --rate`)."""
    api_key: str = ""
    """The key the CLI and the benchmarks present to the gateway."""
    api_key_file: Path | None = None
    """Where that key is read from when `INTRADAY_API_KEY` is empty; default: `api-key` in the data
    directory (`make up` writes it)."""
    jwt_jwks_url: str = ""
    """Tokens from an identity provider (intraday/tokens.py), accepted beside the API keys when set: the
    provider's published keys (https and an issuer in production)."""
    jwt_issuer: str = ""
    """The issuer a token must name."""
    jwt_audience: str = "intraday"
    """The audience a token must name."""
    jwt_scope_claim: str = "scope"
    """The claim a token's scopes are in (OAuth 2.0's space-separated list)."""
    failpoints_dir: str = ""
    """Where the fault suite arms failpoints (intraday/failpoints.py); empty: off. Refused in
    production."""

    traces_exporter: Literal["zipkin", "otlp", "gcp", "none"] = "zipkin"
    """Where the apps' spans go (the sidecars' own go where components/config/ says): the Zipkin server,
    an OpenTelemetry collector (OTLP, configured by the standard `OTEL_EXPORTER_OTLP_*` variables),
    Cloud Trace, or nowhere."""
    zipkin_url: str = "http://127.0.0.1:9411/api/v2/spans"
    """The Zipkin server's span endpoint."""
    trace_sample_ratio: float = Field(1.0, ge=0.0, le=1.0)
    """The share of new traces the apps sample (a trace begun upstream follows its parent's
    decision)."""

    @property
    def model_store_url(self) -> str:
        return self.model_store or str(self.data_dir)

    @property
    def client_api_key(self) -> str:
        """The key this process presents to the gateway ('' if none)."""
        if self.api_key:
            return self.api_key
        path = self.api_key_file or self.data_dir / "api-key"
        return path.read_text().strip() if path.is_file() else ""

    @property
    def app_api_token(self) -> str:
        """The token the apps' sidecars present to them (APP_API_TOKEN, else
        the local stack's file): what a direct caller of an app needs."""
        token = os.environ.get("APP_API_TOKEN", "")
        path = self.data_dir / "app-api-token"
        return token or (path.read_text().strip() if path.is_file() else "")

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "telemetry"

    @property
    def target_quantile(self) -> float:
        from intraday.trading.rules import cost_optimal_quantile

        return cost_optimal_quantile(self.imbalance_cost_short_eur_mwh, self.imbalance_cost_long_eur_mwh)

    def _refuse_unsafe_production(self) -> None:
        """Production runs with its own credentials, over TLS where data
        leaves the pod, and exports traces somewhere other than localhost."""
        if self.pg_dsn == LOCAL_PG_DSN:
            raise ValueError("INTRADAY_PG_DSN must be set in production")
        if not re.search(r"sslmode=(require|verify-ca|verify-full)", self.pg_dsn):
            raise ValueError("INTRADAY_PG_DSN must ask for TLS in production (sslmode=require, verify-ca "
                             "or verify-full)")
        if self.api_key_pepper == LOCAL_API_KEY_PEPPER or len(self.api_key_pepper) < 32:
            raise ValueError("INTRADAY_API_KEY_PEPPER must be set in production (32 characters or more)")
        if self.telemetry_backend == "clickhouse" and not self.clickhouse_url.startswith("https://"):
            raise ValueError("INTRADAY_CLICKHOUSE_URL must be https:// in production")
        if self.traces_exporter == "zipkin" and "127.0.0.1" in self.zipkin_url:
            raise ValueError("INTRADAY_TRACES_EXPORTER: production exports to otlp or gcp (or a remote "
                             "Zipkin), not the local one")
        if self.jwt_jwks_url and not (self.jwt_jwks_url.startswith("https://") and self.jwt_issuer):
            raise ValueError("INTRADAY_JWT_JWKS_URL must be https:// in production, with INTRADAY_JWT_ISSUER")
        if self.failpoints_dir:
            raise ValueError("INTRADAY_FAILPOINTS_DIR (the fault suite's failpoints) must not be set in "
                             "production")
        if self.workflow_patches_withheld:
            raise ValueError("INTRADAY_WORKFLOW_PATCHES_WITHHELD (the deploy test's older release) must "
                             "not be set in production")

    @model_validator(mode="after")
    def _refuse_local_defaults_in_production(self) -> Settings:
        if self.environment == "production":
            self._refuse_unsafe_production()
        if self.imbalance_cost_short_eur_mwh <= 0 or self.imbalance_cost_long_eur_mwh <= 0:
            raise ValueError("INTRADAY_IMBALANCE_COST_SHORT_EUR_MWH and _LONG_ must be positive")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def load_secrets_file() -> list[str]:
    """For one-shot commands run without a sidecar (`intraday db migrate`,
    `intraday keys create` in Compose's `migrate` container): the secrets
    from the secret store's own file, INTRADAY_SECRETS_FILE (a JSON object
    of secret name to value; Compose mounts its secret `intraday` there),
    into the environment the settings read, so that a key made there is
    hashed with the pepper the gateway reads. Nothing when unset; a setting
    given in the environment wins. The settings loaded; ValueError with the
    reason for a file that is missing or not a JSON object of strings."""
    path = os.environ.get("INTRADAY_SECRETS_FILE", "")
    if not path:
        return []
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"INTRADAY_SECRETS_FILE={path}: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"INTRADAY_SECRETS_FILE={path}: not a JSON object of secret name to string")
    loaded = []
    for name, setting in SECRET_SETTINGS.items():
        if name in data and setting not in os.environ:
            os.environ[setting] = data[name]
            loaded.append(setting)
    get_settings.cache_clear()
    return loaded
