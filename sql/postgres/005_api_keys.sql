-- API keys of the gateway's callers. Only a keyed hash of each key's secret
-- is kept (HMAC-SHA256 with a server-side pepper): a copy of this table does
-- not let anyone in. `name` is who holds the key; it is what forecasts
-- record as requested_by. Applied on every migrate, so every statement is
-- idempotent.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id       text PRIMARY KEY,            -- public part of the key: ik_<key_id>_<secret>
    name         text        NOT NULL,
    secret_hash  bytea       NOT NULL,
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_name ON api_keys (name);
