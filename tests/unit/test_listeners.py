"""The HTTP listeners believe no proxy headers, and FastAPI's own telemetry stays off."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from his.gateway.app import Edge, Gateway, create_app, listener
from his.gateway.settings import GatewaySettings
from his.kernel.config import ServiceSettings
from his.kernel.service import NO_TELEMETRY, http_config


async def app(scope: Any, receive: Any, send: Any) -> None:
    return None


def test_the_gateway_never_takes_the_peer_address_from_x_forwarded_for() -> None:
    # A local client could otherwise pick its own address for the per-IP rate limit.
    settings = GatewaySettings()
    config = listener(Edge(FastAPI(), Gateway({})), settings)
    config.load()
    assert not config.proxy_headers
    assert not isinstance(config.loaded_app, ProxyHeadersMiddleware)


def test_internal_listeners_believe_no_proxy_headers() -> None:
    config = http_config(app, ServiceSettings())
    config.load()
    assert not isinstance(config.loaded_app, ProxyHeadersMiddleware)


def test_fastapis_own_opentelemetry_bridge_is_off() -> None:
    # TracingMiddleware makes the one server span; FastAPI exposes its settings only privately.
    config = create_app({})._telemetry
    assert not (config["tracing"] or config["metrics"] or config["logs"])
    assert NO_TELEMETRY == {"tracing": False, "metrics": False, "logs": False}
