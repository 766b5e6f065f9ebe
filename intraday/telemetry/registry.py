"""The device registry users write to: add, update and retire heat pumps.

A change is a batch of rows (a CSV or Parquet file, or a JSON body), checked
as a whole: every bad row is named with its reason and nothing is written,
or every row is valid and the changed devices are written in one insert (one
part of the `devices` table, so a crash leaves the change whole or absent).

Rows merge into what is stored: a column absent from the batch, or an empty
cell, keeps the stored value (a new device: unknown). Writing the same rows
again changes nothing and writes nothing, so a retried change is harmless. A
retired device leaves the fleet list (and so the portfolio) from its
`retired_at` on; its readings before then stay, and adding it again brings
it back.

A device needs a place, for its weather: a `location` (a zone name, the key
of the weather table) and/or `latitude` and `longitude`. Coordinates without
a zone name get the name of their 0.1-degree grid cell (`47.4N8.5E`, by its
south-west corner), which the weather connector asks the provider for.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any, cast

import numpy as np
import pandas as pd

from intraday.errors import InvalidRequest
from intraday.telemetry.store import DEVICE_ID, TelemetryStore

LOCATION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:,+-]{0,63}$")
COUNTRY = re.compile(r"^[A-Z]{2}$")
MAX_DEVICES = 100_000  # per change
MAX_ERRORS = 50  # row errors listed in a refusal
MAX_TEXT = 64
GRID_DEGREES = 0.1

# Each column a change may carry: its kind and, for numbers, the range a
# real heat pump's value lies in (a value outside is a typo, refused).
NUMBERS = {
    "latitude": (-90.0, 90.0),
    "longitude": (-180.0, 180.0),
    "rated_power_kw": (0.1, 10_000.0),
    "heated_area_m2": (1.0, 1_000_000.0),
    "setpoint_c": (5.0, 35.0),
}
TEXTS = ("location", "building_type", "heat_pump_type", "tariff", "country")
DATES = ("installed_date",)
COLUMNS = ("device_id", *TEXTS, *NUMBERS, *DATES)
# What the registry stores per device, beside its id.
ATTRIBUTES = ("location", "latitude", "longitude", "country", "building_type", "heat_pump_type",
              "rated_power_kw", "heated_area_m2", "setpoint_c", "installed_date", "tariff")


@dataclass
class RowError:
    row: int  # 1-based, as a person counts the rows of a file (the header is not a row)
    id: str  # what the row is about: its device id, or its weather location
    reason: str


class Refused(InvalidRequest):
    """A change refused as a whole, with every bad row's reason."""

    def __init__(self, message: str, errors: list[RowError]):
        shown = "; ".join(f"row {e.row}{f' ({e.id})' if e.id else ''}: {e.reason}" for e in errors[:5])
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        super().__init__(f"{message}: {shown}{more}" if errors else message)
        self.errors = errors

    def detail(self) -> dict[str, Any]:
        return {"error": str(self).split(":")[0], "rows": [asdict(e) for e in self.errors[:MAX_ERRORS]],
                "errors": len(self.errors)}


@dataclass
class Change:
    """What a change did: ids by outcome, and per changed device the fields
    with their old and new values (the audit's record)."""

    change_id: str
    changed_by: str
    action: str  # upsert | retire
    devices: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    unchanged: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def written(self) -> int:
        return len(self.added) + len(self.updated) + len(self.reactivated) + len(self.retired)


def new_change_id(now: datetime | None = None) -> str:
    """`dc-<UTC time>-<random>`: a change's id, in the audit and on the rows it wrote."""
    return f"dc-{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def grid_location(latitude: float, longitude: float) -> str:
    """The name of the 0.1-degree cell holding a point, by its south-west
    corner: `47.4N8.5E` is 47.4-47.5 N, 8.5-8.6 E."""
    def corner(x: float) -> int:  # tenths of a degree, float noise rounded away first
        return math.floor(round(x / GRID_DEGREES, 6))

    lat, lon = corner(latitude), corner(longitude)
    return f"{abs(lat) / 10:.1f}{'N' if lat >= 0 else 'S'}{abs(lon) / 10:.1f}{'E' if lon >= 0 else 'W'}"


