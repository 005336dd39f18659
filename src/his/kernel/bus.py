"""Connecting to NATS as a workload, and what each workload may do there.

A service connects with its workload certificate; the server maps the certificate's SPIFFE id to
a NATS user (``verify_and_map``). A service may publish only its own events (``his.<service>.>``)
plus the JetStream API calls its relay, consumers and DLQ mover make, and receives replies only
on its own inbox prefix, so no service can forge another's events or read another's replies.
The operator identity (``his`` commands) is unrestricted.
"""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client as NATS

from his.kernel.infra.nats import NatsUser
from his.kernel.pki import WorkloadIdentity, spiffe_id
from his.kernel.streams import ERRORS_BUCKET

OPERATOR = spiffe_id("his", kind="operator")


def inbox_prefix(service: str) -> str:
    return f"_INBOX_{service}"


def service_user(service: str) -> NatsUser:
    """The NATS permissions of one service."""
    return NatsUser(
        spiffe_id(service),
        publish=(
            f"his.{service}.>",  # its own events, and nothing else of the domain
            "his.dlq.>",  # dead letters of its own consumers (the DLQ mover)
            f"$KV.{ERRORS_BUCKET}.>",  # why a delivery failed, for the DLQ entry
            "$JS.ACK.>",
            "$JS.API.INFO",
            "$JS.API.STREAM.INFO.*",
            "$JS.API.STREAM.MSG.GET.*",
            "$JS.API.DIRECT.GET.>",
            "$JS.API.CONSUMER.CREATE.>",
            "$JS.API.CONSUMER.DURABLE.CREATE.>",
            "$JS.API.CONSUMER.INFO.>",
            "$JS.API.CONSUMER.MSG.NEXT.>",
        ),
        subscribe=(f"{inbox_prefix(service)}.>",),
    )


def users(services: list[str]) -> tuple[NatsUser, ...]:
    return (NatsUser(OPERATOR), *(service_user(s) for s in services))


async def connect(
    url: str,
    *,
    name: str,
    identity: WorkloadIdentity | None = None,
    service: str | None = None,
    **options: Any,
) -> NATS:
    """Connect as ``identity`` (TLS with its certificate) when the URL asks for TLS.

    ``url`` may list several servers of a cluster, comma-separated (as ``HIS_NATS_URL`` may):
    the client fails over between them and to the servers the cluster announces.
    """
    servers = server_urls(url)
    if identity is not None and servers[0].startswith("tls://"):
        options["tls"] = identity.client_context()
    if service is not None:
        options["inbox_prefix"] = inbox_prefix(service)
    return await nats.connect(servers, name=name, **options)


def server_urls(url: str) -> list[str]:
    """The servers of a comma-separated NATS URL list, in order."""
    servers = [u.strip() for u in url.split(",") if u.strip()]
    if not servers:
        raise ValueError("no NATS server URL given")
    return servers
