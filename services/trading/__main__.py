from services.http import serve

serve("services.trading.app:app", 8003)
