"""The serving path's pure half: one device's forecast from its actor window
with the trained model, and the baseline named as the fallback."""

from datetime import UTC, datetime

import numpy as np
import pytest

from intraday.errors import InsufficientHistory
from intraday.forecasting import engine, fallback
from intraday.forecasting.features import DAY, Rows, design_matrix
from intraday.forecasting.model import OUTPUTS, QuantileModel
from intraday.forecasting.modelstore import LocalObjectStore, ModelStore, UnknownModel
from intraday.forecasting.types import TelemetryWindow
from intraday.timeutil import QUARTER_HOUR


def _device(data, d: int, end: int):
    panel = data.panel
    window = TelemetryWindow(str(panel.device_ids[d]), panel.start, panel.power[d, :end])
    attrs = panel.attributes.iloc[d].to_dict()
    return window, attrs


def _temps(data, d: int, origin: int, horizon: int) -> np.ndarray:
    """The temperature an actor sees: observed before the origin, the
    forecast as issued by then after it."""
    obs = data.panel.outdoor_temp[d, :origin]
    fc = data.temperature.forecast(np.full(horizon, d), np.full(horizon, origin), origin + np.arange(horizon))
    return np.concatenate([obs, fc])


T0 = datetime(2026, 1, 5, tzinfo=UTC)


def test_one_device_from_its_window_equals_the_fleet_batch(data, model):
    origin = data.panel.intervals - DAY
    start = data.panel.timestamp(origin)
    batch = model.predict_rows(data.panel, Rows.grid([3], [origin], DAY), data.temperature)
    window, attrs = _device(data, 3, origin)  # the actor's window ends at forecast_start
    f = engine.forecast(model, window, start, DAY, attrs, _temps(data, 3, origin, DAY))
    np.testing.assert_allclose(f.p50, batch.p50, rtol=1e-6)
    np.testing.assert_allclose(f.p90, batch.p90, rtol=1e-6)
    d = f.to_dict()
    assert d["model_version"] == model.manifest.get("version", "unversioned")
    assert d["notes"] == [] and d["history_days"] > 7
    assert d["data_window"]["end"] == d["forecast_start"]


def test_a_batch_of_devices_gives_each_device_its_single_forecast_bit_for_bit(data, model):
    """What the fleet workflow relies on: a shard's forecasts are the ones
    the single-device path (the actor) would make, whatever the batch;
    devices with no temperature, too little history or another window ride
    in the same call. (Only a device with too little history of its own
    reads the batch: its peers' forecasts.)"""
    origin = data.panel.intervals - DAY
    start = data.panel.timestamp(origin)
    devices = range(8)
    windows, attrs, temps = [], [], []
    for d in devices:
        window, a = _device(data, d, origin)
        windows.append(window)
        attrs.append(a)
        temps.append(None if d == 2 else _temps(data, d, origin, DAY))
    windows[5] = TelemetryWindow(windows[5].device_id, windows[5].start + (origin - 20) * QUARTER_HOUR,
                                 windows[5].values[origin - 20 :])  # too little history
    temps[5] = None
    windows[6] = TelemetryWindow(windows[6].device_id, windows[6].start + 3 * DAY * QUARTER_HOUR,
                                 windows[6].values[3 * DAY :])  # a shorter window
    temps[6] = temps[6][3 * DAY :]
    batch = engine.forecast_many(model, windows, start, DAY, attrs, temps)
    for d in devices:
        if d == 5:  # alone it is refused; in a batch its peers stand in (the test below)
            assert fallback.PEER_NOTE in batch[d].notes[0]
            with pytest.raises(InsufficientHistory, match="at least 48"):
                engine.forecast(model, windows[d], start, DAY, attrs[d], temps[d])
            continue
        single = engine.forecast(model, windows[d], start, DAY, attrs[d], temps[d])
        for k in ("p10", "p50", "p90", "mean"):
            assert np.array_equal(getattr(batch[d], k), getattr(single, k)), (d, k)
        assert batch[d].to_dict() == single.to_dict()
    assert "no temperature forecast" in " ".join(batch[2].notes)
    assert not np.array_equal(batch[0].p50, batch[1].p50)  # devices differ, nothing was shared
    seasonal = engine.forecast_many(None, windows[:2], start, DAY, attrs[:2], temps[:2])
    assert [f.to_dict() for f in seasonal] == [engine.forecast(None, w, start, DAY).to_dict()
                                               for w in windows[:2]]


def test_without_a_model_the_baseline_serves_and_says_so(data):
    origin = data.panel.intervals - DAY
    window, attrs = _device(data, 0, origin)
    f = engine.forecast(None, window, data.panel.timestamp(origin), DAY, attrs)
    assert f.model_version == "baseline"
    assert f.notes == (engine.FALLBACK_NOTE,)