def grid_center(location: str) -> tuple[float, float] | None:
    """The centre of a grid cell named by `grid_location`; None for a zone name."""
    m = re.fullmatch(r"(\d+\.\d)([NS])(\d+\.\d)([EW])", location)
    if m is None:
        return None
    lat = float(m[1]) * (1 if m[2] == "N" else -1)
    lon = float(m[3]) * (1 if m[4] == "E" else -1)
    return round(lat + GRID_DEGREES / 2, 3), round(lon + GRID_DEGREES / 2, 3)


def _blank(v: Any) -> bool:
    if v is None or v is pd.NA or v is pd.NaT:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _number(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError
    x = float(v.strip()) if isinstance(v, str) else float(v)
    if not math.isfinite(x):
        raise ValueError
    return x


def _date(v: Any) -> date:
    if isinstance(v, datetime | pd.Timestamp):
        return v.date()
    if isinstance(v, date):
        return v
    return date.fromisoformat(str(v).strip()[:10])


def parse_devices(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a change as dicts of the cells given (blank cells left
    out), each value parsed and checked; `Refused` names every bad row."""
    if df.empty:
        raise Refused("no devices in the change", [])
    columns = [str(c) for c in df.columns]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise Refused(f"unknown column(s) {', '.join(unknown)}; a device row has {', '.join(COLUMNS)}", [])
    if "device_id" not in columns:
        raise Refused("missing column device_id", [])
    if len(columns) != len(set(columns)):
        raise Refused("duplicate column names", [])
    if len(df) > MAX_DEVICES:
        raise Refused(f"{len(df):,} devices in one change; send at most {MAX_DEVICES:,}", [])
    rows: list[dict[str, Any]] = []
    errors: list[RowError] = []
    seen: dict[str, int] = {}
    records = cast(list[dict[str, Any]], df.to_dict(orient="records"))  # the columns are names
    for n, record in enumerate(records, start=1):
        raw_id = record.get("device_id")
        device_id = "" if _blank(raw_id) else str(raw_id).strip()
        problems: list[str] = []
        if not device_id:
            problems.append("device_id is empty")
        elif not DEVICE_ID.match(device_id):
            problems.append("device_id is not 1-64 characters of letters, digits, '_.:-'")
        elif device_id in seen:
            problems.append(f"device {device_id!r} is also on row {seen[device_id]}")
        else:
            seen[device_id] = n
        row: dict[str, Any] = {"device_id": device_id}
        for col, value in record.items():
            if col == "device_id" or _blank(value):
                continue
            try:
                if col in NUMBERS:
                    x = _number(value)
                    lo, hi = NUMBERS[col]
                    if not lo <= x <= hi:
                        problems.append(f"{col} {x:g} is outside {lo:g}..{hi:g}")
                        continue
                    row[col] = x
                elif col in DATES:
                    row[col] = _date(value)
                else:
                    text = str(value).strip()
                    if col == "location" and not LOCATION.match(text):
                        problems.append(f"location {text[:80]!r} is not 1-64 characters of letters, digits, "
                                        "'_.:,+-'")
                    elif col == "country" and not COUNTRY.match(text):
                        problems.append(f"country {text[:20]!r} is not a two-letter ISO code (CH, DE, ...)")
                    elif len(text) > MAX_TEXT:
                        problems.append(f"{col} is longer than {MAX_TEXT} characters")
                    else:
                        row[col] = text
            except (TypeError, ValueError):
                kind = "a number" if col in NUMBERS else "a date (YYYY-MM-DD)"
                problems.append(f"{col} {str(value)[:40]!r} is not {kind}")
        if ("latitude" in row) != ("longitude" in row):
            problems.append("latitude and longitude come together")
        errors += [RowError(n, device_id, p) for p in problems]
        rows.append(row)
    if errors:
        raise Refused(f"{len(errors)} problem(s) in the change, nothing written", errors)
    return rows


def _same(a: Any, b: Any) -> bool:
    if _blank(a) and _blank(b):
        return True
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) < 1e-9
    return str(a) == str(b)


def _stored(store: TelemetryStore, ids: list[str]) -> dict[str, dict[str, Any]]:
    return {d["device_id"]: d for d in store.registry_rows(ids)}


def upsert(store: TelemetryStore, rows: list[dict[str, Any]], changed_by: str, change_id: str,
           now: datetime | None = None) -> Change:
    """Merge the rows into the registry; write only what changed (one
    insert). A row for a retired device brings it back into the fleet."""
    now = now or datetime.now(UTC)
    change = Change(change_id, changed_by, "upsert", devices=len(rows), at=now.isoformat())
    stored = _stored(store, [r["device_id"] for r in rows])
    out, errors = [], []
    for n, row in enumerate(rows, start=1):
        old = stored.get(row["device_id"])
        new: dict[str, Any] = {a: (old or {}).get(a) for a in ATTRIBUTES}
        new.update({k: v for k, v in row.items() if k != "device_id"})
        if "location" not in row and "latitude" in row and (old is None or _grid_named(old)):
            new["location"] = grid_location(new["latitude"], new["longitude"])
        if _blank(new.get("location")):
            errors.append(RowError(n, row["device_id"], "no location: give a location (a zone name) "
                                                        "or latitude and longitude"))
            continue
        fields = {a: [_json((old or {}).get(a)), _json(new[a])] for a in ATTRIBUTES
                  if old is None or not _same(old.get(a), new[a])}
        if old is None:
            change.added.append(row["device_id"])
            fields = {a: v for a, v in fields.items() if not _blank(v[1])}
        elif old.get("retired_at") is not None:
            change.reactivated.append(row["device_id"])
            fields["retired_at"] = [_json(old["retired_at"]), None]
        elif fields:
            change.updated.append(row["device_id"])
        else:
            change.unchanged += 1
            continue
        change.changes.append({"device_id": row["device_id"], "fields": fields})
        out.append({"device_id": row["device_id"], **new, "retired_at": None})
    if errors:
        raise Refused(f"{len(errors)} problem(s) in the change, nothing written", errors)
    if out:
        store.write_registry(pd.DataFrame(out), now, changed_by, change_id)
    return change


def retire(store: TelemetryStore, device_ids: list[str], changed_by: str, change_id: str,
           at: datetime | None = None, now: datetime | None = None) -> Change:
    """Retire devices from `at` (default now): they leave the fleet list and
    the portfolio then; their history stays. Unknown ids refuse the whole
    change; a device retired already keeps its first retirement."""
    now = now or datetime.now(UTC)
    at = at or now
    ids = list(dict.fromkeys(device_ids))
    if not ids:
        raise Refused("no devices to retire", [])
    if len(ids) > MAX_DEVICES:
        raise Refused(f"{len(ids):,} devices in one change; send at most {MAX_DEVICES:,}", [])
    stored = _stored(store, ids)
    errors = [RowError(n, d, "unknown device") for n, d in enumerate(ids, start=1) if d not in stored]
    if errors:
        raise Refused(f"{len(errors)} unknown device(s), nothing retired", errors)
    change = Change(change_id, changed_by, "retire", devices=len(ids), at=now.isoformat())
    out = []
    for d in ids:
        old = stored[d]
        if old.get("retired_at") is not None:
            change.unchanged += 1
            continue
        change.retired.append(d)
        change.changes.append({"device_id": d, "fields": {"retired_at": [None, _json(at)]}})
        out.append({**{a: old.get(a) for a in ATTRIBUTES}, "device_id": d, "retired_at": at})
    if out:
        store.write_registry(pd.DataFrame(out), now, changed_by, change_id)
    return change


def _grid_named(old: dict[str, Any]) -> bool:
    """Whether a stored device's location is its grid cell's name (which
    follows its coordinates), not a zone the user named."""
    lat, lon, location = old.get("latitude"), old.get("longitude"), old.get("location")
    if _blank(location):
        return True
    return lat is not None and lon is not None and location == grid_location(lat, lon)


def _json(v: Any) -> Any:
    if _blank(v):
        return None
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_devices_file(path: Any) -> pd.DataFrame:
    """A registry file: CSV (cells as text) or Parquet."""
    from pathlib import Path

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise InvalidRequest(f"{path}: not a readable {suffix[1:]} file ({e})") from None
    raise InvalidRequest(f"{path}: expected a .csv or .parquet file")
