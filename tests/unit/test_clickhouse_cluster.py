"""The telemetry schema for a ClickHouse cluster (sql/clickhouse-cluster),
checked on chDB as far as one embedded engine can go.

chDB parses every statement as written and knows a cluster from a config
file (two shards here), so the Distributed tables are really created; it
has no ClickHouse Keeper, so `ON CLUSTER` and the Replicated engines are
run without it (the same tables, not replicated), and it is no server, so
nothing is read or written through a Distributed table here. What is
checked: each one-server table has its twin (same columns, types, keys,
partitions and engine family), a Distributed table of the same name over
the shards' tables sharded by the first column of its sorting key (so what
FINAL and the merges collapse sits on one shard), and the 15-minute view
aggregates each shard's readings as the one-server view does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from intraday.config import Settings
from intraday.telemetry.store import CLUSTER_SQL_DIR, SQL_DIR, TelemetryStore

CLUSTER = "intraday"
CONFIG = f"""<clickhouse>
  <remote_servers>
    <{CLUSTER}>
      <shard><replica><host>ch-1</host><port>9000</port></replica></shard>
      <shard><replica><host>ch-2</host><port>9000</port></replica></shard>
    </{CLUSTER}>
  </remote_servers>
  <macros><shard>01</shard><replica>ch-1</replica></macros>
</clickhouse>
"""


def _statements(path: Path, db: str) -> list[str]:
    text = re.sub(r"--[^\n]*", "", path.read_text()).replace("{db}", db).replace("{cluster}", CLUSTER)
    return [s.strip() for s in text.split(";") if s.strip()]


def _without_keeper(statement: str) -> str:
    """The statement as one host runs it without ClickHouse Keeper: no
    ON CLUSTER, and the Replicated engines' own (unreplicated) family."""
    statement = statement.replace(f" ON CLUSTER '{CLUSTER}'", "")
    return re.sub(r"Replicated(\w*MergeTree)\('[^']*', '\{replica\}'(?:, )?", r"\1(", statement)


@pytest.fixture(scope="module")
def chdb_cluster(tmp_path_factory):
    from chdb import session

    work = tmp_path_factory.mktemp("clickhouse-cluster")
    (work / "config.xml").write_text(CONFIG)
    s = session.Session(f"{work / 'db'}?config-file={work / 'config.xml'}")
    for db in ("single", "clustered"):
        s.query(f"CREATE DATABASE IF NOT EXISTS {db}")
    for path in sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql")):
        for statement in _statements(path, "single"):
            s.query(statement)
    for path in sorted(CLUSTER_SQL_DIR.glob("[0-9][0-9][0-9]_*.sql")):
        for statement in _statements(path, "clustered"):
            s.query(_without_keeper(statement))
    yield s
    s.close()


def _rows(s, sql: str) -> list[tuple]:
    out = s.query(sql, "JSONCompact")
    return [tuple(r) for r in json.loads(str(out))["data"]] if len(out) else []


def test_every_migration_has_its_cluster_twin():
    single = sorted(p.name for p in SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    assert single == sorted(p.name for p in CLUSTER_SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))


def test_every_cluster_statement_parses_as_written(chdb_cluster):
    for path in sorted(CLUSTER_SQL_DIR.glob("[0-9][0-9][0-9]_*.sql")):
        for statement in _statements(path, "clustered"):
            assert "ON CLUSTER" in statement, (path.name, statement[:80])
            ast = str(chdb_cluster.query(f"EXPLAIN AST {statement}", "TSVRaw"))
            assert ast.startswith(("CreateQuery", "AlterQuery")), (path.name, ast[:200])
            if "ENGINE = Replicated" in statement:
                path_and_replica = r"'/clickhouse/tables/\{shard\}/clustered/\w+_local', '\{replica\}'"
                assert re.search(path_and_replica, statement), statement[:120]


def _tables(s, db: str) -> dict[str, tuple]:
    rows = _rows(s, "SELECT name, engine, engine_full, sorting_key, partition_key FROM system.tables"
                    f" WHERE database = '{db}'")
    return {name: rest for name, *rest in rows}


def _columns(s, db: str, table: str) -> list[tuple]:
    return _rows(s, f"SELECT name, type, default_expression FROM system.columns"
                    f" WHERE database = '{db}' AND table = '{table}' ORDER BY position")


def test_each_table_is_a_replicated_table_per_shard_and_a_distributed_one_of_the_same_name(chdb_cluster):
    single, clustered = _tables(chdb_cluster, "single"), _tables(chdb_cluster, "clustered")
    cluster_sql = "\n".join(p.read_text() for p in sorted(CLUSTER_SQL_DIR.glob("*.sql")))
    stored = {name for name, (engine, *_) in single.items() if engine != "MaterializedView"}
    assert stored == {"schema_migrations", "power_consumption", "power_consumption_15min", "devices",
                      "weather", "ingest_batches", "ingest_quarantine", "actor_refresh"}
    for name in stored:
        engine, _, sorting, partition = single[name]
        local = clustered[f"{name}_local"]
        assert (local[0], local[2], local[3]) == (engine, sorting, partition), name
        created = re.search(rf"{name}_local ON CLUSTER[^;]*?ENGINE = (\w+)\(", cluster_sql, re.S)
        assert created and created[1] == f"Replicated{engine}", name
        # Queries name the same table on both schemas: the Distributed one,
        # with the columns of the one-server table.
        dist_engine, dist_full = clustered[name][0], clustered[name][1]
        assert dist_engine == "Distributed", name
        assert _columns(chdb_cluster, "clustered", name) == _columns(chdb_cluster, "single", name) \
            == _columns(chdb_cluster, "clustered", f"{name}_local"), name
        # Sharded by the first column of the sorting key.
        first = sorting.split(",")[0].strip()
        key = first if name == "schema_migrations" else f"cityHash64({first})"
        assert dist_full == f"Distributed('{CLUSTER}', 'clustered', '{name}_local', {key})", dist_full
    assert {single[name][2].split(",")[0] for name in stored
            if name.startswith(("power_consumption", "devices"))} == {"device_id"}


def test_the_15_minute_view_aggregates_each_shards_readings(chdb_cluster):
    readings = ("SELECT 'hp-' || toString(number % 7) AS device_id,"
                " toDateTime64('2026-01-05 00:00:00', 3, 'UTC') + INTERVAL (number * 97) SECOND AS timestamp,"
                " (number % 13) / 3 AS power, (number % 11) / 4 AS heating_electricity,"
                " (number % 5) / 7 AS dhw_electricity FROM numbers(5000)")
    chdb_cluster.query(f"INSERT INTO single.power_consumption {readings}")
    chdb_cluster.query(f"INSERT INTO clustered.power_consumption_local {readings}")
    query = ("SELECT device_id, interval_start, sum(power_sum), sum(samples) FROM {t}"
             " GROUP BY device_id, interval_start ORDER BY device_id, interval_start")
    single = _rows(chdb_cluster, query.format(t="single.power_consumption_15min"))
    assert len(single) > 500
    assert _rows(chdb_cluster, query.format(t="clustered.power_consumption_15min_local")) == single
    view = _tables(chdb_cluster, "clustered")["power_consumption_15min_mv"]
    assert view[0] == "MaterializedView"


def test_a_cluster_needs_a_clickhouse_server(tmp_path):
    with pytest.raises(ValueError, match="INTRADAY_CLICKHOUSE_CLUSTER needs a ClickHouse server"):
        TelemetryStore.from_settings(Settings(data_dir=tmp_path, clickhouse_cluster=CLUSTER))
