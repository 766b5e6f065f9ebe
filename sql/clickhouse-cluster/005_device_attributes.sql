-- Static device attributes (twin of ../clickhouse/005_device_attributes.sql):
-- each shard's table first, then the Distributed one that reads them.
ALTER TABLE {db}.devices_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS country LowCardinality(String) DEFAULT 'DE';
ALTER TABLE {db}.devices_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS heated_area_m2 Float64 DEFAULT 0;
ALTER TABLE {db}.devices_local ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS setpoint_c Float64 DEFAULT 20;
ALTER TABLE {db}.devices ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS country LowCardinality(String) DEFAULT 'DE';
ALTER TABLE {db}.devices ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS heated_area_m2 Float64 DEFAULT 0;
ALTER TABLE {db}.devices ON CLUSTER '{cluster}' ADD COLUMN IF NOT EXISTS setpoint_c Float64 DEFAULT 20;