def test_a_new_device_is_forecast_with_a_note_and_half_a_day_is_too_little(data, model):
    origin = data.panel.intervals - DAY
    window, attrs = _device(data, 1, origin)
    recent = TelemetryWindow(window.device_id, window.start + (origin - 2 * DAY) * QUARTER_HOUR,
                             window.values[origin - 2 * DAY :])
    f = engine.forecast(model, recent, data.panel.timestamp(origin), DAY, attrs)
    assert f.history_days == pytest.approx(2.0) and "short history" in f.notes[0]
    assert "no temperature forecast" in f.notes[1]  # none was given
    tiny = TelemetryWindow(window.device_id, window.start + (origin - 20) * QUARTER_HOUR,
                           window.values[origin - 20 :])
    with pytest.raises(InsufficientHistory, match="at least 48"):
        engine.forecast(model, tiny, data.panel.timestamp(origin), DAY, attrs)


def test_model_store_versions_name_their_content_and_refuse_damage(tmp_path, model):
    store = ModelStore(LocalObjectStore(tmp_path))
    blob = model.to_bytes()
    v = store.save(blob, model.manifest)
    assert v.endswith(__import__("hashlib").sha256(blob).hexdigest()[:12])
    assert store.artifact(v) == blob and store.promoted() is None
    store.promote(v)
    assert store.promoted() == v
    (tmp_path / "models" / v / "model.zip").write_bytes(blob[:-10])
    with pytest.raises(UnknownModel, match="checksum"):
        store.artifact(v)
    with pytest.raises(UnknownModel):
        store.promote("20990101T000000Z-0123456789ab")
    assert store.promoted() == v
    assert not list(tmp_path.rglob("*.partial"))


def test_compiled_trees_predict_exactly_what_lightgbm_predicts(data, model, tmp_path):
    copy = QuantileModel.from_bytes(model.to_bytes())
    assert copy.compile(tmp_path)  # gcc builds the libraries
    origin = data.panel.intervals - DAY
    n = len(data.panel.device_ids)
    rows = Rows.grid(np.arange(n), np.full(n, origin), DAY)
    X, _ = design_matrix(data.panel, rows, model.vocabulary, data.temperature)
    np.testing.assert_array_equal(copy.raw(X), model.raw(X))
    np.testing.assert_array_equal(copy.raw(X[:DAY]), model.raw(X[:DAY]))
    # A second process finds the libraries built: nothing is compiled again.
    built = sorted(p.stat().st_mtime_ns for p in tmp_path.glob("*.so"))
    assert QuantileModel.from_bytes(model.to_bytes()).compile(tmp_path)
    assert sorted(p.stat().st_mtime_ns for p in tmp_path.glob("*.so")) == built and len(built) == len(OUTPUTS)


