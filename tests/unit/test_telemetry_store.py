"""The ClickHouse store on chDB: schema migrations, the 15-minute view,
windows for one device and the fleet, weather as known at a time."""

import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from intraday.telemetry import store as store_module
from intraday.telemetry import window_batch
from intraday.telemetry.backends import ChdbBackend
from intraday.telemetry.fleet import fleet_devices
from intraday.telemetry.ingest import ingest_batch
from intraday.telemetry.store import DEVICE_COLUMNS, MigrationError, TelemetryStore

T0 = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = TelemetryStore(ChdbBackend(tmp_path_factory.mktemp("chdb")))
    assert "001_power_consumption.sql" in s.migrate()
    assert s.migrate() == []  # re-runnable: nothing left to apply
    s.upsert_devices(fleet_devices(6, seed=1)[DEVICE_COLUMNS])
    yield s
    s.close()


def test_an_edited_migration_is_refused(tmp_path, monkeypatch):
    sql = tmp_path / "sql"
    shutil.copytree(store_module.SQL_DIR, sql)
    monkeypatch.setattr(store_module, "SQL_DIR", sql)
    s = TelemetryStore(ChdbBackend(tmp_path / "db"))
    try:
        s.migrate()
        original = (sql / "003_weather.sql").read_text()
        (sql / "003_weather.sql").write_text(original + "\n-- edited\n")
        with pytest.raises(MigrationError, match="003_weather.sql changed"):
            s.migrate()
        (sql / "099_more.sql").write_text("CREATE TABLE IF NOT EXISTS {db}.extra (x UInt8) ENGINE = Log")
        (sql / "003_weather.sql").write_text(original)
        assert s.migrate() == ["099_more.sql"]
    finally:
        s.close()


def test_15_minute_view_equals_a_pandas_resample_of_the_raw_data(store):
    """Irregular readings, several batches, a month boundary, then merged
    parts: the view's mean, heating and hot-water sums match pandas."""
    rng = np.random.default_rng(4)
    start = datetime(2026, 1, 31, 20, tzinfo=UTC)
    ts = start + pd.to_timedelta(np.sort(rng.uniform(0, 8 * 3600, 3000)), unit="s")
    raw = pd.DataFrame({
        "device_id": rng.choice(["hp-0001", "hp-0002"], len(ts)),
        "timestamp": pd.DatetimeIndex(ts).floor("ms"),
        "power": rng.uniform(0, 6, len(ts)),
        "heating_electricity": rng.uniform(0, 4, len(ts)),
        "dhw_electricity": rng.uniform(0, 2, len(ts)),
    }).drop_duplicates(["device_id", "timestamp"])
    for k, part in enumerate(np.array_split(np.arange(len(raw)), 5)):
        ingest_batch(store, raw.iloc[part], source="test", batch_id=f"resample-{k}")

    def view() -> pd.DataFrame:
        return store.query(
            "SELECT device_id, toUnixTimestamp(interval_start) AS t, sum(power_sum) / sum(samples) AS power,"
            " sum(heating_sum) AS heating, sum(dhw_sum) AS dhw, sum(samples) AS n"
            " FROM {db}.power_consumption_15min WHERE device_id IN ('hp-0001', 'hp-0002')"
            " AND interval_start >= '2026-01-31 20:00:00' AND interval_start < '2026-02-01 04:00:00'"
            " GROUP BY device_id, interval_start ORDER BY device_id, interval_start"
        ).to_pandas()

    g = raw.set_index("timestamp").groupby("device_id").resample("15min")
    expected = pd.DataFrame({
        "power": g["power"].mean(), "heating": g["heating_electricity"].sum(),
        "dhw": g["dhw_electricity"].sum(), "n": g["power"].count(),
    }).reset_index()
    expected = expected[expected.n > 0].reset_index(drop=True)
    grid = pd.date_range(start, periods=32, freq="15min", tz="UTC")
    matrix = expected.pivot(index="device_id", columns="timestamp", values="power").reindex(columns=grid)
    parts = store.query("SELECT count() FROM system.parts WHERE active AND database = '{db}'"
                        " AND table = 'power_consumption_15min'").column(0)[0].as_py()
    assert parts > 1  # the batches' quarter-hours are split over parts
    for _ in range(2):
        got = view()
        np.testing.assert_array_equal(got.device_id, expected.device_id)
        np.testing.assert_array_equal(pd.to_datetime(got.t, unit="s", utc=True), expected.timestamp)
        np.testing.assert_allclose(got[["power", "heating", "dhw"]], expected[["power", "heating", "dhw"]])
        np.testing.assert_array_equal(got.n, expected.n)
        # The windows place the stored rows without a GROUP BY: split
        # quarter-hours must still come out as one mean.
        for ids in (["hp-0001", "hp-0002"], None):
            w = store.fleet_window(start, start + timedelta(hours=8), ids)
            rows = [list(w.device_ids).index(d) for d in ("hp-0001", "hp-0002")]
            np.testing.assert_allclose(w.values[rows], matrix.to_numpy())
        store.query("OPTIMIZE TABLE {db}.power_consumption_15min FINAL")


