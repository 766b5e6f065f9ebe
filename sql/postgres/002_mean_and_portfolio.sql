-- The expected value of each interval beside its quantiles (NULL: recorded
-- before forecasts carried it), and what each trade decision bought to: the
-- portfolio forecast it used and the quantile of it the imbalance costs chose.
-- Applied on every migrate, so every statement is idempotent.
ALTER TABLE forecast_results
    ADD COLUMN IF NOT EXISTS mean double precision CHECK (mean >= 0);

ALTER TABLE trade_decisions
    ADD COLUMN IF NOT EXISTS target_quantile double precision CHECK (target_quantile > 0 AND target_quantile < 1),
    ADD COLUMN IF NOT EXISTS portfolio_forecast_id text,
    ADD COLUMN IF NOT EXISTS portfolio_forecast jsonb;  -- per interval: mean, p10, p50, p90 of the total
