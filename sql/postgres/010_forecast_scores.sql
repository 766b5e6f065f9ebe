-- Live accuracy (intraday/forecasting/live.py): every published forecast
-- scored against the readings that came after it. `forecast_scorings` has
-- one row per forecast scored (a fleet forecast `fl-...` or a device
-- forecast made on its own `fc-...`), written once, even when no reading
-- came (cells 0): it is not looked at again. `forecast_scores` holds the
-- additive sums of its cells per level (portfolio: the total; device: each
-- device forecast), delivery day (UTC) and 6-hour block of the horizon, so
-- a week's WAPE, bias, pinball and coverage are ratios of summed columns.
-- Applied on every migrate, so every statement is idempotent.
CREATE TABLE IF NOT EXISTS forecast_scorings (
    forecast_id     text PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('fleet', 'device')),
    forecast_start  timestamptz NOT NULL,
    forecast_end    timestamptz NOT NULL,
    model_version   text NOT NULL,
    devices         integer NOT NULL,
    cells           integer NOT NULL,   -- device x interval cells scored
    cells_missing   integer NOT NULL,   -- cells with a forecast but no reading
    scored_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS forecast_scorings_start ON forecast_scorings (forecast_start DESC);

CREATE TABLE IF NOT EXISTS forecast_scores (
    forecast_id     text NOT NULL REFERENCES forecast_scorings ON DELETE CASCADE,
    level           text NOT NULL CHECK (level IN ('portfolio', 'device')),
    day             date NOT NULL,
    block           smallint NOT NULL CHECK (block >= 0),
    model_version   text NOT NULL,
    cells           integer NOT NULL CHECK (cells > 0),
    actual          double precision NOT NULL,
    abs_error_p50   double precision NOT NULL,
    abs_error_mean  double precision NOT NULL,
    error_mean      double precision NOT NULL,
    pinball         double precision NOT NULL,
    inside          integer NOT NULL,
    below           integer NOT NULL,
    above           integer NOT NULL,
    band            double precision NOT NULL,
    PRIMARY KEY (forecast_id, level, day, block)
);
CREATE INDEX IF NOT EXISTS forecast_scores_day ON forecast_scores (day DESC, level);

-- The device forecasts made on their own that scoring looks for.
CREATE INDEX IF NOT EXISTS forecast_requests_own_start
    ON forecast_requests (forecast_start) WHERE fleet_forecast_id IS NULL;
CREATE INDEX IF NOT EXISTS fleet_forecasts_start ON fleet_forecasts (forecast_start);

-- The scored days a served model's bands are rescaled by
-- (intraday/forecasting/recalibration.py), from its published fleet
-- forecasts: per model version and forecast start date, the day's score
-- histograms (a recalibration.Day), summed over that day's fleet forecasts.
-- Only forecasts that start after the model's training data count (the
-- others are in sample). The forecaster adds them to the window its
-- artifact carries, so the bands keep following the newest days between
-- trainings.
CREATE TABLE IF NOT EXISTS live_recalibration (
    model_version  text NOT NULL,
    day            date NOT NULL,
    forecasts      integer NOT NULL,
    scores         jsonb NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_version, day)
);
