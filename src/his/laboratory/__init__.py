"""laboratory: test catalogue, lab orders, specimens, results."""
