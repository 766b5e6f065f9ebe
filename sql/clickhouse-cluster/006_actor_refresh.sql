-- Ingest batches whose readings reached the DeviceActors, sharded by batch
-- id like the ledger it is checked against (twin of
-- ../clickhouse/006_actor_refresh.sql).
CREATE TABLE IF NOT EXISTS {db}.actor_refresh_local ON CLUSTER '{cluster}'
(
    batch_id     String,
    devices      UInt32,
    refreshed_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/actor_refresh_local', '{replica}', refreshed_at)
ORDER BY batch_id;

CREATE TABLE IF NOT EXISTS {db}.actor_refresh ON CLUSTER '{cluster}' AS {db}.actor_refresh_local
ENGINE = Distributed('{cluster}', '{db}', 'actor_refresh_local', cityHash64(batch_id));
