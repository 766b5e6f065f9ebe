-- Ingest batches whose new readings have reached the DeviceActors' windows
-- in Redis (`ExtendWindow`). The telemetry service refreshes actors right
-- after the batches it ingests itself; batches written while it was down (a
-- file ingested from the command line, a generated fleet) have no row here
-- yet, and the service catches them up.
CREATE TABLE IF NOT EXISTS {db}.actor_refresh
(
    batch_id     String,
    devices      UInt32,
    refreshed_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(refreshed_at)
ORDER BY batch_id;
