"""Settings of the gateway (``HIS_*`` environment variables, or a ``.env`` file)."""

from __future__ import annotations

from pydantic import Field

from his.kernel.config import ProcessSettings


class GatewaySettings(ProcessSettings):
    """What the gateway reads: its listeners, and what they allow a client (``HIS_GATEWAY_*``)."""

    #: The public port, when ``http_port`` is not set (`his up` sets ``http_port`` to this).
    gateway_port: int = 4004
    http_port: int = 0
    #: The operations listener (health, readiness, metrics; mutual TLS when the process has a
    #: workload identity), apart from the public port; unset: there is none.
    ops_port: int | None = None
    #: The console's listener: the public API for the console's own calls, mutual TLS that admits
    #: the console's workload certificate only, where the browser's address the console names is
    #: taken as the client's (docs/adr/0027); unset, or without a workload identity: there is none.
    console_port: int | None = None
    #: Rate limits: requests per second per peer address and per signed-in user, and burst.
    gateway_rate_per_ip: float = 50.0
    gateway_rate_per_subject: float = 20.0
    gateway_burst: int = 100
    #: The public listener: seconds a client has to send a request's head (request line and
    #: headers) and its body, and how many connections it keeps open, in all and per address.
    gateway_header_timeout: float = Field(default=10.0, gt=0)
    gateway_body_timeout: float = Field(default=30.0, gt=0)
    gateway_max_connections: int = Field(default=1000, ge=1)
    gateway_max_connections_per_address: int = Field(default=100, ge=1)
