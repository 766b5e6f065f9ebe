-- The device registry (twin of ../clickhouse/007_device_registry.sql):
-- each shard's table first, then the Distributed one that reads them.
ALTER TABLE {db}.devices_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS latitude Nullable(Float64);
ALTER TABLE {db}.devices_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS longitude Nullable(Float64);
ALTER TABLE {db}.devices_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS tariff String DEFAULT '';
ALTER TABLE {db}.devices_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS retired_at Nullable(DateTime64(3, 'UTC'));
ALTER TABLE {db}.devices_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS changed_by String DEFAULT '';
ALTER TABLE {db}.devices_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS change_id String DEFAULT '';
ALTER TABLE {db}.devices_local ON CLUSTER '{cluster}' MODIFY COLUMN installed_date Nullable(Date);
ALTER TABLE {db}.devices ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS latitude Nullable(Float64);
ALTER TABLE {db}.devices ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS longitude Nullable(Float64);
ALTER TABLE {db}.devices ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS tariff String DEFAULT '';
ALTER TABLE {db}.devices ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS retired_at Nullable(DateTime64(3, 'UTC'));
ALTER TABLE {db}.devices ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS changed_by String DEFAULT '';
ALTER TABLE {db}.devices ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS change_id String DEFAULT '';
ALTER TABLE {db}.devices ON CLUSTER '{cluster}' MODIFY COLUMN installed_date Nullable(Date);
