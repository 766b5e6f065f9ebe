"""Ingest of meter readings: validation, deduplication, quarantine, report.

Every way in (a file, the HTTP batch endpoint, the `telemetry` topic) hands
a batch to `ingest_batch`, which accounts for every row:

    rows = inserted + duplicates + already_stored + quarantined

- A reading is identified by (device_id, timestamp). The store keeps the
  first value it receives for a key: a second copy with the same values is
  counted (`duplicates` within the batch, `already_stored` against the
  store) and dropped; a copy with *different* values is quarantined
  (`conflicting_duplicate`, `conflicts_with_stored`), so nothing changes
  silently and nothing is lost.
- A row that fails validation is quarantined with its reason, as received;
  the rest of the batch goes in. A batch whose columns are wrong is rejected
  as a whole and nothing is written except its ledger entry.
- Each batch has an id (the caller's, or a hash of its content). A batch id
  seen before returns the stored report without writing; the same id with
  different content is a `BatchConflict`.

Crash safety: quarantine rows are keyed by (batch_id, row) and readings are
checked against the store before they are written, so a batch retried after
a crash at any point ends with the same stored data as one clean run. The
ledger entry is written last; its presence means the batch completed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from intraday import failpoints
from intraday.errors import BatchConflict, InvalidRequest
from intraday.telemetry.store import DEVICE_ID, READING_COLUMNS, TelemetryStore

REQUIRED = ("device_id", "timestamp", "power")
OPTIONAL = ("heating_electricity", "dhw_electricity")
# Columns of the backtest input format that are not readings; accepted and
# not stored with them (weather has its own table).
IGNORED = ("outdoor_temp",)
VALUE_COLUMNS = ("power", *OPTIONAL)

FUTURE_TOLERANCE = timedelta(minutes=5)  # meter clocks run a little fast
EARLIEST = pd.Timestamp("2000-01-01", tz="UTC")
MAX_EXAMPLES = 20

# Reasons a row is quarantined, in the order they are checked; a row gets
# the first that applies.
REASONS = {
    "missing_device_id": "device_id is empty",
    "invalid_device_id": "device_id is not 1-64 characters of letters, digits, '_.:-'",
    "unknown_device": "device_id is not in the fleet",
    "bad_timestamp": "timestamp is missing or not an ISO 8601 time",
    "timestamp_too_old": f"timestamp is before {EARLIEST.date()}",
    "future_timestamp": f"timestamp is more than {FUTURE_TOLERANCE} in the future",
    "retired_device": "the device was retired before this timestamp",
    "non_numeric": "a value is not a number",
    "not_finite": "a value is infinite",
    "missing_power": "power is empty",
    "negative_value": "a power value is negative",
    "conflicting_duplicate": "same device and timestamp as an earlier row of the batch, other values",
    "conflicts_with_stored": "same device and timestamp as a stored reading, other values",
}


@dataclass
class IngestReport:
    batch_id: str
    source: str
    status: str = "accepted"  # accepted | partial | rejected | duplicate_batch
    rows: int = 0
    inserted: int = 0
    duplicates: int = 0
    already_stored: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    devices: int = 0
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    # Per device, the quarter-hours whose mean changed: [first, last] (ISO).
    touched: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def add(self, other: IngestReport) -> None:
        """Fold a chunk's report into this (a file's) report."""
        for name in ("rows", "inserted", "duplicates", "already_stored", "quarantined"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        self.examples = (self.examples + other.examples)[:MAX_EXAMPLES]
        self.errors += other.errors
        self.ignored_columns = sorted(set(self.ignored_columns) | set(other.ignored_columns))
        for attr, pick in (("first_timestamp", min), ("last_timestamp", max)):
            values = [v for v in (getattr(self, attr), getattr(other, attr)) if v]
            setattr(self, attr, pick(values) if values else None)
        for dev, (lo, hi) in other.touched.items():
            cur = self.touched.get(dev)
            self.touched[dev] = [min(cur[0], lo), max(cur[1], hi)] if cur else [lo, hi]
        self.devices = len(self.touched)
        if "rejected" in (self.status, other.status):
            self.status = "rejected"
        elif self.status == other.status == "duplicate_batch":
            pass  # every chunk seen before: nothing written now, whatever they quarantined then
        elif self.quarantined:
            self.status = "partial"
        else:
            self.status = "accepted"


class DeviceRegistry:
    """The fleet's device ids, re-read when an id is not found (a device
    added since the last read) and at most every `ttl` otherwise."""

    def __init__(self, store: TelemetryStore, ttl: timedelta = timedelta(seconds=60)):
        self._store, self._ttl = store, ttl
        self._ids: set[str] = set()
        self._retired: dict[str, int] = {}
        self._read_at: datetime | None = None

    def _refresh(self) -> None:
        self._ids = self._store.known_devices()
        self._retired = {d: int(t.timestamp() * 1000) for d, t in self._store.retirements().items()}
        self._read_at = datetime.now(UTC)

    def retired_from(self, device_ids: np.ndarray) -> np.ndarray:
        """Per device, when it was retired (epoch ms; int64 max if it is not)."""
        never = np.iinfo(np.int64).max
        return np.fromiter((self._retired.get(d, never) for d in device_ids), np.int64, len(device_ids))

    def known(self, device_ids: np.ndarray) -> np.ndarray:
        if self._read_at is None or datetime.now(UTC) - self._read_at > self._ttl:
            self._refresh()
        found = np.fromiter((d in self._ids for d in device_ids), bool, len(device_ids))
        if not found.all():
            self._refresh()
            found = np.fromiter((d in self._ids for d in device_ids), bool, len(device_ids))
        return found


def content_hash(df: pd.DataFrame) -> str:
    h = hashlib.sha256(json.dumps(list(map(str, df.columns))).encode())
    try:
        hashed = pd.util.hash_pandas_object(df, index=False)
    except TypeError:  # unhashable cells (a JSON object where a value belongs)
        hashed = pd.util.hash_pandas_object(df.astype(str), index=False)
    h.update(hashed.to_numpy().tobytes())
    return h.hexdigest()


def ingest_batch(store: TelemetryStore, df: pd.DataFrame, **options: Any) -> IngestReport:
    """Validate a batch of readings and store what is valid; see the module
    docstring for the rules and `prepare_batch` for the options."""
    return commit_batch(store, prepare_batch(store, df, **options))


@dataclass
class Prepared:
    """A batch checked against itself (columns, rows, duplicates within it),
    not yet against the store, and nothing written: `commit_batch` does the
    rest. Preparing one batch while the previous one commits overlaps the
    Python work with the engine's insert."""

    report: IngestReport
    digest: str
    df: pd.DataFrame
    row_offset: int
    payload: str
    clean: Clean | None = None
    quarantine: list[pd.DataFrame] = field(default_factory=list)


