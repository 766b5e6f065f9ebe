-- One row per ingest batch: its id, a hash of its content and the report the
-- caller got. A batch id seen before returns the stored report instead of
-- writing again; rejected batches keep their raw payload here.
CREATE TABLE IF NOT EXISTS {db}.ingest_batches
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
ENGINE = ReplacingMergeTree(received_at)
ORDER BY batch_id;

-- Rows an ingest batch could not accept, as received (text), with the reason.
-- Keyed by (batch_id, row) so a retried batch does not quarantine twice.
CREATE TABLE IF NOT EXISTS {db}.ingest_quarantine
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
ENGINE = ReplacingMergeTree(quarantined_at)
ORDER BY (batch_id, row);