def test_fleet_window_is_one_matrix_with_explicit_gaps(store):
    ts = pd.date_range(T0, periods=96, freq="15min", tz="UTC")
    rows = pd.DataFrame({"device_id": "hp-0003", "timestamp": ts, "power": np.arange(96.0)})
    rows = rows[(rows.index < 40) | (rows.index >= 44)]  # one hour missing
    ingest_batch(store, rows, source="test", batch_id="fw-3")
    ingest_batch(store, pd.DataFrame({"device_id": "hp-0004", "timestamp": ts[:10], "power": 1.0}),
                 source="test", batch_id="fw-4")
    w = store.fleet_window(T0, T0 + timedelta(days=1), ["hp-0004", "hp-0003", "hp-0006"])
    assert list(w.device_ids) == ["hp-0004", "hp-0003", "hp-0006"] and w.values.shape == (3, 96)
    np.testing.assert_array_equal(w.values[0, :10], 1.0)
    assert np.isnan(w.values[0, 10:]).all() and np.isnan(w.values[2]).all()
    assert np.isnan(w.values[1, 40:44]).all() and w.values[1, 44] == 44.0
    one = store.window("hp-0003", T0, T0 + timedelta(days=1))
    np.testing.assert_array_equal(one.values, w.values[1], strict=True)
    everyone = store.fleet_window(T0, T0 + timedelta(days=1))
    assert list(everyone.device_ids) == sorted(fleet_devices(6, seed=1).device_id)
    np.testing.assert_array_equal(everyone.values[2], w.values[1], strict=True)


def test_recent_windows_are_the_whole_windows_cut_and_survive_the_wire(store):
    """What a fleet shard is shipped (POST /windows with `cut`): the whole
    windows cut where the features start reading, with each device's first
    reading and its older gaps counted in the query, split quarter-hours
    (two batches in one) included; as float32 Arrow it reads back equal."""
    start = T0 + timedelta(days=10)
    ts = pd.date_range(start, periods=4 * 96, freq="15min", tz="UTC")
    early = pd.DataFrame({"device_id": "hp-0005", "timestamp": ts[5:300:7], "power": 0.1 + np.arange(43.0)})
    late = pd.DataFrame({"device_id": "hp-0006", "timestamp": ts[200:], "power": 2.0})
    split = pd.DataFrame({"device_id": "hp-0005", "timestamp": ts[5] + timedelta(minutes=5), "power": [9.0]})
    for k, rows in enumerate((early, late, split)):
        ingest_batch(store, rows, source="test", batch_id=f"rw-{k}")
    ids = ["hp-0006", "hp-0005", "hp-0001"]
    end = start + 4 * timedelta(days=1)
    whole = store.fleet_window(start, end, ids)
    for k in (0, 1, 5, 100, 250, 383):
        cut = start + k * timedelta(minutes=15)
        fleet, first, missing = store.recent_windows(start, cut, end, ids)
        shipped = window_batch.decode(window_batch.encode(fleet, first, missing, k > 0), len(ids))
        assert shipped.start == cut and shipped.cut == (k > 0)
        for row, (got, want) in enumerate(zip(shipped.windows(ids), (whole.device(r) for r in range(3)),
                                              strict=True)):
            expected = want.cut(k)
            assert got.device_id == ids[row] and got.start == expected.start
            np.testing.assert_array_equal(got.values, expected.values, strict=True)
            assert (got.first_index(), got.missing) == (expected.first_index(), expected.missing), (k, row)
    _, first, missing = store.recent_windows(start, start + timedelta(days=2), end, ids)
    assert list(first) == [200 - 192, 5 - 192, 192] and missing[2] == 192


def test_portfolio_actuals_are_the_sum_of_the_fleet_window(store):
    """What the dashboard draws against the portfolio forecast: per
    quarter-hour the sum of the devices that reported, and how many did."""
    ts = pd.date_range(T0, periods=8, freq="5min", tz="UTC")  # finer readings: two quarter-hours and a bit
    ingest_batch(store, pd.DataFrame({"device_id": "hp-0005", "timestamp": ts, "power": np.arange(8.0)}),
                 source="test", batch_id="pa-5")
    start, end = T0 - timedelta(hours=1), T0 + timedelta(days=1)
    total, devices = store.portfolio_actuals(start, end)
    w = store.fleet_window(start, end)
    assert total.shape == devices.shape == (w.values.shape[1],)
    reported = ~np.isnan(w.values)
    np.testing.assert_array_equal(devices, reported.sum(axis=0))
    np.testing.assert_allclose(total[devices > 0], np.nansum(w.values, axis=0)[devices > 0])
    assert np.isnan(total[devices == 0]).all() and devices[:4].sum() == 0
    assert devices[4] >= 3 and total[4] == pytest.approx(np.nansum(w.values[:, 4]))
    with pytest.raises(ValueError, match="empty window"):
        store.portfolio_actuals(end, start)