def prepare_batch(
    store: TelemetryStore,
    df: pd.DataFrame,
    *,
    source: str,
    batch_id: str | None = None,
    registry: DeviceRegistry | None = None,
    row_offset: int = 0,
    now: datetime | None = None,
    payload: str = "",
    digest: str | None = None,
) -> Prepared:
    """Check a batch against itself; nothing is written. `payload` (the raw
    message) is kept in the ledger when the batch is rejected, so a rejected
    stream message is not lost. `digest` identifies the content when the
    caller knows it already (a file's chunk: the file's hash and the chunk's
    place in it); by default it is the hash of `df`."""
    digest = digest or content_hash(df)
    batch_id = batch_id or f"sha256:{digest}"
    if not batch_id or len(batch_id) > 200:
        raise InvalidRequest("batch_id must be 1-200 characters")
    seen = store.batch(batch_id)
    if seen is not None:
        if seen["content_sha256"] != digest:
            raise BatchConflict(f"batch {batch_id!r} was ingested before with different content")
        report = IngestReport(**json.loads(seen["report"]))
        report.status = "duplicate_batch"
        return Prepared(report, digest, df, row_offset, payload)

    report = IngestReport(batch_id=batch_id, source=source, rows=len(df))
    problems = _check_columns(df, report)
    if problems:
        report.status = "rejected"
        report.errors = problems
        return Prepared(report, digest, df, row_offset, payload)

    registry = registry or DeviceRegistry(store)
    clean, quarantine = _validate(df, registry, now or datetime.now(UTC), row_offset)
    quarantine = _dedup_batch(clean, quarantine, report)
    return Prepared(report, digest, df, row_offset, payload, clean, quarantine)


