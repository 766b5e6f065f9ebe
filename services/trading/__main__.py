from services.http import serve

serve("trading", 8003)
