from services.http import serve

serve("services.telemetry.app:app", 8002)
