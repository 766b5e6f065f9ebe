-- Every price tick the trading service took in, with the rule's verdict:
-- the price feed the dashboard draws, and which ticks moved the rule to
-- forecast and trade (their decision has the same id in trade_decisions).
-- One row per price message (its id is the decision id a move would
-- have), so a redelivered message is not a second tick. Applied on every
-- migrate, so every statement is idempotent.
CREATE TABLE IF NOT EXISTS price_ticks (
    tick_id        text PRIMARY KEY,
    at             timestamptz NOT NULL,
    price_eur_mwh  double precision NOT NULL,
    market         text NOT NULL,
    verdict        text NOT NULL,   -- move | no_move | debounced | ... (the rule actor's state)
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS price_ticks_received ON price_ticks (received_at DESC);
CREATE INDEX IF NOT EXISTS trade_decisions_decided ON trade_decisions (decided_at DESC);
CREATE INDEX IF NOT EXISTS fleet_forecasts_completed ON fleet_forecasts (completed_at DESC);
CREATE INDEX IF NOT EXISTS forecast_requests_device_completed
    ON forecast_requests (device_id, completed_at DESC);
