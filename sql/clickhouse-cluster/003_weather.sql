-- Outdoor temperature per location, sharded by location (twin of
-- ../clickhouse/003_weather.sql: a re-sent row replaces the earlier copy).
CREATE TABLE IF NOT EXISTS {db}.weather_local ON CLUSTER '{cluster}'
(
    location       LowCardinality(String),
    kind           Enum8('observed' = 1, 'forecast' = 2),
    timestamp      DateTime('UTC'),
    issued_at      DateTime('UTC'),
    outdoor_temp_c Float64,
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/weather_local', '{replica}', ingested_at)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (location, kind, timestamp, issued_at);

CREATE TABLE IF NOT EXISTS {db}.weather ON CLUSTER '{cluster}' AS {db}.weather_local
ENGINE = Distributed('{cluster}', '{db}', 'weather_local', cityHash64(location));
