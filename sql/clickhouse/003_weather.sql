-- Outdoor temperature per location: observations and issued forecasts.
-- `issued_at` is when a value became known: the forecast run's issue time,
-- or the observation's own timestamp. A feature at time T may only use rows
-- with issued_at <= T; that is how the horizon gets a forecast and never the
-- realized value. A re-sent row replaces the earlier copy (same key).
CREATE TABLE IF NOT EXISTS {db}.weather
(
    location       LowCardinality(String),
    kind           Enum8('observed' = 1, 'forecast' = 2),
    timestamp      DateTime('UTC'),
    issued_at      DateTime('UTC'),
    outdoor_temp_c Float64,
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(timestamp)
ORDER BY (location, kind, timestamp, issued_at);
