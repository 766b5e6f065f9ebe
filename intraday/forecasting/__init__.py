"""How a forecast is computed: pure functions over telemetry windows."""
