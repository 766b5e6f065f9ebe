"""Ingest: every row accounted for, bad rows quarantined with a reason,
batches idempotent, files resumable."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from intraday.errors import BatchConflict, InvalidRequest
from intraday.telemetry.backends import ChdbBackend
from intraday.telemetry.fleet import fleet_devices
from intraday.telemetry.ingest import ingest_batch, records_frame
from intraday.telemetry.ingest_files import ingest_file
from intraday.telemetry.store import DEVICE_COLUMNS, TelemetryStore

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def store(tmp_path):
    s = TelemetryStore(ChdbBackend(tmp_path / "chdb"))
    s.migrate()
    s.upsert_devices(fleet_devices(3, seed=1)[DEVICE_COLUMNS])
    yield s
    s.close()


def readings(device="hp-0001", start="2026-02-01", n=8, power=1.0):
    return pd.DataFrame({
        "device_id": device,
        "timestamp": pd.date_range(start, periods=n, freq="15min", tz="UTC"),
        "power": power + np.arange(n, dtype=float),
        "heating_electricity": 0.5,
        "dhw_electricity": 0.25,
    })


def stored(store) -> pd.DataFrame:
    return store.query(
        "SELECT device_id, count() AS n, sum(power) AS power FROM {db}.power_consumption GROUP BY device_id"
        " ORDER BY device_id"
    ).to_pandas()


def aggregated_samples(store) -> int:
    return int(store.query("SELECT sum(samples) FROM {db}.power_consumption_15min").column(0)[0].as_py())


def accounted(r) -> bool:
    return r.rows == r.inserted + r.duplicates + r.already_stored + r.quarantined


def test_the_same_batch_twice_is_stored_once(store):
    first = ingest_batch(store, readings(), source="test", batch_id="b-1", now=NOW)
    assert first.status == "accepted" and first.inserted == 8
    again = ingest_batch(store, readings(), source="test", batch_id="b-1", now=NOW)
    assert again.status == "duplicate_batch" and again.inserted == 8  # the first run's report
    # The same rows under another batch id (a producer that lost its ack).
    other = ingest_batch(store, readings(), source="test", batch_id="b-2", now=NOW)
    assert other.status == "accepted" and other.inserted == 0 and other.already_stored == 8
    assert stored(store).n.tolist() == [8] and aggregated_samples(store) == 8


def test_a_batch_id_reused_for_other_content_is_refused_and_writes_nothing(store):
    ingest_batch(store, readings(), source="test", batch_id="b-1", now=NOW)
    with pytest.raises(BatchConflict, match="different content"):
        ingest_batch(store, readings(start="2026-02-02"), source="test", batch_id="b-1", now=NOW)
    assert stored(store).n.tolist() == [8]


def test_a_retry_after_a_crash_before_the_ledger_stores_nothing_twice(store, monkeypatch):
    real = store.record_batch

    def crash(record):
        raise RuntimeError("killed before the ledger entry")

    monkeypatch.setattr(store, "record_batch", crash)
    batch = pd.concat([readings(), readings("hp-0002")], ignore_index=True)
    batch.loc[3, "power"] = -1.0  # one row to quarantine as well
    with pytest.raises(RuntimeError):
        ingest_batch(store, batch, source="test", batch_id="b-crash", now=NOW)
    monkeypatch.setattr(store, "record_batch", real)
    retry = ingest_batch(store, batch, source="test", batch_id="b-crash", now=NOW)
    assert retry.already_stored == 15 and retry.quarantined == 1 and accounted(retry)
    assert stored(store).n.tolist() == [7, 8] and aggregated_samples(store) == 15
    assert len(store.quarantined("b-crash")) == 1


T = "2026-02-01T00:00:00Z"
BAD_ROWS = [
    ({"device_id": "", "timestamp": T, "power": 1}, "missing_device_id"),
    ({"device_id": "hp 1; drop", "timestamp": T, "power": 1}, "invalid_device_id"),
    ({"device_id": "hp-9999", "timestamp": T, "power": 1}, "unknown_device"),
    ({"device_id": "hp-0002", "timestamp": "yesterday", "power": 1}, "bad_timestamp"),
    ({"device_id": "hp-0002", "timestamp": "1999-12-31T23:45:00Z", "power": 1}, "timestamp_too_old"),
    ({"device_id": "hp-0002", "timestamp": "2026-03-01T12:30:00Z", "power": 1}, "future_timestamp"),
    ({"device_id": "hp-0002", "timestamp": T, "power": "1,5"}, "non_numeric"),
    ({"device_id": "hp-0002", "timestamp": T, "power": 1, "dhw_electricity": "n/a"}, "non_numeric"),
    ({"device_id": "hp-0002", "timestamp": T, "power": True}, "non_numeric"),
    ({"device_id": "hp-0002", "timestamp": T, "power": float("inf")}, "not_finite"),
    ({"device_id": "hp-0002", "timestamp": T, "power": None}, "missing_power"),
    ({"device_id": "hp-0002", "timestamp": T, "power": float("nan")}, "missing_power"),
    ({"device_id": "hp-0002", "timestamp": T, "power": -0.2}, "negative_value"),
    ({"device_id": "hp-0002", "timestamp": T, "power": 1, "heating_electricity": -1}, "negative_value"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS, ids=[f"{r}-{i}" for i, (_, r) in enumerate(BAD_ROWS)])
def test_a_bad_row_is_quarantined_as_sent_and_the_rest_goes_in(store, row, reason):
    good = {"device_id": "hp-0001", "timestamp": T, "power": 2.0}
    r = ingest_batch(store, records_frame([good, row]), source="test", batch_id="b", now=NOW)
    assert (r.status, r.inserted, r.quarantined, r.reasons) == ("partial", 1, 1, {reason: 1})
    assert r.examples[0]["row"] == 1 and accounted(r)
    q = store.quarantined("b")
    assert q.reason.tolist() == [reason] and q.row.tolist() == [1]
    assert q.device_id[0] == str(row["device_id"]) and q.timestamp[0] == row["timestamp"]
    assert stored(store).device_id.tolist() == ["hp-0001"]


def test_duplicates_in_a_batch_keep_the_first_value_and_quarantine_conflicts(store):
    rows = [{"device_id": "hp-0001", "timestamp": T, "power": 1.0},
            {"device_id": "hp-0001", "timestamp": T, "power": 1.0},   # a duplicated message
            {"device_id": "hp-0001", "timestamp": T, "power": 7.0}]   # same key, other value
    r = ingest_batch(store, records_frame(rows), source="test", batch_id="b", now=NOW)
    assert (r.inserted, r.duplicates, r.quarantined, r.reasons) == (1, 1, 1, {"conflicting_duplicate": 1})
    assert stored(store).power.tolist() == [1.0]
    later = ingest_batch(store, records_frame([{"device_id": "hp-0001", "timestamp": T, "power": 3.0}]),
                         source="test", batch_id="c", now=NOW)
    assert later.reasons == {"conflicts_with_stored": 1} and stored(store).power.tolist() == [1.0]



def test_rows_inside_a_stored_span_are_checked_one_by_one(store):
    """A gap filled late, a re-sent reading and readings on both sides of
    what is stored: only the re-sent one is dropped."""
    day = readings(n=10)
    ingest_batch(store, day.drop(index=5), source="test", batch_id="first", now=NOW)
    around = pd.concat([readings(start="2026-01-31 23:45", n=1), day.iloc[[3, 5]],
                        readings(start="2026-02-01 02:30", n=2, power=9.0)], ignore_index=True)
    r = ingest_batch(store, around, source="test", batch_id="late", now=NOW)
    assert (r.inserted, r.already_stored, r.quarantined) == (4, 1, 0)
    assert stored(store).n.tolist() == [13]


def test_duplicates_in_an_unsorted_batch_are_found_too(store):
    later = (pd.Timestamp(T) + pd.Timedelta(minutes=15)).isoformat()
    rows = [{"device_id": "hp-0002", "timestamp": later, "power": 2.0},
            {"device_id": "hp-0001", "timestamp": T, "power": 1.0},
            {"device_id": "hp-0002", "timestamp": later, "power": 2.0},   # repeated, not adjacent
            {"device_id": "hp-0001", "timestamp": T, "power": 5.0}]       # same key, other value
    r = ingest_batch(store, records_frame(rows), source="test", batch_id="u", now=NOW)
    assert (r.inserted, r.duplicates, r.quarantined) == (2, 1, 1)
    assert store.quarantined("u").row.tolist() == [3]
    assert stored(store).power.tolist() == [1.0, 2.0]

@pytest.mark.parametrize(("frame", "error"), [
    (pd.DataFrame({"device_id": ["hp-0001"], "power": [1.0]}), "missing columns: timestamp"),
    (pd.DataFrame({"device_id": ["hp-0001"], "timestamp": [T], "power": [1.0], "kw": [1]}),
     "unknown columns: kw"),
    (pd.DataFrame({"device_id": [], "timestamp": [], "power": []}), "no rows"),
])
def test_a_batch_with_wrong_columns_is_rejected_whole_and_kept_in_the_ledger(store, frame, error):
    r = ingest_batch(store, frame, source="stream", batch_id="bad", now=NOW, payload='{"raw": 1}')
    assert r.status == "rejected" and error in " ".join(r.errors) and r.inserted == 0
    assert stored(store).empty
    ledger = store.query("SELECT status, payload FROM {db}.ingest_batches FINAL").to_pylist()
    assert ledger == [{"status": "rejected", "payload": '{"raw": 1}'}]


def test_files_are_read_in_chunks_and_a_cut_short_run_resumes(store, tmp_path):
    frame = pd.concat([readings("hp-0001", n=50), readings("hp-0002", n=50)], ignore_index=True)
    frame["outdoor_temp"] = 3.0  # a backtest-format column: accepted, not stored
    frame.loc[7, "power"] = np.nan
    path = tmp_path / "r.parquet"
    frame.to_parquet(path)

    def stop_after_first_chunk(report):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest_file(store, path, chunk_rows=30, progress=stop_after_first_chunk)
    assert stored(store).n.sum() == 29
    r = ingest_file(store, path, chunk_rows=30)
    assert (r.rows, r.inserted, r.quarantined, r.devices) == (100, 99, 1, 2)
    assert r.status == "partial" and r.ignored_columns == ["outdoor_temp"]
    assert r.inserted == 99 and stored(store).n.sum() == 99  # the first chunk was not stored again
    q = store.quarantined()
    assert q.row.tolist() == [7] and q.batch_id[0].endswith("/00000")
    # The same file again: every chunk seen before, nothing written now (not "partial" again).
    repeat = ingest_file(store, path, chunk_rows=30)
    assert repeat.status == "duplicate_batch" and stored(store).n.sum() == 99

    csv = tmp_path / "r.csv"
    frame.drop(columns="outdoor_temp").to_csv(csv, index=False)
    again = ingest_file(store, csv, chunk_rows=40)
    assert again.already_stored == 99 and again.reasons == {"missing_power": 1}
    assert stored(store).n.sum() == 99


@pytest.mark.parametrize(("name", "content", "error"), [
    ("x.parquet", b"not parquet", "not a readable Parquet file"),
    ("x.csv", b"", "empty"),
    ("x.json", b"[]", "expected a .csv or .parquet file"),
])
def test_an_unusable_file_is_a_clear_error(store, tmp_path, name, content, error):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidRequest, match=error):
        ingest_file(store, path)


def test_naive_and_offset_timestamps_are_utc(store):
    rows = [{"device_id": "hp-0001", "timestamp": "2026-02-01 01:00:00", "power": 1.0},
            {"device_id": "hp-0002", "timestamp": "2026-02-01T02:00:00+01:00", "power": 1.0}]
    r = ingest_batch(store, records_frame(rows), source="test", batch_id="b", now=NOW)
    assert r.inserted == 2
    w = store.fleet_window(datetime(2026, 2, 1, 1, tzinfo=UTC),
                           datetime(2026, 2, 1, 1, tzinfo=UTC) + timedelta(minutes=15),
                           ["hp-0001", "hp-0002"])
    np.testing.assert_array_equal(w.values[:, 0], [1.0, 1.0])