def commit_batch(store: TelemetryStore, prepared: Prepared) -> IngestReport:
    """Check a prepared batch against the store and write it: quarantined
    rows, then readings, then the ledger entry."""
    report, clean = prepared.report, prepared.clean
    if report.status == "duplicate_batch":
        return report
    if report.status == "rejected":
        _record(store, report, prepared.digest, prepared.payload)
        return report
    assert clean is not None
    quarantine = _dedup_store(store, clean, prepared.quarantine, report)
    if quarantine:
        q = pd.concat(quarantine, ignore_index=True).sort_values("row", kind="stable")
        store.insert_quarantine(_quarantine_rows(prepared.df, q, report.batch_id, prepared.row_offset))
        report.quarantined = len(q)
        report.reasons = {str(k): int(v) for k, v in q["reason"].value_counts().sort_index().items()}
        report.examples = [
            {"row": int(row), "reason": reason, "detail": detail}
            for row, reason, detail in q.head(MAX_EXAMPLES)[["row", "reason", "detail"]].itertuples(
                index=False)
        ]
    if len(clean):
        store.insert_readings(clean.arrow())
        report.inserted = len(clean)
        report.first_timestamp = _iso_ms(clean.ts.min())
        report.last_timestamp = _iso_ms(clean.ts.max())
        report.touched = clean.touched()
        report.devices = len(report.touched)
    # Readings written, the ledger not yet: a batch offered again re-checks
    # them against the store and counts them as already stored.
    failpoints.reach(failpoints.TELEMETRY_MID_INGEST)
    report.status = "partial" if report.quarantined else "accepted"
    _record(store, report, prepared.digest, "")
    return report


