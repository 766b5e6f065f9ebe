"""Weather in, as it really comes (intraday/telemetry/weather.py): rows
checked with their reasons, hourly values read as quarter-hours, a forecast
used only after its issue time; on a real chDB store."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from intraday.forecasting.temperature import fill_gaps
from intraday.telemetry.registry import Refused
from intraday.telemetry.weather import parse_weather

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def store(empty_store):
    return empty_store


def hourly(location="Zurich", start="2026-03-01T00:00Z", hours=12, first=0.0) -> pd.DataFrame:
    ts = pd.date_range(start, periods=hours, freq="1h")
    return pd.DataFrame({"location": location, "timestamp": ts.strftime("%Y-%m-%dT%H:%MZ"),
                         "outdoor_temp_c": first + np.arange(hours, dtype=float)})


def test_every_bad_row_is_named_and_nothing_passes():
    rows = pd.DataFrame({
        "location": ["Zurich", "", "Zurich", "Zurich", "bad place!"],
        "timestamp": ["2026-03-01T10:00Z", "2026-03-01T10:00Z", "2026-03-01T10:10Z", "2026-03-02T10:00Z",
                      "2026-03-01T10:00Z"],
        "outdoor_temp_c": ["3.5", "2", "2", "99", "1"],
    })
    with pytest.raises(Refused) as refused:
        parse_weather(rows, "observed", NOW)
    got = {(e.row, e.reason.split(" ")[0]) for e in refused.value.errors}
    assert got == {(2, "no"), (3, "timestamp"), (4, "outdoor_temp_c"), (4, "an"), (5, "location")}
    with pytest.raises(Refused, match="issued_at"):
        parse_weather(hourly(), "forecast", NOW)  # a forecast without its issue time
    with pytest.raises(Refused, match="unknown column"):
        parse_weather(hourly().assign(wind=1), "observed", NOW)


def test_forecast_rows_keep_to_their_issue_time():
    issued = pd.Timestamp(NOW)
    rows = pd.DataFrame({"location": "Zurich",
                         "issued_at": [issued, issued, issued + pd.Timedelta(hours=1), issued],
                         "timestamp": [issued + pd.Timedelta(hours=3), issued + pd.Timedelta(days=17),
                                       issued + pd.Timedelta(hours=3), issued - pd.Timedelta(days=2)],
                         "outdoor_temp": [1.0, 1.0, 1.0, 1.0]})
    with pytest.raises(Refused) as refused:
        parse_weather(rows, "forecast", NOW)
    # Too far ahead, issued later than now, long before its issue time.
    assert {e.row for e in refused.value.errors} == {2, 3, 4}
    ok = parse_weather(rows.iloc[:1], "forecast", NOW)
    assert ok.loc[0, "kind"] == "forecast" and ok.loc[0, "outdoor_temp_c"] == 1.0


def test_copies_are_dropped_and_conflicting_copies_refused():
    rows = pd.concat([hourly(hours=3), hourly(hours=2)], ignore_index=True)
    assert len(parse_weather(rows, "observed", NOW)) == 3
    clash = pd.concat([hourly(hours=3), hourly(hours=1, first=5.0)], ignore_index=True)
    with pytest.raises(Refused) as refused:
        parse_weather(clash, "observed", NOW)
    assert [(e.row, e.id) for e in refused.value.errors] == [(4, "Zurich")]


def test_coordinates_name_their_grid_cell():
    rows = pd.DataFrame({"latitude": [47.41], "longitude": [8.53], "timestamp": ["2026-03-01T10:00Z"],
                         "outdoor_temp_c": [2.0]})
    assert parse_weather(rows, "observed", NOW).loc[0, "location"] == "47.4N8.5E"


def test_fill_gaps_interpolates_short_gaps_and_holds_an_hour_out():
    v = np.full((1, 20), np.nan)
    v[0, [0, 4, 8]] = [0.0, 4.0, 8.0]
    v[0, 19] = 100.0  # 11 steps after the last: a gap too long to bridge
    filled = fill_gaps(v, max_gap=4, hold=3)[0]
    assert filled[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8]
    assert np.isnan(filled[12:19]).all() and filled[19] == 100.0


def test_hourly_weather_is_read_per_quarter_hour_as_known_then(store):
    store.insert_weather(parse_weather(hourly(hours=12), "observed", NOW))
    issued = NOW
    forecast = pd.DataFrame({"location": "Zurich", "issued_at": issued,
                             "timestamp": pd.date_range(NOW + timedelta(hours=1), periods=6, freq="1h"),
                             "outdoor_temp_c": 20.0 + np.arange(6)})
    store.insert_weather(parse_weather(forecast, "forecast", NOW))
    start = datetime(2026, 3, 1, 8, tzinfo=UTC)
    # Before the forecast was issued: the observations, per quarter-hour, held to 11:45.
    before = store.weather_window(["Zurich"], start, start + timedelta(hours=6), NOW - timedelta(minutes=15))
    assert before[0, :16].tolist() == [8 + k / 4 for k in range(12)] + [11.0] * 4
    assert np.isnan(before[0, 16:]).all()
    # From its issue time on: the forecast continues where the observations end.
    after = store.weather_window(["Zurich"], start, start + timedelta(hours=6), NOW)
    assert after[0, 12] == 11.0 and after[0, 20] == 20.0 and after[0, 16] == pytest.approx(15.5)
    assert after[0, 22] == pytest.approx(20.5)
