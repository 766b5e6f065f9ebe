from services.http import serve

serve("services.gateway.app:app", 8000)
