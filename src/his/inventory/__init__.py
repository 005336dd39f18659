"""inventory: items, stock per location and lot, consumption, low-stock alerts."""
