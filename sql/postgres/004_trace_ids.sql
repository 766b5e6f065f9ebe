-- The trace (W3C trace id, 32 hex digits) that made a fleet forecast or a
-- trade decision, as forecast_requests.trace_id is for a device forecast: an
-- auditor goes from a number to its trace in Zipkin / Cloud Trace.
-- Applied on every migrate, so every statement is idempotent.
ALTER TABLE fleet_forecasts ADD COLUMN IF NOT EXISTS trace_id text;
ALTER TABLE trade_decisions ADD COLUMN IF NOT EXISTS trace_id text;
