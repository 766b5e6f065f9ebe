"""When a price move warrants a forecast, and what to trade on it."""
