"""Telemetry store: one API over chDB (in-process) and a ClickHouse server.

The same SQL (with `{name:Type}` parameters) runs on both backends. chDB lets
only one process open a database path, so in the running system the telemetry
service owns the store and everything else asks that service.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from intraday.config import REPO_ROOT, Settings
from intraday.forecasting.temperature import WEATHER_MAX_GAP, fill_gaps
from intraday.forecasting.types import FleetWindow, TelemetryWindow
from intraday.telemetry.backends import Backend, ChdbBackend, ClickHouseBackend
from intraday.telemetry.cells import cell_indexes, sum_split_cells
from intraday.timeutil import QUARTER_HOUR, isoformat_z, to_utc

SQL_DIR = REPO_ROOT / "sql" / "clickhouse"
CLUSTER_SQL_DIR = REPO_ROOT / "sql" / "clickhouse-cluster"
# On a cluster (sql/clickhouse-cluster/README.md): an insert returns once
# the shards have it (not queued on the writer's disk), a block retried is
# dropped by the replicated tables' deduplication down to the 15-minute
# view's, and a subquery on a Distributed table inside a query on another
# runs once and is sent to the shards (ClickHouse refuses it by default).
CLUSTER_SETTINGS = {"distributed_foreground_insert": 1,
                    "deduplicate_blocks_in_dependent_materialized_views": 1,
                    "distributed_product_mode": "global"}
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
READING_COLUMNS = ["device_id", "timestamp", "power", "heating_electricity", "dhw_electricity"]
DEVICE_COLUMNS = [
    "device_id", "location", "country", "building_type", "heat_pump_type", "rated_power_kw",
    "heated_area_m2", "setpoint_c", "installed_date",
]
# What the registry holds beyond the generator's attributes (sql/clickhouse/007).
REGISTRY_COLUMNS = [*DEVICE_COLUMNS, "latitude", "longitude", "tariff", "retired_at"]
DEVICE_SELECT = ", ".join(
    "toString(installed_date) AS installed_date" if c == "installed_date" else c for c in REGISTRY_COLUMNS
)
# A device is in the fleet until its retirement.
ACTIVE = "(retired_at IS NULL OR retired_at > now64(3))"
WEATHER_COLUMNS = ["location", "kind", "timestamp", "issued_at", "outdoor_temp_c"]
QUARANTINE_COLUMNS = [
    "batch_id", "row", "reason", "detail", "device_id", "timestamp", "power",
    "heating_electricity", "dhw_electricity",
]


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID.match(device_id):
        raise ValueError(
            f"invalid device id {device_id!r}: 1-64 characters of letters, digits, '_.:-'"
        )
    return device_id


class MigrationError(RuntimeError):
    """A migration file changed after it was applied."""


# Readings and weather: no merge while inserting (the 15-minute table
# collapses in the background and every read sums split quarter-hours
# anyway), the materialized view runs beside the raw insert, and a batch is
# read in blocks of up to a million rows (the view's GROUP BY then runs once
# per batch instead of once per 65 k rows: 1.3 -> 1.7 M rows/s).
FAST_INSERT = {"optimize_on_insert": 0, "parallel_view_processing": 1, "max_block_size": 1_000_000}


class TelemetryStore:
    def __init__(self, backend: Backend, database: str = "intraday", cluster: str = ""):
        self._backend = backend
        self.db = database
        self.cluster = cluster

    @classmethod
    def from_settings(cls, settings: Settings) -> TelemetryStore:
        cluster = settings.clickhouse_cluster
        if settings.telemetry_backend == "clickhouse":
            backend: Backend = ClickHouseBackend(settings.clickhouse_url,
                                                 CLUSTER_SETTINGS if cluster else None)
        elif cluster:
            raise ValueError("INTRADAY_CLICKHOUSE_CLUSTER needs a ClickHouse server "
                             "(INTRADAY_TELEMETRY_BACKEND=clickhouse), not chDB")
        else:
            backend = ChdbBackend(settings.chdb_path)
        return cls(backend, settings.clickhouse_database, cluster)

    def close(self) -> None:
        self._backend.close()

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        """Run SQL with `{db}` standing for this store's database."""
        return self._backend.query_arrow(sql.replace("{db}", self.db), params)

    def frame(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """`query`'s result as a DataFrame."""
        frame: pd.DataFrame = self.query(sql, params).to_pandas()
        return frame

    # -- schema -----------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply the numbered files in sql/clickhouse/ (on a cluster:
        sql/clickhouse-cluster/) that have not run yet,
        in order, and record each with its checksum. Every statement is
        itself re-runnable, so a migration cut short by a crash is simply run
        again. Returns the names applied now."""
        on_cluster = f" ON CLUSTER '{self.cluster}'" if self.cluster else ""
        self._backend.command(f"CREATE DATABASE IF NOT EXISTS {self.db}{on_cluster}")
        files = sorted((CLUSTER_SQL_DIR if self.cluster else SQL_DIR).glob("[0-9][0-9][0-9]_*.sql"))
        self._run_sql_file(files[0])  # 000: the ledger itself
        applied = {
            r["version"]: r["sha256"]
            for r in self.query("SELECT version, sha256 FROM {db}.schema_migrations FINAL").to_pylist()
        }
        done = []
        for path in files:
            version = int(path.name[:3])
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if version in applied:
                if applied[version] != digest:
                    raise MigrationError(
                        f"{path.name} changed after it was applied; add a new migration instead"
                    )
                continue
            self._run_sql_file(path)
            self._backend.insert(
                f"{self.db}.schema_migrations",
                pa.table({"version": pa.array([version], pa.uint32()),
                          "name": [path.name], "sha256": [digest]}),
            )
            done.append(path.name)
        return done

    def _run_sql_file(self, path: Path) -> None:
        text = re.sub(r"--[^\n]*", "", path.read_text())
        text = text.replace("{db}", self.db).replace("{cluster}", self.cluster)
        for statement in (s.strip() for s in text.split(";")):
            if statement:
                self._backend.command(statement)

    # -- writes -----------------------------------------------------------

    def insert_readings(self, readings: pd.DataFrame | pa.Table) -> int:
        """Append validated readings as they are; `intraday.telemetry.ingest`
        is the way in that validates and deduplicates. Parts are not merged
        on insert: the 15-minute table collapses in the background, and every
        read aggregates anyway."""
        table = _as_arrow(readings, READING_COLUMNS)
        self._backend.insert(f"{self.db}.power_consumption", table, FAST_INSERT)
        return int(table.num_rows)

    def upsert_devices(self, devices: pd.DataFrame) -> int:
        cols = [c for c in DEVICE_COLUMNS if c in devices.columns]
        self._backend.insert(f"{self.db}.devices", _as_arrow(devices, cols))
        return len(devices)

    def write_registry(self, devices: pd.DataFrame, now: datetime, changed_by: str, change_id: str) -> int:
        """Write whole registry rows (every attribute, None for unknown) as
        one insert, versioned `now`: `intraday.telemetry.registry` is the
        way in that validates and merges."""
        n = len(devices)
        text = {c: pa.array([v if isinstance(v, str) else "" for v in devices[c]], pa.string())
                for c in ("location", "country", "building_type", "heat_pump_type", "tariff")}
        numbers = {c: pa.array([None if v is None or v != v else float(v) for v in devices[c]], pa.float64())
                   for c in ("latitude", "longitude", "rated_power_kw", "heated_area_m2", "setpoint_c")}
        table = pa.table({
            "device_id": pa.array(devices["device_id"].astype(str), pa.string()),
            **text, **numbers,
            "installed_date": pa.array(list(devices["installed_date"]), pa.date32()),
            "retired_at": pa.array([None if v is None or v is pd.NaT else to_utc(v)
                                    for v in devices["retired_at"]], pa.timestamp("ms", tz="UTC")),
            "changed_by": pa.array([changed_by] * n, pa.string()),
            "change_id": pa.array([change_id] * n, pa.string()),
            "updated_at": pa.array([to_utc(now)] * n, pa.timestamp("ms", tz="UTC")),
        })
        # Not-null float columns take NaN for unknown (a NULL would be 0).
        for c in ("rated_power_kw", "heated_area_m2", "setpoint_c"):
            i = table.schema.get_field_index(c)
            table = table.set_column(i, c, pc.fill_null(table.column(c), float("nan")))
        self._backend.insert(f"{self.db}.devices", table)
        return n

    def insert_weather(self, weather: pd.DataFrame | pa.Table) -> int:
        table = _as_arrow(weather, WEATHER_COLUMNS)
        self._backend.insert(f"{self.db}.weather", table, FAST_INSERT)
        return int(table.num_rows)

    def insert_quarantine(self, rows: pd.DataFrame) -> int:
        self._backend.insert(f"{self.db}.ingest_quarantine", _as_arrow(rows, QUARANTINE_COLUMNS))
        return len(rows)

    def record_batch(self, record: dict[str, Any]) -> None:
        self._backend.insert(
            f"{self.db}.ingest_batches", pa.Table.from_pylist([record])
        )

    # -- ingest bookkeeping -----------------------------------------------

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        rows = self.query(
            "SELECT batch_id, content_sha256, source, status, report"
            " FROM {db}.ingest_batches FINAL WHERE batch_id = {batch_id:String}",
            {"batch_id": batch_id},
        ).to_pylist()
        return rows[0] if rows else None

    def actors_pending(self, since: datetime, limit: int = 1000) -> list[dict[str, Any]]:
        """Batches that stored readings not yet sent to the DeviceActors,
        oldest first: `batch_id` and the `touched` spans of its report. Only
        batches with readings from `since` on (older ones lie outside every
        actor's window)."""
        rows = self.query(
            "SELECT batch_id, report FROM {db}.ingest_batches FINAL"
            " WHERE inserted > 0"
            "   AND parseDateTime64BestEffortOrZero(JSONExtractString(report, 'last_timestamp'), 3, 'UTC')"
            "       >= {since:DateTime64(3, 'UTC')}"
            "   AND batch_id NOT IN (SELECT batch_id FROM {db}.actor_refresh)"
            " ORDER BY received_at, batch_id LIMIT {limit:UInt32}",
            {"since": _ch_time(since), "limit": limit},
        ).to_pylist()
        return [{"batch_id": r["batch_id"], "touched": json.loads(r["report"]).get("touched", {})}
                for r in rows]

    def mark_actors_refreshed(self, batches: dict[str, int]) -> None:
        """Record batches (id -> devices refreshed) as sent to the actors."""
        if batches:
            self._backend.insert(f"{self.db}.actor_refresh", pa.table({
                "batch_id": pa.array(list(batches), pa.string()),
                "devices": pa.array(list(batches.values()), pa.uint32()),
            }))

    def actors_refreshed_at(self, batch_id: str) -> datetime | None:
        rows = self.query(
            "SELECT refreshed_at FROM {db}.actor_refresh FINAL WHERE batch_id = {batch_id:String}",
            {"batch_id": batch_id},
        ).column(0).to_pylist()
        return rows[0] if rows else None

    def quarantined(self, batch_id: str | None = None) -> pd.DataFrame:
        where = "WHERE batch_id = {batch_id:String}" if batch_id is not None else ""
        return self.frame(
            f"SELECT {', '.join(QUARANTINE_COLUMNS)} FROM {{db}}.ingest_quarantine FINAL {where}"
            " ORDER BY batch_id, row",
            {"batch_id": batch_id} if batch_id is not None else None,
        )

    def latest_intervals(self, since: datetime) -> dict[str, datetime]:
        """Each device's newest quarter-hour with readings since `since`
        (devices without any are left out)."""
        rows = self.query(
            "SELECT device_id, toInt64(max(interval_start)) AS last FROM {db}.power_consumption_15min"
            " WHERE interval_start >= toDateTime({since:Int64}, 'UTC') GROUP BY device_id",
            {"since": int(to_utc(since).timestamp())}).to_pylist()
        return {r["device_id"]: datetime.fromtimestamp(r["last"], UTC) for r in rows}

    def known_devices(self) -> set[str]:
        """Every registered device, retired ones too (their history stays)."""
        return set(self.query("SELECT device_id FROM {db}.devices FINAL").column(0).to_pylist())

    def retirements(self) -> dict[str, datetime]:
        """Retired devices and when they left the fleet."""
        rows = self.query("SELECT device_id, retired_at FROM {db}.devices FINAL"
                          " WHERE retired_at IS NOT NULL").to_pylist()
        return {r["device_id"]: r["retired_at"] for r in rows}

    def registry_version(self) -> str:
        """Changes whenever the fleet list does: a device written, or a
        retirement's time passed."""
        row = self.query("SELECT count() AS n, toString(max(updated_at)) AS last,"
                         f" countIf({ACTIVE}) AS active FROM {{db}}.devices FINAL").to_pylist()[0]
        return f"{row['n']}-{row['active']}-{row['last']}"

    def stored_readings(self, device_ids: list[str], first: datetime, last: datetime) -> pd.DataFrame:
        """Raw readings of these devices with first <= timestamp <= last."""
        return self.frame(
            f"SELECT {', '.join(READING_COLUMNS)} FROM {{db}}.power_consumption {_KEY_RANGE}",
            _key_range(device_ids, first, last),
        )

    def stored_matching(self, keys: pa.Table) -> pd.DataFrame:
        """Stored readings with these (device_id, timestamp) keys. The keys
        go into a scratch Memory table and are matched inside the engine, so
        a batch spread over the whole fleet and month never pulls the
        month's readings into Python. They are matched by a 64-bit hash
        (3x faster than the (String, DateTime64) tuple over a month of the
        fleet): the rare row of a colliding key is returned too, and the
        caller matches keys exactly."""
        scratch = f"{self.db}.ingest_keys_{uuid.uuid4().hex}"
        first = pc.min(keys.column("timestamp")).as_py()
        last = pc.max(keys.column("timestamp")).as_py()
        ids = pc.unique(keys.column("device_id")).to_pylist()
        self._backend.command(
            f"CREATE TABLE {scratch} (device_id String, timestamp DateTime64(3, 'UTC')) ENGINE = Memory"
        )
        try:
            self._backend.insert(scratch, keys.select(["device_id", "timestamp"]))
            return self.frame(
                f"SELECT {', '.join(READING_COLUMNS)} FROM {{db}}.power_consumption {_KEY_RANGE}"
                f"  AND cityHash64(device_id, timestamp) IN"
                f"      (SELECT cityHash64(device_id, timestamp) FROM {scratch})",
                _key_range(ids, first, last),
            )
        finally:
            self._backend.command(f"DROP TABLE IF EXISTS {scratch}")

    def stored_spans(self, device_ids: list[str], first: datetime, last: datetime) -> pd.DataFrame:
        """Per device, its first and last stored reading between `first` and
        `last` (`lo`, `hi` in epoch milliseconds); devices with none there
        are absent. Tells ingest which new rows could be stored already."""
        return self.frame(
            "SELECT device_id, toUnixTimestamp64Milli(min(timestamp)) AS lo,"
            "       toUnixTimestamp64Milli(max(timestamp)) AS hi"
            f" FROM {{db}}.power_consumption {_KEY_RANGE} GROUP BY device_id",
            _key_range(device_ids, first, last),
        )

    # -- reads ------------------------------------------------------------

    def devices(self, include_retired: bool = False) -> list[dict[str, Any]]:
        """The fleet's devices (by default those not retired) as JSON-ready
        dicts: unknown values None, times ISO 8601."""
        where = "" if include_retired else f" WHERE {ACTIVE}"
        return _json_rows(self.query(
            f"SELECT {DEVICE_SELECT} FROM {{db}}.devices FINAL{where} ORDER BY device_id").to_pylist())

    def device(self, device_id: str) -> dict[str, Any] | None:
        """A registered device, retired or not (`retired_at` says)."""
        rows = self.query(
            f"SELECT {DEVICE_SELECT} FROM {{db}}.devices FINAL WHERE device_id = {{device_id:String}}",
            {"device_id": check_device_id(device_id)},
        ).to_pylist()
        return _json_rows(rows)[0] if rows else None

    def registry_rows(self, device_ids: list[str]) -> list[dict[str, Any]]:
        """Stored registry rows of these devices (retired too), with Python
        values: what a change merges into."""
        rows = self.query(
            f"SELECT {', '.join(REGISTRY_COLUMNS)} FROM {{db}}.devices FINAL"
            " WHERE device_id IN {ids:Array(String)}", {"ids": list(device_ids)}).to_pylist()
        return _unknown_as_none(rows)

    def device_count(self) -> int:
        return int(self.query("SELECT count() AS n FROM {db}.devices FINAL").column(0)[0].as_py())

    def window(self, device_id: str, start: datetime, end: datetime) -> TelemetryWindow:
        """Mean power per quarter-hour in [start, end) on a regular grid, with
        NaN where no reading arrived."""
        fleet = self.fleet_window(start, end, [check_device_id(device_id)])
        return fleet.device(0)

    def fleet_window(
        self, start: datetime, end: datetime, device_ids: list[str] | None = None
    ) -> FleetWindow:
        """Mean power per device and quarter-hour in [start, end) as one
        (devices x intervals) float64 matrix, NaN where no reading arrived.
        Rows follow `device_ids`, or every device of the fleet in id order;
        a device without data in the window is a row of NaN."""
        start, end = to_utc(start), to_utc(end)
        n = int((end - start) / QUARTER_HOUR)
        if n <= 0:
            raise ValueError(f"empty window: start {start} is not before end {end}")
        params: dict[str, Any] = {"start": int(start.timestamp()), "end": int(end.timestamp())}
        where = ""
        if device_ids is not None:
            where = " AND device_id IN {ids:Array(String)}"
            params["ids"] = list(device_ids)
        # The rows as stored, unaggregated: a GROUP BY over (device, interval)
        # builds a hash table of every cell (28.8 M for the fleet, ~6 s on two
        # cores), while placing them into the matrix takes NumPy a fraction of
        # that. For the whole fleet, device ids come dictionary-encoded, so
        # strings are looked up once per part, not once per row.
        encode = " SETTINGS output_format_arrow_low_cardinality_as_dictionary = 1"
        index_type = "UInt16" if n <= 65535 else "UInt32"  # narrower rows cross faster
        table = self.query(
            "SELECT device_id,"
            f"      to{index_type}((toUnixTimestamp(interval_start) - {{start:Int64}}) / 900) AS i,"
            "       power_sum, samples"
            " FROM {db}.power_consumption_15min"
            " WHERE interval_start >= toDateTime({start:Int64}, 'UTC')"
            "   AND interval_start < toDateTime({end:Int64}, 'UTC')" + where
            + (encode if device_ids is None else ""),
            params,
        )
        ids, idx = table.column("device_id"), table.column("i")
        if device_ids is None:
            rows = np.array(sorted(self.known_devices()), dtype=object)
            try:
                cells = cell_indexes(ids, idx, rows, n)
            except KeyError as e:
                # Readings of devices never registered (raw inserts bypass
                # ingest's check): they get rows too.
                rows = np.array(sorted(set(rows) | set(e.args[0])), dtype=object)
                cells = cell_indexes(ids, idx, rows, n)
        else:
            rows = np.asarray(list(device_ids), dtype=object)
            cells = cell_indexes(ids, idx, rows, n)
        # Chunk by chunk: no 28.8 M-row concatenations to allocate.
        sums, samples = table.column("power_sum").chunks, table.column("samples").chunks
        chunks = list(zip(cells, sums, samples, strict=True))
        values = np.full(len(rows) * n, np.nan)
        for cell, power_sum, count in chunks:
            values[cell] = power_sum.to_numpy() / count.to_numpy()
        if len(values) - np.count_nonzero(np.isnan(values)) < table.num_rows:
            sum_split_cells(values, chunks)
        return FleetWindow(rows, start, values.reshape(len(rows), n))

    def recent_windows(self, start: datetime, cut: datetime, end: datetime,
                       device_ids: list[str]) -> tuple[FleetWindow, np.ndarray, np.ndarray]:
        """The windows [start, end) of `device_ids` cut at `cut`
        (TelemetryWindow.cut): the values of [cut, end), and per device the
        index of its first reading in [start, end) relative to `cut`
        (negative: before it; the cut window's length: none) and how many
        quarter-hours of [start, cut) have no reading. The older part is
        counted in the query, not shipped."""
        start, cut, end = to_utc(start), to_utc(cut), to_utc(end)
        cut = min(max(cut, start), end - QUARTER_HOUR)
        fleet = self.fleet_window(cut, end, device_ids)
        n = fleet.values.shape[1]
        ok = ~np.isnan(fleet.values)
        first = np.where(ok.any(axis=1), ok.argmax(axis=1), n).astype(np.int64)
        before = int((cut - start) / QUARTER_HOUR)
        missing = np.full(len(device_ids), before, dtype=np.int64)
        if before:
            table = self.query(
                "SELECT device_id, uniqExact(interval_start) AS cells,"
                "       toInt64(min(toUnixTimestamp(interval_start))) AS first"
                " FROM {db}.power_consumption_15min"
                " WHERE interval_start >= toDateTime({start:Int64}, 'UTC')"
                "   AND interval_start < toDateTime({cut:Int64}, 'UTC')"
                "   AND device_id IN {ids:Array(String)}"
                " GROUP BY device_id",
                {"start": int(start.timestamp()), "cut": int(cut.timestamp()), "ids": list(device_ids)})
            if table.num_rows:
                row = {d: k for k, d in enumerate(device_ids)}
                rows = np.fromiter((row[d] for d in table.column("device_id").to_pylist()), np.int64)
                missing[rows] -= table.column("cells").to_numpy().astype(np.int64)
                first[rows] = (table.column("first").to_numpy() - int(cut.timestamp())) // 900
        return fleet, first, missing

    def portfolio_actuals(self, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray]:
        """The fleet's measured total per quarter-hour in [start, end): the
        sum of the devices' mean power (kW) and how many devices reported,
        each of length (end - start) / 15 min; NaN and 0 where none did."""
        start, end = to_utc(start), to_utc(end)
        n = int((end - start) / QUARTER_HOUR)
        if n <= 0:
            raise ValueError(f"empty window: start {start} is not before end {end}")
        table = self.query(
            "SELECT toUInt32((toUnixTimestamp(t) - {start:Int64}) / 900) AS i, sum(mean) AS total,"
            "       count() AS devices"
            " FROM (SELECT device_id, interval_start AS t, sum(power_sum) / sum(samples) AS mean"
            "       FROM {db}.power_consumption_15min"
            "       WHERE interval_start >= toDateTime({start:Int64}, 'UTC')"
            "         AND interval_start < toDateTime({end:Int64}, 'UTC')"
            "       GROUP BY device_id, t)"
            " GROUP BY i",
            {"start": int(start.timestamp()), "end": int(end.timestamp())},
        )
        total, devices = np.full(n, np.nan), np.zeros(n, dtype=np.int64)
        idx = table.column("i").to_numpy()
        total[idx] = table.column("total").to_numpy()
        devices[idx] = table.column("devices").to_numpy()
        return total, devices

    def weather_forecasts(self, locations: list[str], start: datetime, end: datetime) -> pd.DataFrame:
        """Every temperature forecast issued in [start, end) for `locations`:
        location, issued_at, timestamp, outdoor_temp (the training data of a
        model that reads forecasts as they were issued)."""
        table = self.query(
            "SELECT location, issued_at, timestamp, outdoor_temp_c AS outdoor_temp FROM {db}.weather"
            " WHERE kind = 'forecast' AND location IN {locs:Array(String)}"
            "   AND issued_at >= toDateTime({start:Int64}, 'UTC')"
            "   AND issued_at < toDateTime({end:Int64}, 'UTC')",
            {"locs": list(locations), "start": int(to_utc(start).timestamp()),
             "end": int(to_utc(end).timestamp())},
        )
        df: pd.DataFrame = table.to_pandas()
        for col in ("issued_at", "timestamp"):
            if col in df and not isinstance(df[col].dtype, pd.DatetimeTZDtype):
                df[col] = pd.to_datetime(df[col].astype("int64"), unit="s", utc=True)
        return df

    def newest_forecasts(self, locations: list[str], as_of: datetime | None = None) -> dict[str, datetime]:
        """Per location, when its newest temperature forecast (known at
        `as_of`, if given) was issued; locations without any are left out."""
        params: dict[str, Any] = {"locs": list(locations)}
        known = ""
        if as_of is not None:
            known, params["as_of"] = " AND issued_at <= toDateTime({as_of:Int64}, 'UTC')", int(
                to_utc(as_of).timestamp())
        rows = self.query(
            "SELECT location, toInt64(max(issued_at)) AS issued FROM {db}.weather"
            " WHERE kind = 'forecast' AND location IN {locs:Array(String)}" + known + " GROUP BY location",
            params).to_pylist()
        return {r["location"]: datetime.fromtimestamp(r["issued"], UTC) for r in rows}

    def weather_window(
        self, locations: list[str], start: datetime, end: datetime, as_of: datetime
    ) -> np.ndarray:
        """Outdoor temperature (degC) per location and quarter-hour in
        [start, end) as known at `as_of`: the observation where one was made
        by then, otherwise the latest forecast issued by then; NaN where
        neither exists. Shape (locations, intervals)."""
        start, end, as_of = to_utc(start), to_utc(end), to_utc(as_of)
        # Values just outside the span too: an hourly feed's quarter-hours
        # at its edges lie between a value inside and one outside.
        pad = WEATHER_MAX_GAP
        n = int((end - start) / QUARTER_HOUR)
        start, end = start - pad * QUARTER_HOUR, end + pad * QUARTER_HOUR
        table = self.query(
            "SELECT location, toUInt32((toUnixTimestamp(timestamp) - {start:Int64}) / 900) AS i,"
            "       argMax(outdoor_temp_c, (kind = 'observed', issued_at)) AS temp"
            " FROM {db}.weather"
            " WHERE location IN {locs:Array(String)}"
            "   AND timestamp >= toDateTime({start:Int64}, 'UTC')"
            "   AND timestamp < toDateTime({end:Int64}, 'UTC')"
            "   AND issued_at <= toDateTime({as_of:Int64}, 'UTC')"
            " GROUP BY location, timestamp",
            {"locs": list(locations), "start": int(start.timestamp()),
             "end": int(end.timestamp()), "as_of": int(as_of.timestamp())},
        )
        out = np.full((len(locations), n + 2 * pad), np.nan)
        row = {loc: k for k, loc in enumerate(locations)}
        r = np.array([row[x] for x in table.column("location").to_pylist()], dtype=np.int64)
        out[r, table.column("i").to_numpy()] = table.column("temp").to_numpy()
        return fill_gaps(out)[:, pad : pad + n]  # hourly feeds: the quarter-hours between their values


def _unknown_as_none(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NaN (an unknown number) as None."""
    for r in rows:
        for k, v in r.items():
            if isinstance(v, float) and v != v:
                r[k] = None
    return rows


def _json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Unknown numbers as None, times as ISO 8601 with a Z."""
    for r in _unknown_as_none(rows):
        for k, v in r.items():
            if isinstance(v, datetime):
                r[k] = isoformat_z(v)
    return rows


def _as_arrow(data: pd.DataFrame | pa.Table, columns: list[str]) -> pa.Table:
    """Arrow columns for an insert. Float columns keep NaN as NaN (a value
    ClickHouse stores), not as null (which a Float64 column would turn into 0)."""
    if isinstance(data, pa.Table):
        return data.select(columns)
    arrays = [
        pa.array(data[c].to_numpy(dtype=np.float64)) if pd.api.types.is_float_dtype(data[c])
        else pa.Array.from_pandas(data[c])
        for c in columns
    ]
    return pa.Table.from_arrays(arrays, names=columns)


# Readings of some devices with first <= timestamp <= last (the sort key).
_KEY_RANGE = (
    "WHERE device_id IN {ids:Array(String)}"
    " AND timestamp >= {first:DateTime64(3, 'UTC')} AND timestamp <= {last:DateTime64(3, 'UTC')}"
)


def _key_range(device_ids: list[str], first: datetime, last: datetime) -> dict[str, Any]:
    return {"ids": list(device_ids), "first": _ch_time(first), "last": _ch_time(last)}


def _ch_time(t: datetime) -> str:
    """A DateTime64(3, 'UTC') query parameter."""
    return to_utc(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
