-- Raw meter readings and their 15-minute aggregates, sharded by device
-- (the cluster's twin of ../clickhouse/001_power_consumption.sql).
CREATE TABLE IF NOT EXISTS {db}.power_consumption_local ON CLUSTER '{cluster}'
(
    device_id           LowCardinality(String),
    timestamp           DateTime64(3, 'UTC'),
    power               Float64,
    heating_electricity Float64,
    dhw_electricity     Float64
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{db}/power_consumption_local', '{replica}')
PARTITION BY toYYYYMM(timestamp)
ORDER BY (device_id, timestamp);

CREATE TABLE IF NOT EXISTS {db}.power_consumption ON CLUSTER '{cluster}' AS {db}.power_consumption_local
ENGINE = Distributed('{cluster}', '{db}', 'power_consumption_local', cityHash64(device_id));

CREATE TABLE IF NOT EXISTS {db}.power_consumption_15min_local ON CLUSTER '{cluster}'
(
    device_id      LowCardinality(String),
    interval_start DateTime('UTC'),
    power_sum      Float64,
    heating_sum    Float64,
    dhw_sum        Float64,
    samples        UInt32
)
ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/{db}/power_consumption_15min_local', '{replica}')
PARTITION BY toYYYYMM(interval_start)
ORDER BY (device_id, interval_start);

CREATE TABLE IF NOT EXISTS {db}.power_consumption_15min ON CLUSTER '{cluster}' AS {db}.power_consumption_15min_local
ENGINE = Distributed('{cluster}', '{db}', 'power_consumption_15min_local', cityHash64(device_id));

-- On each shard, from its readings into its aggregates.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.power_consumption_15min_mv ON CLUSTER '{cluster}'
TO {db}.power_consumption_15min_local AS
SELECT
    device_id,
    toStartOfFifteenMinutes(timestamp) AS interval_start,
    sum(power)               AS power_sum,
    sum(heating_electricity) AS heating_sum,
    sum(dhw_electricity)     AS dhw_sum,
    toUInt32(count())        AS samples
FROM {db}.power_consumption_local
GROUP BY device_id, interval_start;
