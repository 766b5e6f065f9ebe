-- Fleet metadata, one row per device (the latest version wins).
CREATE TABLE IF NOT EXISTS {db}.devices
(
    device_id      String,
    location       String,
    building_type  String,
    heat_pump_type String,
    rated_power_kw Float64,
    installed_date Date,
    updated_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY device_id;
