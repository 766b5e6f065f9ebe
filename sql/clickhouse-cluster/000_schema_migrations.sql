-- Which numbered migration files have been applied, with their checksum
-- (the cluster's twin of ../clickhouse/000_schema_migrations.sql).
CREATE TABLE IF NOT EXISTS {db}.schema_migrations_local ON CLUSTER '{cluster}'
(
    version    UInt32,
    name       String,
    sha256     String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/schema_migrations_local', '{replica}', applied_at)
ORDER BY version;

CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER '{cluster}' AS {db}.schema_migrations_local
ENGINE = Distributed('{cluster}', '{db}', 'schema_migrations_local', version);
