-- When a registered workflow instance actually began running: stamped by
-- its first step (the `run-started` workflow patch, workflows/patches.py).
-- Empty for an instance still queued (or one the release before the patch
-- started), so the watchdog tells a run never taken off the scheduler's
-- queue from one stalled in a step.
ALTER TABLE workflow_runs ADD COLUMN IF NOT EXISTS running_at timestamptz;
