-- A key's own request rate limit (requests a minute; NULL: the gateway's
-- default, INTRADAY_API_RATE_PER_MINUTE). Applied on every migrate, so
-- every statement is idempotent.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS rate_per_minute integer CHECK (rate_per_minute > 0);
