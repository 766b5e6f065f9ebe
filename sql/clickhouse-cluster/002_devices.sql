-- Fleet metadata, sharded by device (twin of ../clickhouse/002_devices.sql).
CREATE TABLE IF NOT EXISTS {db}.devices_local ON CLUSTER '{cluster}'
(
    device_id      String,
    location       String,
    building_type  String,
    heat_pump_type String,
    rated_power_kw Float64,
    installed_date Date,
    updated_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{db}/devices_local', '{replica}', updated_at)
ORDER BY device_id;

CREATE TABLE IF NOT EXISTS {db}.devices ON CLUSTER '{cluster}' AS {db}.devices_local
ENGINE = Distributed('{cluster}', '{db}', 'devices_local', cityHash64(device_id));
