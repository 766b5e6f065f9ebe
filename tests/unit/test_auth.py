"""API keys' pure parts: scopes and the per-key rate limiter
(intraday/auth.py; keys in PostgreSQL are tested in tests/integration)."""

from __future__ import annotations

import pytest

from intraday.auth import SCOPES, Forbidden, Principal, RateLimited, RateLimiter, parse_scopes


def test_scopes_are_parsed_and_checked():
    assert parse_scopes("all") == sorted(SCOPES)
    both = ["forecast:read", "prices:publish"]
    assert parse_scopes(" forecast:read , forecast:read,prices:publish") == both
    for bad in ("", "forecast:write", "all,forecast:read"):
        with pytest.raises(ValueError):
            parse_scopes(bad)
    desk = Principal("desk", "0123456789ab", frozenset({"forecast:read"}))
    desk.require("forecast:read")
    with pytest.raises(Forbidden):
        desk.require("prices:publish")


def test_the_rate_limiter_admits_a_minutes_worth_then_refills_at_the_rate():
    limiter = RateLimiter()
    for _ in range(6):
        limiter.take("k1", 6, now=100.0)  # a burst of a minute's worth
    with pytest.raises(RateLimited) as refused:
        limiter.take("k1", 6, now=100.0)
    assert refused.value.retry_after == pytest.approx(10.0)  # one token every 10 s
    limiter.take("k2", 6, now=100.0)  # other keys have their own bucket
    with pytest.raises(RateLimited):
        limiter.take("k1", 6, now=109.0)
    limiter.take("k1", 6, now=110.5)
    with pytest.raises(RateLimited):
        limiter.take("k1", 6, now=110.5)


def test_a_burst_takes_what_the_bucket_holds_and_the_rest_waits_for_the_refill():
    from intraday.auth import take_tokens

    bucket, admitted, retry_after = take_tokens(None, 6, now=100.0, wanted=10)  # full: a minute's worth
    assert admitted == 6 and bucket == (0.0, 100.0) and retry_after == pytest.approx(10.0)
    bucket, admitted, retry_after = take_tokens(bucket, 6, now=125.0, wanted=3)  # 2.5 tokens back
    assert admitted == 2 and bucket[0] == pytest.approx(0.5) and retry_after == pytest.approx(5.0)
    bucket, admitted, retry_after = take_tokens(bucket, 6, now=1000.0, wanted=1)  # never past full
    assert admitted == 1 and bucket[0] == pytest.approx(5.0) and retry_after == 0.0
    # A clock a little behind the bucket's (another replica's) refills nothing, takes nothing back.
    assert take_tokens((3.0, 200.0), 6, now=199.0, wanted=1)[:2] == ((2.0, 200.0), 1)


def test_production_settings_refuse_local_credentials_and_plaintext():
    from intraday.config import Settings

    good = {"environment": "production", "api_key_pepper": "p" * 40, "traces_exporter": "otlp",
            "pg_dsn": "postgresql://intraday@db.internal/intraday?sslmode=verify-full"}
    Settings(**good)
    local_dsn = "postgresql://intraday@127.0.0.1:5432/intraday"
    for change, message in (({"pg_dsn": local_dsn}, "INTRADAY_PG_DSN"),
                            ({"pg_dsn": "postgresql://intraday@db.internal/intraday"}, "TLS"),
                            ({"api_key_pepper": "intraday-local-pepper"}, "PEPPER"),
                            ({"api_key_pepper": "short"}, "PEPPER"),
                            ({"telemetry_backend": "clickhouse", "clickhouse_url": "http://ch"}, "https"),
                            ({"traces_exporter": "zipkin"}, "TRACES"),
                            ({"failpoints_dir": "/tmp/failpoints"}, "FAILPOINTS"),
                            ({"workflow_patches_withheld": "run-started"}, "PATCHES_WITHHELD"),
                            ({"jwt_jwks_url": "http://idp.internal/jwks", "jwt_issuer": "https://i"},
                             "JWKS"),
                            ({"jwt_jwks_url": "https://idp.example/jwks"}, "JWT_ISSUER")):
        with pytest.raises(ValueError, match=message):
            Settings(**{**good, **change})
    Settings(**good, jwt_jwks_url="https://idp.example/jwks", jwt_issuer="https://idp.example")
    Settings()  # local defaults stay fine locally
