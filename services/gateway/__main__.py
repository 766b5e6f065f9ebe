from services.http import serve

serve("gateway", 8000)
