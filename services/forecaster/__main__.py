from services.http import serve

serve("forecaster", 8001)
