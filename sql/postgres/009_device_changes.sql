-- Who changed the device registry, when, and what: one row per change
-- (intraday devices add/retire, POST /devices at the gateway), with the
-- devices by outcome and each changed field's old and new value. The
-- registry rows themselves (ClickHouse `devices`) carry the change id and
-- who made it. Applied on every migrate, so every statement is idempotent.
CREATE TABLE IF NOT EXISTS device_changes (
    change_id   text PRIMARY KEY,
    action      text NOT NULL,            -- upsert | retire
    changed_by  text NOT NULL,
    changed_at  timestamptz NOT NULL,
    devices     integer NOT NULL,         -- rows in the change
    written     integer NOT NULL,         -- devices it added, updated, reactivated or retired
    report      jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS device_changes_at ON device_changes (changed_at DESC);
CREATE INDEX IF NOT EXISTS device_changes_devices ON device_changes USING gin ((report -> 'changes') jsonb_path_ops);
