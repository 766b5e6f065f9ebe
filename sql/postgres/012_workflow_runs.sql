-- Every workflow instance the forecaster starts (forecast, batch, fleet,
-- training), with its input and the time by which it must have finished,
-- so that the watchdog (services/forecaster/watchdog.py) can find one that
-- is stuck PENDING or RUNNING past it, or that the state store lost (a
-- failover to an older snapshot), and re-drive it from its input or fail
-- it with a reason. A row is settled once its instance is seen finished.
-- Applied on every migrate, so every statement is idempotent.
CREATE TABLE IF NOT EXISTS workflow_runs (
    instance_id  text PRIMARY KEY,
    workflow     text NOT NULL,
    input        jsonb NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    due_at       timestamptz NOT NULL,   -- finished by then, or the watchdog looks at it
    redriven     int NOT NULL DEFAULT 0, -- how often the watchdog started it again
    settled_at   timestamptz,            -- seen finished (or given up on)
    outcome      text                    -- COMPLETED, FAILED, TERMINATED, or what the watchdog did
);
CREATE INDEX IF NOT EXISTS workflow_runs_open ON workflow_runs (due_at) WHERE settled_at IS NULL;
