from datetime import UTC, datetime, timedelta

import numpy as np

from actors.state import DeviceState, StateSerializer
from intraday.forecasting.types import TelemetryWindow
from intraday.timeutil import QUARTER_HOUR

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_merge_extends_keeps_newer_values_and_trims():
    old = TelemetryWindow("hp", T0, [1.0, 2.0, np.nan, 4.0])
    new = TelemetryWindow("hp", T0 + 2 * QUARTER_HOUR, [30.0, np.nan, 50.0])
    m = old.merged(new, keep_intervals=4)
    assert m.start == T0 + QUARTER_HOUR
    np.testing.assert_array_equal(m.values, [2.0, 30.0, 4.0, 50.0])  # NaN never overwrites data
    assert m.end == T0 + 5 * QUARTER_HOUR


def test_device_state_round_trips_exactly():
    values = np.array([0.1 + 0.2, np.nan, 1e-300, -0.0, 12345.678901234567])
    state = DeviceState("hp-7", TelemetryWindow("hp-7", T0, values), "baseline",
                        T0 + timedelta(seconds=1.5))
    s = StateSerializer()
    back = s.deserialize(s.serialize(state))
    assert isinstance(back, DeviceState)
    assert back.window.start == state.window.start and back.refreshed_at == state.refreshed_at
    # Bit for bit, NaN included (a window holds its values at float32 precision).
    assert back.window.values.tobytes() == state.window.values.tobytes()
    assert back.window.values.tobytes() == values.astype(np.float32).astype(np.float64).tobytes()


def test_messages_keep_iso_strings_as_strings():
    s = StateSerializer()
    msg = {"forecast_start": "2026-03-01T00:00:00Z", "n": 96}
    assert s.deserialize(s.serialize(msg)) == msg


def test_a_window_until_a_time_keeps_the_intervals_before_it():
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from intraday.forecasting.types import TelemetryWindow

    t0 = datetime(2026, 11, 30, tzinfo=UTC)
    w = TelemetryWindow("hp-1", t0, np.arange(8.0))
    assert w.until(t0 + timedelta(minutes=45)).values.tolist() == [0.0, 1.0, 2.0]
    assert w.until(t0 + timedelta(minutes=44)).end == t0 + timedelta(minutes=30)  # partial: left out
    assert w.until(t0 + timedelta(days=1)).values.tolist() == w.values.tolist()
    assert w.until(t0 - timedelta(hours=1)).values.size == 0
