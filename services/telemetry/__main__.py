from services.http import serve

serve("telemetry", 8002)
