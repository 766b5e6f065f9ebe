"""One configuration object for every process, read from INTRADAY_* variables.

Defaults describe the local stack started by `make up`; production sets the
variables (see README "Configuration"). `Settings` refuses the local defaults
for credentials-bearing settings when INTRADAY_ENVIRONMENT=production.
"""

from __future__ import annotations

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


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTRADAY_", frozen=True)

    environment: Literal["local", "production"] = "local"
    data_dir: Path = REPO_ROOT / ".data"

    # Telemetry store: chDB in-process (owned by the telemetry service) or a
    # ClickHouse server.
    telemetry_backend: Literal["chdb", "clickhouse"] = "chdb"
    clickhouse_url: str = "http://127.0.0.1:8123"
    clickhouse_database: str = "intraday"
    # A ClickHouse cluster's name (its remote_servers entry): the schema is
    # then sql/clickhouse-cluster (replicated tables per shard, Distributed
    # tables of the same names) and inserts wait for the shards.
    clickhouse_cluster: str = ""

    # Audit database (forecast requests/results, trade decisions).
    pg_dsn: str = LOCAL_PG_DSN

    # The address the services listen on: their own sidecar's (localhost)
    # only, unless a pod's port must be reached from outside it (the
    # gateway's clients, the kubelet's probes, scrapes: charts/).
    http_host: str = "127.0.0.1"

    # Public entry point, used by the CLI and benchmarks.
    gateway_url: str = "http://127.0.0.1:8000"
    # The telemetry service, for `intraday ingest` while the service holds
    # the embedded store.
    telemetry_url: str = "http://127.0.0.1:8002"

    # Forecasting. Model artifacts live in object storage under models/: a
    # directory (default: data_dir) or gs://bucket[/prefix].
    model_store: str = ""
    model_refresh_seconds: float = 30.0  # how often a forecaster re-reads which version is promoted
    # The daily training workflow's Dapr job: a six-field cron (seconds
    # first) or "@every 24h"; "" schedules none.
    training_schedule: str = "0 0 3 * * *"
    training_days: int = 30  # the scheduled training's window
    training_rows: int = 1_500_000  # and its training rows
    # Live accuracy (services/forecaster/scoring.py): the Dapr job that
    # scores published forecasts against their readings, how long after a
    # forecast's last interval its readings are waited for, and how far
    # back forecasts are looked for.
    scoring_schedule: str = "@every 1h"
    scoring_lag_hours: float = 6.0
    scoring_lookback_days: int = 14
    compiled_trees: bool = True  # serve with treelite/tl2cgen-compiled trees (same numbers, ~2x faster)
    history_days: int = 30  # telemetry window a DeviceActor keeps
    # A location whose newest temperature forecast is older than this has
    # no fresh forecast: a note on its devices' forecasts and a metric.
    weather_forecast_max_age_hours: float = 18.0
    # The Open-Meteo connector (intraday/telemetry/openmeteo.py): its forecast
    # endpoint (e.g. https://api.open-meteo.com/v1/forecast; "" = off), pulled
    # by the Dapr job `intraday-weather` on this schedule, with this model.
    weather_provider_url: str = ""
    weather_schedule: str = "@every 1h"
    weather_model: str = "best_match"
    weather_past_hours: int = 6  # the provider's recent hours, stored as observations
    baseline_days: int = 14  # days the seasonal baseline draws quantiles from
    max_horizon_hours: int = 48
    forecast_deadline_seconds: float = 60.0
    actor_idle_timeout_seconds: int = 900
    # Dynamic batching of concurrent single-device requests (forecaster):
    # at most this many devices per batch, this many batches at once, and
    # this long a batch may wait to fill once a slot is free under load.
    batch_max_size: int = 500
    batch_max_in_flight: int = 2
    batch_max_wait_ms: float = 5.0
    fleet_shard_size: int = 1000  # devices per shard of a fleet forecast (measured: README, bench/load.py)
    # Shards of one fleet forecast in flight at a time: enough that one reads
    # while another infers and a third publishes and audits (bench/load.py)
    fleet_parallel_shards: int = Field(default=3, ge=1, le=64)

    # Trading rule: forecast when the price moved at least this much since the
    # last forecast, at most once per debounce period.
    price_move_threshold_eur_mwh: float = 5.0
    price_debounce_seconds: float = 30.0
    portfolio: str = "all"  # comma-separated device ids, or "all"
    # Imbalance cost of being short / long (EUR/MWh): the position targets the
    # portfolio's c_short / (c_short + c_long) quantile (equal costs: its median).
    imbalance_cost_short_eur_mwh: float = 100.0
    imbalance_cost_long_eur_mwh: float = 100.0

    # API keys (intraday/auth.py): the server-side pepper their hashes are
    # keyed with (production must set its own, from a secret store), how long
    # the gateway trusts a verified key before asking PostgreSQL again (a
    # revoked key is refused within this time), and the key the CLI and the
    # benchmarks present: INTRADAY_API_KEY, else the file `make up` writes.
    api_key_pepper: str = LOCAL_API_KEY_PEPPER
    api_key_cache_seconds: float = 10.0
    # Requests a minute per key (bursts of up to a minute's worth) unless the
    # key has its own (`intraday keys create --rate`).
    api_rate_per_minute: int = Field(6000, gt=0)
    api_key: str = ""
    api_key_file: Path | None = None
    # Tokens from an identity provider (intraday/tokens.py), accepted beside
    # the API keys when a JWKS URL is set: the provider's published keys, the
    # issuer and audience a token must name, the claim its scopes are in.
    jwt_jwks_url: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = "intraday"
    jwt_scope_claim: str = "scope"
    # Where the fault suite arms failpoints (intraday/failpoints.py); empty:
    # off. Refused in production.
    failpoints_dir: str = ""

    # Traces of the apps (the sidecars' own go where components/config/ says):
    # the local Zipkin server, an OpenTelemetry collector (OTLP, configured by
    # the standard OTEL_EXPORTER_OTLP_* variables), Cloud Trace, or nowhere.
    traces_exporter: Literal["zipkin", "otlp", "gcp", "none"] = "zipkin"
    zipkin_url: str = "http://127.0.0.1:9411/api/v2/spans"
    trace_sample_ratio: float = Field(1.0, ge=0.0, le=1.0)  # of new traces; children follow their parent

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