def _iso_ms(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat().replace("+00:00", "Z")


@dataclass
class Clean:
    """The valid rows of a batch, columnar: device codes into `ids`, time in
    epoch milliseconds, values, and each row's number in the batch."""

    ids: np.ndarray  # device id per code
    code: np.ndarray
    ts: np.ndarray
    values: dict[str, np.ndarray]
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    def key(self) -> np.ndarray:
        """(device, timestamp) as one int64: code in the high bits."""
        return np.asarray((self.code.astype(np.int64) << 42) | self.ts)

    def take(self, mask: np.ndarray) -> None:
        self.code, self.ts, self.row = self.code[mask], self.ts[mask], self.row[mask]
        self.values = {k: v[mask] for k, v in self.values.items()}

    def arrow(self, mask: np.ndarray | None = None) -> pa.Table:
        """The rows (those where `mask` is true, if given) as an Arrow
        table in `power_consumption`'s columns."""

        def pick(a: np.ndarray) -> np.ndarray:
            return a if mask is None else a[mask]

        device = pa.DictionaryArray.from_arrays(
            pa.array(pick(self.code), pa.int32()), pa.array(self.ids.astype(str), pa.string())
        )
        return pa.table({
            "device_id": device,
            "timestamp": pa.array(pick(self.ts), pa.timestamp("ms", tz="UTC")),
            **{k: pa.array(pick(v)) for k, v in self.values.items()},
        })

    def touched(self) -> dict[str, list[str]]:
        """Per device, the first and last quarter-hour with new readings."""
        span = pd.DataFrame({"code": self.code, "ts": self.ts}).groupby("code")["ts"].agg(["min", "max"])
        q = 900_000
        return {
            str(self.ids[c]): [_iso_ms(lo // q * q), _iso_ms(hi // q * q)]
            for c, lo, hi in span.itertuples()
        }


def record_unreadable(
    store: TelemetryStore, batch_id: str, source: str, error: str, payload: str
) -> IngestReport:
    """A message that is not a batch of rows at all: rejected, and kept in
    the ledger with its payload and the reason."""
    report = IngestReport(batch_id=batch_id, source=source, status="rejected", errors=[error])
    _record(store, report, hashlib.sha256(payload.encode()).hexdigest(), payload)
    return report


def _record(store: TelemetryStore, report: IngestReport, digest: str, payload: str) -> None:
    store.record_batch({
        "batch_id": report.batch_id,
        "content_sha256": digest,
        "source": report.source,
        "status": report.status,
        "rows": report.rows,
        "inserted": report.inserted,
        "quarantined": report.quarantined,
        "report": json.dumps(report.to_dict()),
        "payload": payload if report.status == "rejected" else "",
    })


def _check_columns(df: pd.DataFrame, report: IngestReport) -> list[str]:
    cols = [str(c) for c in df.columns]
    problems = []
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        problems.append(f"missing columns: {', '.join(missing)}")
    extra = [c for c in cols if c not in (*REQUIRED, *OPTIONAL, *IGNORED)]
    if extra:
        problems.append(
            f"unknown columns: {', '.join(extra)} (accepted: {', '.join((*REQUIRED, *OPTIONAL, *IGNORED))})"
        )
    if len(set(cols)) != len(cols):
        problems.append("duplicate column names")
    if len(df) == 0:
        problems.append("the batch has no rows")
    report.ignored_columns = [c for c in cols if c in IGNORED]
    return problems


def _numbers(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and a mask of entries that were present but not numbers."""
    if pd.api.types.is_bool_dtype(col):
        return np.full(len(col), np.nan), np.ones(len(col), bool)
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(col), bool)
    text = col.astype("string").str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    # A JSON `true` or a number-looking string are different things: only
    # real numbers and numeric text count.
    is_bool = col.map(lambda v: isinstance(v, bool)).to_numpy(bool) if col.dtype == object else False
    present = (text.notna() & (text != "")).to_numpy(bool)
    bad = present & (np.isnan(values) | is_bool)
    values[bad] = np.nan
    return values, bad


def _timestamps(col: pd.Series) -> pd.Series:
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        ts = col.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(col):
        ts = col.dt.tz_localize("UTC")  # naive times are UTC
    elif pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        ts = pd.Series(pd.NaT, index=col.index, dtype="datetime64[ms, UTC]")
    else:
        text = col.astype("string").str.strip()
        ts = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    out: pd.Series = ts.astype("datetime64[ms, UTC]")
    return out


def _validate(
    df: pd.DataFrame, registry: DeviceRegistry, now: datetime, row_offset: int
) -> tuple[Clean, list[pd.DataFrame]]:
    n = len(df)
    reason = np.zeros(n, np.int8)  # 0 = valid, else 1 + index into REASON_NAMES
    details: dict[str, Any] = {}

    def flag(mask: np.ndarray, name: str, what: str | Any = "") -> None:
        new = mask & (reason == 0)
        if not new.any():
            return
        code = REASON_NAMES.index(name) + 1
        reason[new] = code
        text = what(new) if callable(what) else (what or REASONS[name])
        details.setdefault(name, []).append((new, text))

    # Device ids: work on the distinct values only.
    codes, distinct = pd.factorize(df["device_id"], use_na_sentinel=True)
    uniq = np.asarray(distinct, dtype=object)
    stripped = np.array([str(u).strip() for u in uniq], dtype=object)
    flag((codes < 0) | (stripped[codes] == "") if len(uniq) else codes < 0, "missing_device_id")
    if len(uniq):
        valid = np.array([bool(DEVICE_ID.match(u)) for u in stripped], dtype=bool)
        flag(~valid[codes] & (codes >= 0), "invalid_device_id")
        known = registry.known(stripped)
        flag(~known[codes] & (codes >= 0), "unknown_device",
             lambda m: [f"unknown device {d!r}" for d in stripped[codes[m]]])

    ts = _timestamps(df["timestamp"])
    ts_ms = ts.dt.tz_localize(None).to_numpy().astype("datetime64[ms]").view(np.int64)
    missing_ts = ts.isna().to_numpy()
    flag(missing_ts, "bad_timestamp")
    flag(~missing_ts & (ts_ms < EARLIEST.value // 1_000_000), "timestamp_too_old")
    flag(~missing_ts & (ts_ms > int((pd.Timestamp(now) + FUTURE_TOLERANCE).value // 1_000_000)),
         "future_timestamp")
    if len(uniq):
        retired = registry.retired_from(stripped)
        flag(~missing_ts & (codes >= 0) & (ts_ms >= retired[np.maximum(codes, 0)]), "retired_device",
             lambda m: [f"device {d!r} was retired before this reading" for d in stripped[codes[m]]])

    values = {}
    for name in VALUE_COLUMNS:
        if name not in df.columns:
            values[name] = np.full(n, np.nan)  # the split is unknown for this batch
            continue
        v, bad = _numbers(df[name])
        flag(bad, "non_numeric", f"{name} is not a number")
        flag(np.isinf(v), "not_finite", f"{name} is infinite")
        values[name] = v
    flag(np.isnan(values["power"]), "missing_power")
    for name in VALUE_COLUMNS:
        with np.errstate(invalid="ignore"):
            flag(values[name] < 0, "negative_value", f"{name} is negative")

    rows = np.arange(n) + row_offset
    ok = reason == 0
    # Distinct stripped ids may coincide (" hp-1" and "hp-1"): re-code.
    code_ok = codes[ok]
    ids, recode = np.unique(stripped, return_inverse=True) if len(uniq) else (stripped, codes)
    clean = Clean(ids, recode[code_ok].astype(np.int32), ts_ms[ok],
                  {k: v[ok] for k, v in values.items()}, rows[ok])
    quarantine = []
    for name, parts in details.items():
        for mask, text in parts:
            detail = np.asarray(text, dtype=object) if not isinstance(text, str) else text
            quarantine.append(_quarantine_frame(rows[mask], name, detail))
    return clean, quarantine


REASON_NAMES = list(REASONS)


def _quarantine_frame(rows: np.ndarray, reason: str, detail: Any = None) -> pd.DataFrame:
    return pd.DataFrame({"row": rows, "reason": reason,
                         "detail": REASONS[reason] if detail is None else detail})


def _dedup_batch(clean: Clean, quarantine: list[pd.DataFrame], report: IngestReport) -> list[pd.DataFrame]:
    """Keep the first row per (device_id, timestamp); drop later identical
    copies, quarantine later copies with other values."""
    key = clean.key()
    step = np.diff(key)
    if (step > 0).all():  # strictly increasing: no key twice
        return quarantine
    rows = np.arange(len(key))
    if (step >= 0).all():
        # Sorted (as files and meter batches usually are): repeats are runs
        # of equal keys, and the original is the run's first row.
        starts = np.r_[True, step != 0]
        later = np.flatnonzero(~starts)
        original = np.maximum.accumulate(np.where(starts, rows, 0))[later]
    else:
        codes, uniq = pd.factorize(key)
        first = np.empty(len(uniq), np.int64)
        first[codes[::-1]] = rows[::-1]  # the last write per code is its first row
        later = np.flatnonzero(first[codes] != rows)
        original = first[codes[later]]
    if not len(later):
        return quarantine
    identical = np.ones(len(later), bool)
    for v in clean.values.values():  # bitwise, so NaN equals NaN
        identical &= v.view(np.int64)[later] == v.view(np.int64)[original]
    report.duplicates = int(identical.sum())
    quarantine.append(_quarantine_frame(clean.row[later[~identical]], "conflicting_duplicate"))
    keep = np.ones(len(key), bool)
    keep[later] = False
    clean.take(keep)
    return quarantine


def _dedup_store(
    store: TelemetryStore, clean: Clean, quarantine: list[pd.DataFrame], report: IngestReport
) -> list[pd.DataFrame]:
    """Drop readings the store already has; quarantine those it has with
    other values. Only rows inside a device's span of stored readings can
    be stored already: one cheap query finds the spans, and the common case
    (new readings after the stored ones) stops there."""
    if not len(clean):
        return quarantine
    ids = clean.ids[np.unique(clean.code)].astype(str).tolist()
    first = pd.Timestamp(int(clean.ts.min()), unit="ms", tz="UTC")
    last = pd.Timestamp(int(clean.ts.max()), unit="ms", tz="UTC")
    spans = store.stored_spans(ids, first, last)
    if spans.empty:
        return quarantine
    code_of = {d: i for i, d in enumerate(clean.ids)}
    lo = np.full(len(clean.ids), np.iinfo(np.int64).max)
    hi = np.full(len(clean.ids), np.iinfo(np.int64).min)
    span_code = spans["device_id"].map(code_of).to_numpy(np.int64)
    lo[span_code], hi[span_code] = spans["lo"].to_numpy(), spans["hi"].to_numpy()
    candidate = (clean.ts >= lo[clean.code]) & (clean.ts <= hi[clean.code])
    if not candidate.any():
        return quarantine
    stored = store.stored_matching(clean.arrow(candidate).select(["device_id", "timestamp"]))
    if stored.empty:
        return quarantine
    stored_key = (stored["device_id"].map(code_of).to_numpy(np.int64) << 42) | (
        stored["timestamp"].dt.tz_localize(None).to_numpy().astype("datetime64[ms]").view(np.int64)
    )
    pos = pd.Index(stored_key).get_indexer(clean.key())
    exists = pos >= 0
    same = exists.copy()
    for name in VALUE_COLUMNS:
        a, b = clean.values[name], stored[name].to_numpy(np.float64)[pos]
        same &= (a == b) | (np.isnan(a) & np.isnan(b))
    report.already_stored = int(same.sum())
    conflict = exists & ~same
    quarantine.append(_quarantine_frame(clean.row[conflict], "conflicts_with_stored"))
    clean.take(~exists)
    return quarantine


def _quarantine_rows(
    df: pd.DataFrame, quarantine: pd.DataFrame, batch_id: str, row_offset: int
) -> pd.DataFrame:
    """The quarantined rows as received (text), with reason and detail."""
    pos = quarantine["row"].to_numpy() - row_offset
    out = pd.DataFrame({
        "batch_id": batch_id,
        "row": quarantine["row"].to_numpy().astype(np.uint32),
        "reason": quarantine["reason"].to_numpy(),
        "detail": quarantine["detail"].to_numpy(),
    })
    for name in READING_COLUMNS:
        if name in df.columns:
            col = df[name].iloc[pos]
            out[name] = [_as_text(v) for v in col]
        else:
            out[name] = ""
    return out


def _as_text(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT or v is pd.NA:
        return ""
    if isinstance(v, pd.Timestamp | datetime):
        return v.isoformat()
    return str(v)


# -- files ----------------------------------------------------------------


def records_frame(readings: Any) -> pd.DataFrame:
    """A JSON batch (a list of reading objects) as a DataFrame of what was
    sent, with no type coercion."""
    if not isinstance(readings, list) or not all(isinstance(r, dict) for r in readings):
        raise InvalidRequest("readings must be a list of objects")
    df = pd.DataFrame.from_records(readings)
    return df.astype(object) if len(df) else df


def parse_batch_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[\w.:/#@+-]{1,200}", value):
        raise InvalidRequest("batch_id must be 1-200 characters of letters, digits and '_.:/#@+-'")
    return value
