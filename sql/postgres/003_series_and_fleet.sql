-- A device forecast's numbers as one row of arrays (interval i of the
-- horizon is element i + 1, starting at forecast_start, a quarter-hour each):
-- a fleet forecast of 10,000 devices is 10,000 rows in one COPY instead of
-- 960,000 (bench/audit_write.py). Forecasts recorded before this migration
-- keep their rows in forecast_results; readers look in both.
-- Applied on every migrate, so every statement is idempotent.
CREATE TABLE IF NOT EXISTS forecast_series (
    request_id text PRIMARY KEY REFERENCES forecast_requests ON DELETE CASCADE,
    p10        double precision[] NOT NULL,
    p50        double precision[] NOT NULL,
    p90        double precision[] NOT NULL,
    mean       double precision[] NOT NULL
);

-- What the result served from the audit store needs besides the numbers,
-- and the fleet forecast a device forecast was made in (NULL: on its own).
ALTER TABLE forecast_requests
    ADD COLUMN IF NOT EXISTS history_days double precision,
    ADD COLUMN IF NOT EXISTS missing_intervals integer,
    ADD COLUMN IF NOT EXISTS notes text[] NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS fleet_forecast_id text;
CREATE INDEX IF NOT EXISTS forecast_requests_fleet
    ON forecast_requests (fleet_forecast_id) WHERE fleet_forecast_id IS NOT NULL;

-- A portfolio (fleet) forecast: who asked, which model, the data it read
-- (every device's window ends at data_end), the total (mean and quantiles per
-- interval), which device forecast it summed for each device, and the devices
-- that could not be forecast with the reason. Each device forecast is audited
-- in forecast_requests / forecast_series like a single one.
CREATE TABLE IF NOT EXISTS fleet_forecasts (
    fleet_forecast_id text PRIMARY KEY,
    forecast_start    timestamptz NOT NULL,
    horizon_intervals integer     NOT NULL CHECK (horizon_intervals > 0),
    model_version     text        NOT NULL,
    data_end          timestamptz NOT NULL,
    device_ids        text[]      NOT NULL,   -- the devices in the total
    forecast_ids      text[]      NOT NULL,   -- their forecasts, in the same order
    failed            jsonb       NOT NULL DEFAULT '{}',  -- device_id -> reason
    portfolio         jsonb       NOT NULL,   -- PortfolioForecast.to_dict()
    requested_by      text        NOT NULL,
    requested_at      timestamptz NOT NULL,
    completed_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (cardinality(device_ids) = cardinality(forecast_ids))
);
