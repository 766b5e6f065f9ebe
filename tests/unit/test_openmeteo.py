"""The Open-Meteo connector (intraday/telemetry/openmeteo.py) against a local
server that answers as Open-Meteo's forecast API documents
(tests/openmeteo_fixture.py; this machine has no internet): the points it
asks for, what it makes of the answer, and the weather table it fills."""

from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest

from intraday.telemetry import openmeteo
from intraday.telemetry.weather import parse_weather
from tests.openmeteo_fixture import OpenMeteo, temperature


@pytest.fixture
def provider():
    server = OpenMeteo()
    yield server
    server.close()


DEVICES = [
    {"device_id": "a", "location": "47.4N8.5E", "latitude": 47.41, "longitude": 8.53},
    {"device_id": "b", "location": "Bern", "latitude": 46.9, "longitude": 7.4},
    {"device_id": "c", "location": "Bern", "latitude": 47.0, "longitude": 7.5},
    {"device_id": "d", "location": "Lugano", "latitude": None, "longitude": None},
]


def test_each_location_is_asked_for_at_one_point():
    p = openmeteo.plan(DEVICES)
    assert p.locations == ["47.4N8.5E", "Bern"] and p.without_coordinates == ["Lugano"]
    assert p.points == [(47.45, 8.55), (46.95, 7.45)]  # a cell's centre; a zone's devices' mean


def test_an_answer_becomes_observations_and_a_forecast_issued_at_the_fetch(provider):
    p = openmeteo.plan(DEVICES)
    fetched = datetime.now(UTC)
    r = httpx.get(provider.url, params=openmeteo.request_params(p.points, past_hours=3, forecast_hours=24))
    observed, forecast = openmeteo.parse(r.json(), p.locations, fetched)
    asked = provider.requests[-1]
    assert asked["latitude"] == "47.4500,46.9500" and asked["timeformat"] == "unixtime"
    issued = pd.Timestamp(fetched).floor("15min")
    assert (observed["timestamp"] < issued).all() and (forecast["timestamp"] >= issued).all()
    assert (forecast["issued_at"] == issued).all()
    assert len(observed) + len(forecast) == 2 * 27
    # Each value is the provider's for its grid point and hour.
    row = forecast[forecast["location"] == "Bern"].iloc[5]
    assert row["outdoor_temp_c"] == temperature(46.96, 7.46, row["timestamp"].to_pydatetime())
    # What the weather table takes, as any other batch.
    assert len(parse_weather(forecast, "forecast", fetched)) == len(forecast)
    assert len(parse_weather(observed, "observed", fetched)) == len(observed)


def test_one_point_iso_times_and_nulls(provider):
    provider.null_hours = 6
    params = {**openmeteo.request_params([(47.45, 8.55)], forecast_hours=12), "timeformat": "iso8601"}
    body = httpx.get(provider.url, params=params).json()
    assert isinstance(body, dict)  # one point: an object, not a list
    observed, forecast = openmeteo.parse(body, ["47.4N8.5E"], datetime.now(UTC))
    assert len(forecast) + len(observed) == 6 + 12 - 6  # the null hours left out
    assert forecast["timestamp"].dt.tz is not None


def test_a_refusal_or_a_strange_answer_is_the_providers_error(provider):
    r = httpx.get(provider.url, params={"latitude": "95", "longitude": "8", "hourly": "temperature_2m"})
    assert r.status_code == 400
    with pytest.raises(openmeteo.ProviderError, match="Latitude must be in range"):
        openmeteo.parse(r.json(), ["x"], datetime.now(UTC))
    with pytest.raises(openmeteo.ProviderError, match="1 locations for 2"):
        openmeteo.parse({"hourly": {"time": [], "temperature_2m": []}}, ["x", "y"], datetime.now(UTC))
    with pytest.raises(openmeteo.ProviderError, match="Fahrenheit|Celsius"):
        openmeteo.parse({"hourly_units": {"temperature_2m": "°F"},
                         "hourly": {"time": [0], "temperature_2m": [1]}}, ["x"], datetime.now(UTC))


def test_pulled_hourly_forecasts_are_read_per_quarter_hour(provider, empty_store):
    fetched = datetime.now(UTC)
    p = openmeteo.plan(DEVICES[:1])
    body = httpx.get(provider.url, params=openmeteo.request_params(p.points, 6, 48)).json()
    observed, forecast = openmeteo.parse(body, p.locations, fetched)
    empty_store.insert_weather(parse_weather(observed, "observed", fetched))
    empty_store.insert_weather(parse_weather(forecast, "forecast", fetched))
    start = fetched.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    values = empty_store.weather_window(["47.4N8.5E"], start, start + timedelta(hours=24), fetched)[0]
    assert np.isfinite(values).all() and len(values) == 96
    t0, t1 = temperature(47.46, 8.56, start), temperature(47.46, 8.56, start + timedelta(hours=1))
    assert values[0] == t0 and values[4] == t1 and values[2] == pytest.approx((t0 + t1) / 2)
    newest = empty_store.newest_forecasts(["47.4N8.5E"], fetched)
    assert newest["47.4N8.5E"] == pd.Timestamp(fetched).floor("15min")
