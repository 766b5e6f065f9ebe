from services.http import serve

serve("services.forecaster.app:app", 8001)
