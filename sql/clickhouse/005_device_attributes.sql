-- Static attributes the forecasting features and the generator use.
ALTER TABLE {db}.devices ADD COLUMN IF NOT EXISTS country LowCardinality(String) DEFAULT 'DE';
ALTER TABLE {db}.devices ADD COLUMN IF NOT EXISTS heated_area_m2 Float64 DEFAULT 0;
ALTER TABLE {db}.devices ADD COLUMN IF NOT EXISTS setpoint_c Float64 DEFAULT 20;
