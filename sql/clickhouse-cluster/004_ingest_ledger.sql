-- The ingest ledger and quarantine, sharded by batch id (twin of
-- ../clickhouse/004_ingest_ledger.sql).
CREATE TABLE IF NOT EXISTS {db}.ingest_batches_local ON CLUSTER '{cluster}'
(
    batch_id       String,
    content_sha256 String,
    source         LowCardinality(String),
    status         LowCardinality(String),
    rows           UInt64,
    inserted       UInt64,
    quarantined    UInt64,
    report         String,
    payload        String,
    received_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/ingest_batches_local', '{replica}', received_at)
ORDER BY batch_id;

CREATE TABLE IF NOT EXISTS {db}.ingest_batches ON CLUSTER '{cluster}' AS {db}.ingest_batches_local
ENGINE = Distributed('{cluster}', '{db}', 'ingest_batches_local', cityHash64(batch_id));

CREATE TABLE IF NOT EXISTS {db}.ingest_quarantine_local ON CLUSTER '{cluster}'
(
    batch_id            String,
    row                 UInt32,
    reason              LowCardinality(String),
    detail              String,
    device_id           String,
    timestamp           String,
    power               String,
    heating_electricity String,
    dhw_electricity     String,
    quarantined_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/ingest_quarantine_local', '{replica}', quarantined_at)
ORDER BY (batch_id, row);

CREATE TABLE IF NOT EXISTS {db}.ingest_quarantine ON CLUSTER '{cluster}' AS {db}.ingest_quarantine_local
ENGINE = Distributed('{cluster}', '{db}', 'ingest_quarantine_local', cityHash64(batch_id));