def test_fleet_window_gives_unregistered_devices_rows_too(store):
    """Raw inserts bypass ingest's device check; their readings must not be
    dropped from the fleet's matrix."""
    store.insert_readings(pd.DataFrame({
        "device_id": ["zz-stray"], "timestamp": [pd.Timestamp(T0 + timedelta(days=3))],
        "power": [2.5], "heating_electricity": [2.0], "dhw_electricity": [0.5],
    }))
    w = store.fleet_window(T0 + timedelta(days=3), T0 + timedelta(days=3, hours=1))
    assert w.device_ids[-1] == "zz-stray" and w.values[-1, 0] == 2.5
    assert np.isnan(w.values[:-1]).all()


def test_query_results_stay_valid_after_later_queries(store):
    """Results are read in place from chDB's buffer; they must own it, so
    that later queries and garbage collection leave them intact."""
    import gc

    first = store.query("SELECT number AS n, toFloat64(number) * 0.5 AS x FROM numbers(3000000)")
    expected = first.to_pandas().copy()
    for _ in range(5):
        store.query("SELECT number * 3 AS n, toFloat64(number) AS x FROM numbers(3000000)")
        gc.collect()
    pd.testing.assert_frame_equal(first.to_pandas(), expected)


def test_weather_is_what_was_known_at_the_time(store):
    t = pd.date_range(T0, periods=8, freq="15min", tz="UTC")
    as_of = t[4]

    def rows(kind, issued_at, temp):
        return pd.DataFrame({"location": "DE-Koeln", "kind": kind, "timestamp": t,
                             "issued_at": issued_at, "outdoor_temp_c": temp})

    weather = pd.concat([
        rows("observed", t, 1.0),
        rows("forecast", t[0] - pd.Timedelta("6h"), 2.0),
        rows("forecast", t[0] - pd.Timedelta("1h"), 3.0),
        rows("forecast", t[6], 9.0),  # issued after as_of: must not be seen
    ])
    store.insert_weather(weather)
    got = store.weather_window(["DE-Koeln", "DE-Nowhere"], t[0], t[-1] + pd.Timedelta("15min"), as_of)
    # Observed up to as_of, then the newest forecast issued by then.
    np.testing.assert_array_equal(got[0], [1, 1, 1, 1, 1, 3, 3, 3])
    assert np.isnan(got[1]).all()


def test_devices_and_lookup(store):
    devices = fleet_devices(6, seed=1)
    assert [d["device_id"] for d in store.devices()] == list(devices.device_id)
    assert store.device("hp-0002")["building_type"] == devices.building_type[1]
    assert store.device("hp-9999") is None
    with pytest.raises(ValueError, match="invalid device id"):
        store.device("x'; DROP TABLE devices")


def test_batches_not_yet_sent_to_the_actors_are_listed_until_marked(store):
    """The telemetry service catches up actor windows for batches stored
    while it was down: the ledger says which, by the readings' time. (The
    other tests' readings are all before February.)"""
    t = datetime(2026, 6, 10, tzinfo=UTC)
    recent = pd.DataFrame({"device_id": "hp-0005", "power": 1.0,
                           "timestamp": pd.date_range(t, periods=4, freq="15min", tz="UTC")})
    old = recent.assign(timestamp=recent.timestamp - pd.Timedelta(days=5))
    now = t + timedelta(days=1)
    ingest_batch(store, recent, source="file", batch_id="recent", now=now)
    ingest_batch(store, old, source="file", batch_id="old", now=now)
    since = t - timedelta(days=2)
    pending = store.actors_pending(since)
    assert [p["batch_id"] for p in pending] == ["recent"]
    assert pending[0]["touched"] == {"hp-0005": ["2026-06-10T00:00:00Z", "2026-06-10T00:45:00Z"]}
    assert store.actors_refreshed_at("recent") is None
    store.mark_actors_refreshed({"recent": 1})
    assert store.actors_pending(since) == [] and store.actors_refreshed_at("recent") is not None
    assert [p["batch_id"] for p in store.actors_pending(t - timedelta(days=10))] == ["old"]
