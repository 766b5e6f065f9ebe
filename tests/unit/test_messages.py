"""The topics' messages against their JSON Schemas (schemas/), and the
compact `forecasts` message: its size, and what a consumer reads back."""

import json
from datetime import UTC, datetime, timedelta

import jsonschema
import numpy as np
import orjson
import pytest

from intraday import messages
from intraday.forecasting.types import Forecast

START = datetime(2026, 12, 7, tzinfo=UTC)


def _forecast(level_kw: float, n: int = 96, seed: int = 0) -> Forecast:
    rng = np.random.default_rng(seed)
    p50 = level_kw * (0.5 + rng.random(n))
    return Forecast(device_id="hp-0001", forecast_start=START, model_version="lgbm-2026-12-06",
                    p10=p50 * 0.7, p50=p50, p90=p50 * 1.4, mean=p50 * 1.03,
                    data_window_start=START - timedelta(days=30), data_window_end=START,
                    history_days=29.96, notes=("short history",))


def _wire(message: dict) -> dict:
    """What a consumer receives: the producer's orjson bytes, parsed."""
    return json.loads(orjson.dumps(message, option=orjson.OPT_SERIALIZE_NUMPY))


@pytest.mark.parametrize("level_kw", [0.4, 3.0, 15.0, 60.0])
def test_a_96_interval_forecast_message_is_under_3_kb_and_valid(level_kw):
    f = _forecast(level_kw)
    raw = orjson.dumps(messages.forecast_message("fc-1", f, 3, "trader", "2026-12-06T10:00:00Z",
                                                 "a" * 32), option=orjson.OPT_SERIALIZE_NUMPY)
    assert len(raw) <= 3072, f"{len(raw)} bytes at {level_kw} kW"
    messages.validate("forecasts", json.loads(raw))


def test_a_consumer_reads_the_forecast_back_to_the_watt():
    f = _forecast(3.0, n=37, seed=1)
    back = messages.read_forecast(_wire(messages.forecast_message("fc-1", f, None, "t", "x", None)))
    for name in ("mean", "p10", "p50", "p90"):
        assert np.max(np.abs(getattr(back, name) - getattr(f, name))) <= 0.0005 + 1e-9  # half a watt
    assert (back.forecast_start, back.horizon_intervals, back.notes) == (START, 37, f.notes)
    assert (back.data_window_start, back.data_window_end) == (f.data_window_start, f.data_window_end)


def test_the_single_path_publishes_what_the_fleet_path_publishes():
    """The workflow publishes from the request's result (Forecast.to_result);
    the fleet's shard from the Forecast: one message for the same forecast."""
    f = _forecast(5.0)
    result = f.to_result("fc-1", 2, "trader", "2026-12-06T10:00:00Z", "b" * 32)
    assert messages.forecast_message_of(result) == _wire(
        messages.forecast_message("fc-1", f, 2, "trader", "2026-12-06T10:00:00Z", "b" * 32))


def test_bands_stay_ordered_after_rounding():
    f = _forecast(0.001, seed=2)  # a device at standby: watts round to 0 and 1
    m = _wire(messages.forecast_message("fc-1", f, 0, "t", "x", None))
    assert all(a <= b <= c for a, b, c in zip(m["p10"], m["p50"], m["p90"], strict=True))


@pytest.mark.parametrize(("change", "why"), [
    ({"schema_version": 1}, "an older version"),
    ({"p50": [1.5] * 96}, "fractional watts"),
    ({"p10": [-1] * 96}, "negative power"),
    ({"unit": "kW"}, "another unit"),
    ({"intervals": []}, "a version 1 field"),
])
def test_the_forecast_schema_refuses(change, why):
    m = {**_wire(messages.forecast_message("fc-1", _forecast(1.0), 0, "t", "x", None)), **change}
    with pytest.raises(jsonschema.ValidationError):
        messages.validate("forecasts", m)


def test_read_forecast_refuses_a_message_it_cannot_read():
    m = _wire(messages.forecast_message("fc-1", _forecast(1.0), 0, "t", "x", None))
    with pytest.raises(ValueError, match="schema_version"):
        messages.read_forecast({**m, "schema_version": 1})
    with pytest.raises(ValueError, match="count"):
        messages.read_forecast({**m, "count": 95})


def test_every_topic_has_a_schema_and_it_is_a_valid_schema():
    for topic in messages.TOPICS:
        jsonschema.Draft202012Validator.check_schema(messages.schema(topic))
    with pytest.raises(KeyError, match="no schema"):
        messages.schema("nonsense")


@pytest.mark.parametrize(("topic", "good", "bad"), [
    ("prices", {"price_eur_mwh": 81.5, "market": "DE-intraday", "at": "2026-12-06T10:00:00Z"},
     {"price": 81.5}),
    ("telemetry", {"batch_id": "b-1", "readings": [
        {"device_id": "hp-0001", "timestamp": "2026-12-06T10:00:00Z", "power": 1.2}]},
     {"readings": [{"device_id": "hp-0001", "power": 1.2}]}),
    ("weather", {"forecasts": [{"latitude": 47.3, "longitude": 8.5, "issued_at": "2026-12-06T06:00:00Z",
                                "timestamp": "2026-12-07T10:00:00Z", "outdoor_temp_c": -2.5}]},
     {"forecasts": [{"location": "zurich", "timestamp": "2026-12-07T10:00:00Z", "outdoor_temp_c": 1.0}]}),
])
def test_the_input_topics_schemas(topic, good, bad):
    messages.validate(topic, good)
    with pytest.raises(jsonschema.ValidationError):
        messages.validate(topic, bad)
