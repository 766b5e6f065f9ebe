-- Audit trail: who asked for which forecast, which model and data window
-- produced it, the numbers themselves, and the trade decisions taken on them.
CREATE TABLE IF NOT EXISTS forecast_requests (
    request_id        text PRIMARY KEY,          -- workflow instance id
    device_id         text        NOT NULL,
    forecast_start    timestamptz NOT NULL,
    horizon_intervals integer     NOT NULL CHECK (horizon_intervals > 0),
    model_version     text        NOT NULL,
    data_window_start timestamptz NOT NULL,
    data_window_end   timestamptz NOT NULL,
    requested_by      text        NOT NULL,
    requested_at      timestamptz NOT NULL,
    completed_at      timestamptz NOT NULL DEFAULT now(),
    trace_id          text
);
CREATE INDEX IF NOT EXISTS forecast_requests_device_start
    ON forecast_requests (device_id, forecast_start);

CREATE TABLE IF NOT EXISTS forecast_results (
    request_id     text        NOT NULL REFERENCES forecast_requests ON DELETE CASCADE,
    interval_start timestamptz NOT NULL,
    interval_end   timestamptz NOT NULL,
    p10            double precision NOT NULL,
    p50            double precision NOT NULL,
    p90            double precision NOT NULL,
    PRIMARY KEY (request_id, interval_start),
    CHECK (p10 <= p50 AND p50 <= p90)
);

CREATE TABLE IF NOT EXISTS trade_decisions (
    decision_id         text PRIMARY KEY,
    decided_at          timestamptz NOT NULL,
    price_eur_mwh       double precision NOT NULL,
    reference_price     double precision,      -- price at the previous forecast
    forecast_start      timestamptz NOT NULL,
    forecast_ids        text[]      NOT NULL,
    buy_mwh             double precision NOT NULL,
    sell_mwh            double precision NOT NULL,
    orders              jsonb       NOT NULL    -- per interval: forecast, position, order
);

-- Net position per delivery interval (MW, + bought), updated with each decision.
CREATE TABLE IF NOT EXISTS positions (
    interval_start timestamptz PRIMARY KEY,
    position_mw    double precision NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
