from datetime import UTC, datetime, timedelta

import pytest

from intraday.errors import InvalidRequest
from intraday.forecasting.request import check_forecast_start, forecast_id, horizon_intervals
from intraday.timeutil import next_quarter_hour

NOW = datetime(2026, 3, 1, 12, 7, 30, tzinfo=UTC)


def test_horizon_hours_to_intervals():
    assert horizon_intervals(24, 48) == 96
    assert horizon_intervals(0.25, 48) == 1
    for bad in (0, -1, 48.25, 0.1):
        with pytest.raises(InvalidRequest):
            horizon_intervals(bad, 48)


def test_forecast_start_must_be_aligned_and_near():
    assert next_quarter_hour(NOW) == datetime(2026, 3, 1, 12, 15, tzinfo=UTC)
    assert check_forecast_start(datetime(2026, 3, 1, 12, 15), NOW).tzinfo is not None
    with pytest.raises(InvalidRequest, match="quarter-hour"):
        check_forecast_start(datetime(2026, 3, 1, 12, 10, tzinfo=UTC), NOW)
    with pytest.raises(InvalidRequest, match="outside"):
        check_forecast_start(NOW.replace(minute=0, second=0) + timedelta(days=30), NOW)


def test_forecast_id_is_a_function_of_device_start_horizon_model():
    s = datetime(2026, 3, 1, 12, 15, tzinfo=UTC)
    assert forecast_id("hp-1", s, 96, "baseline") == forecast_id("hp-1", s, 96, "baseline")
    ids = {forecast_id("hp-1", s, 96, "baseline"), forecast_id("hp-2", s, 96, "baseline"),
           forecast_id("hp-1", s, 48, "baseline"), forecast_id("hp-1", s, 96, "v2"),
           forecast_id("hp-1", s + timedelta(minutes=15), 96, "baseline")}
    assert len(ids) == 5
