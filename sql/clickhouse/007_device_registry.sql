-- The device registry users write to (intraday devices add, POST /devices):
-- coordinates beside the zone name, the tariff, retirement (a retired
-- device leaves the fleet list from retired_at on; its readings stay), and
-- which change wrote the row, by whom. Unknown attributes are NaN or NULL.
ALTER TABLE {db}.devices ADD COLUMN IF NOT EXISTS latitude Nullable(Float64);
ALTER TABLE {db}.devices ADD COLUMN IF NOT EXISTS longitude Nullable(Float64);
ALTER TABLE {db}.devices ADD COLUMN IF NOT EXISTS tariff String DEFAULT '';
ALTER TABLE {db}.devices ADD COLUMN IF NOT EXISTS retired_at Nullable(DateTime64(3, 'UTC'));
ALTER TABLE {db}.devices ADD COLUMN IF NOT EXISTS changed_by String DEFAULT '';
ALTER TABLE {db}.devices ADD COLUMN IF NOT EXISTS change_id String DEFAULT '';
ALTER TABLE {db}.devices MODIFY COLUMN installed_date Nullable(Date);
