"""gateway: the only public listener. Routing, token checks, limits, OpenAPI; no domain logic."""
