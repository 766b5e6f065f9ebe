-- Raw heat-pump meter readings (kW), any resolution.
CREATE TABLE IF NOT EXISTS {db}.power_consumption
(
    device_id           LowCardinality(String),
    timestamp           DateTime64(3, 'UTC'),
    power               Float64,
    heating_electricity Float64,
    dhw_electricity     Float64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (device_id, timestamp);

-- 15-minute aggregates, kept up to date by the materialized view below.
-- Sums and counts (not means) so that partial aggregates merge exactly;
-- mean power of an interval = power_sum / samples.
CREATE TABLE IF NOT EXISTS {db}.power_consumption_15min
(
    device_id      LowCardinality(String),
    interval_start DateTime('UTC'),
    power_sum      Float64,
    heating_sum    Float64,
    dhw_sum        Float64,
    samples        UInt32
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(interval_start)
ORDER BY (device_id, interval_start);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.power_consumption_15min_mv
TO {db}.power_consumption_15min AS
SELECT
    device_id,
    toStartOfFifteenMinutes(timestamp) AS interval_start,
    sum(power)               AS power_sum,
    sum(heating_electricity) AS heating_sum,
    sum(dhw_electricity)     AS dhw_sum,
    toUInt32(count())        AS samples
FROM {db}.power_consumption
GROUP BY device_id, interval_start;