def test_a_device_back_from_an_outage_is_forecast_from_its_own_profile(data, model):
    """Eight days without a reading before the start: the model cannot
    forecast it (no week of recent history), but its window holds weeks of
    readings, so it gets its daily profile with a wider band and a note,
    the same on the single path and in a batch, with or without a model."""
    origin = data.panel.intervals - DAY
    start = data.panel.timestamp(origin)
    window, attrs = _device(data, 3, origin)
    values = window.values.copy()
    values[origin - 8 * DAY : origin] = np.nan  # the outage
    out = TelemetryWindow(window.device_id, window.start, values)
    f = engine.forecast(model, out, start, DAY, attrs)
    assert np.isfinite(f.p50).all() and (f.p10 <= f.p50).all() and (f.p50 <= f.p90).all()
    assert "own daily profile" in f.notes[0] and f.model_version == engine.model_version(model)
    # Its profile: each quarter-hour of the day the median of that quarter-hour on the days read.
    days = values[: origin - 8 * DAY][: (origin - 8 * DAY) // DAY * DAY].reshape(-1, DAY)
    assert f.p50[0] == pytest.approx(np.nanmedian(days[:, (window.index_of(start)) % DAY]))
    batch = engine.forecast_many(model, [window, out], start, DAY, [attrs, attrs], [None, None])
    assert batch[1].to_dict() == f.to_dict() and "own daily profile" not in " ".join(batch[0].notes)
    # No model served: the seasonal fallback reads 14 days, so it still serves
    # this device; after 13 days without a reading it cannot, and the profile does.
    assert engine.forecast(None, out, start, DAY).notes == (engine.FALLBACK_NOTE,)
    longer = values.copy()
    longer[origin - 13 * DAY : origin] = np.nan
    profile = engine.forecast(None, TelemetryWindow(window.device_id, window.start, longer), start, DAY)
    assert "own daily profile" in profile.notes[0] and profile.model_version == "baseline"


def test_a_device_with_no_readings_is_forecast_from_its_peers_in_a_batch(data, model):
    """A device that never reported (just installed) cannot be forecast on
    its own; in a batch (a fleet forecast's shard) it gets its peers'
    forecasts scaled by rated power, with their spread as its band and a
    note, so the portfolio counts it. Alone it is still refused."""
    origin = data.panel.intervals - DAY
    start = data.panel.timestamp(origin)
    devices = [_device(data, d, origin) for d in range(4)]
    window, attrs = devices[0]
    new = TelemetryWindow("brand-new", window.start, np.full(len(window.values), np.nan))
    new_attrs = {**attrs, "rated_power_kw": 2 * float(attrs["rated_power_kw"])}
    windows = [w for w, _ in devices[1:]] + [new]
    attributes = [a for _, a in devices[1:]] + [new_attrs]
    *peers, f = engine.forecast_many(model, windows, start, DAY, attributes, [None] * 4)
    assert "3 other devices, scaled by rated power" in f.notes[0]
    assert np.isfinite(f.p50).all() and (f.p10 <= f.p50).all() and (f.p50 <= f.p90).all()
    own = 2 * float(attrs["rated_power_kw"])
    scale = np.array([own / float(a["rated_power_kw"]) for a in attributes[:3]])
    expected = np.mean([p.mean * s for p, s in zip(peers, scale, strict=True)], axis=0)
    np.testing.assert_allclose(f.mean, expected)
    # Its band holds every peer's scaled median: how different devices are is what is unknown of it.
    assert (f.p90 >= np.max([p.p50 * s for p, s in zip(peers, scale, strict=True)], axis=0) - 1e-9).all()
    with pytest.raises(InsufficientHistory):
        engine.forecast(model, new, start, DAY, new_attrs)
    # Two peers are too few: it stays refused.
    *_, alone = engine.forecast_many(model, windows[1:], start, DAY, attributes[1:], [None] * 3)
    assert isinstance(alone, InsufficientHistory)


def test_windows_cut_to_the_days_the_features_read_give_the_same_forecasts_bit_for_bit(data, model):
    """A fleet shard is shipped only the last READ_DAYS of its windows (and
    per device where its first reading was and how many older quarter-hours
    had none): each device's forecast is the actor's from its whole window,
    to the bit, with the same history and gaps on record; a device that
    needs its whole window (its own profile) says so."""
    origin = data.panel.intervals - DAY
    start = data.panel.timestamp(origin)
    cut_at = origin - engine.READ_DAYS * DAY
    whole, attrs, temps = [], [], []
    for d in range(6):
        window, a = _device(data, d, origin)
        whole.append(window)
        attrs.append(a)
        temps.append(_temps(data, d, origin, DAY))
    values = whole[1].values.copy()
    values[: cut_at + 2 * DAY] = np.nan  # first reading after the cut: 6 days of history
    whole[1] = TelemetryWindow(whole[1].device_id, whole[1].start, values)
    values = whole[2].values.copy()
    values[cut_at - 5 * DAY : cut_at - DAY] = np.nan  # gaps only in the part not shipped
    whole[2] = TelemetryWindow(whole[2].device_id, whole[2].start, values)
    values = whole[3].values.copy()
    values[origin - 8 * DAY : origin] = np.nan  # an outage: its own profile
    whole[3] = TelemetryWindow(whole[3].device_id, whole[3].start, values)
    cut = [w.cut(cut_at) for w in whole]
    assert cut[0].first_reading < 0 and cut[2].missing == whole[2].missing > cut[0].missing
    shipped = engine.forecast_many(model, cut, start, DAY, attrs, [t[cut_at:] for t in temps], peers=False)
    assert isinstance(shipped[3], engine.NeedsWholeWindow) and shipped[3].device_id == whole[3].device_id
    for d in (0, 1, 2, 4, 5):
        single = engine.forecast(model, whole[d], start, DAY, attrs[d], temps[d])
        for k in ("p10", "p50", "p90", "mean"):
            assert np.array_equal(getattr(shipped[d], k), getattr(single, k)), (d, k)
        assert shipped[d].to_dict() == single.to_dict()
    assert shipped[0].history_days > engine.READ_DAYS and 5 < shipped[1].history_days < 7
    assert "own daily profile" in engine.forecast(model, whole[3], start, DAY, attrs[3], temps[3]).notes[0]


def test_a_window_cut_keeps_its_first_reading_and_gaps():
    values = np.array([np.nan, np.nan, 1.0, np.nan, 2.0, 3.0, np.nan, 4.0])
    w = TelemetryWindow("hp-1", T0, values)
    for i in range(len(values)):
        c = w.cut(i)
        assert c.start == T0 + i * QUARTER_HOUR and np.array_equal(c.values, values[i:], equal_nan=True)
        assert c.missing == w.missing == 4 and c.first_index() == 2 - i
        assert c.cut(1).first_index() == 1 - i and c.cut(1).missing == 4
    empty = TelemetryWindow("hp-2", T0, np.full(4, np.nan)).cut(3)
    assert empty.first_index() == len(empty.values) == 1 and empty.missing == 4
    # Held at float32 precision, so a float32 wire loses nothing.
    assert TelemetryWindow("hp-1", T0, [0.1]).values[0] == float(np.float32(0.1))
