"""Connecting to NATS as a workload, and what each workload may do there.

A service connects with its workload certificate; the server maps the certificate's SPIFFE id to
a NATS user (``verify_and_map``). A service may publish only its own events (``his.<service>.>``)
plus the JetStream API calls its relay, consumers and DLQ mover make, on its own consumers only,
each on the stream it consumes, and receives replies only on its own inbox prefix, so no service
can forge another's events, read another's replies, take and acknowledge another's messages, or
read a stream it does not consume.
The operator identity (``his`` commands) is unrestricted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import nats
from nats.aio.client import Client as NATS

from his.kernel.pki import WorkloadIdentity, spiffe_id
from his.kernel.streams import ADVISORY_STREAM, DLQ_STREAM, ERRORS_BUCKET, dlq_subject

OPERATOR = spiffe_id("his", kind="operator")


@dataclass(frozen=True)
class NatsUser:
    """A NATS user named by a certificate's SPIFFE id; ``None`` permissions mean unrestricted.

    What the server is told (``his.infra.nats`` writes it into its configuration for `his up`,
    ``tools/deploy_manifests.py`` into the cluster's)."""

    identity: str
    publish: tuple[str, ...] | None = None
    subscribe: tuple[str, ...] | None = None


def inbox_prefix(service: str) -> str:
    return f"_INBOX_{service}"


def consumer_subjects(durable: str, stream: str) -> tuple[str, ...]:
    """What a service publishes to create, read and acknowledge one of its durable consumers, on
    its own ``stream`` only, and to file that consumer's dead letters and delivery errors."""
    return (
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
        dlq_subject(durable),
        f"$KV.{ERRORS_BUCKET}.{durable}.>",
    )


def service_user(service: str, durables: Mapping[str, str]) -> NatsUser:
    """The NATS permissions of one service.

    It reads and acknowledges only its own ``durables`` (``ServiceDefinition.durables``: each
    with the stream it reads), each on its own stream: pulling another service's consumer and
    acking its messages would make that service miss them (the audit service its access
    records), and a consumer of its own name on a stream it does not consume would read events
    it has no business with. It reads single messages (its DLQ mover, the original of a dead
    letter) only from the streams its consumers read, and stream information only of the dead
    letters' stream and the errors bucket.
    """
    read = sorted({stream for stream in durables.values() if stream != ADVISORY_STREAM})
    bucket = f"KV_{ERRORS_BUCKET}"
    return NatsUser(
        spiffe_id(service),
        publish=(
            f"his.{service}.>",  # its own events, and nothing else of the domain
            "$JS.API.INFO",
            f"$JS.API.STREAM.INFO.{DLQ_STREAM}",
            f"$JS.API.STREAM.INFO.{bucket}",
            f"$JS.API.STREAM.MSG.GET.{bucket}",
            f"$JS.API.DIRECT.GET.{bucket}",
            f"$JS.API.DIRECT.GET.{bucket}.>",
            *(f"$JS.API.STREAM.MSG.GET.{stream}" for stream in read),
            *(subject for d, stream in durables.items() for subject in consumer_subjects(d, stream)),
        ),
        subscribe=(f"{inbox_prefix(service)}.>",),
    )


#: What the console hears of the bus: that appointments changed (ids and times, no personal
#: data), to tell the browsers showing a day list to ask the API for it again.
CONSOLE_HEARS = ("his.scheduling.appointment.>",)


def console_user() -> NatsUser:
    """The console's NATS permissions: it subscribes to ``CONSOLE_HEARS`` (core NATS, no
    consumer), and publishes nothing but to its own inbox, where nobody listens."""
    inbox = f"{inbox_prefix('console')}.>"
    return NatsUser(spiffe_id("console"), publish=(inbox,), subscribe=(*CONSOLE_HEARS, inbox))


def users(durables: Mapping[str, Mapping[str, str]]) -> tuple[NatsUser, ...]:
    """The operator, every service (``his.cli.services.durables()``: name → its consumers, each
    with its stream) and the console."""
    return (NatsUser(OPERATOR), *(service_user(s, names) for s, names in durables.items()), console_user())


async def connect(
    url: str,
    *,
    name: str,
    identity: WorkloadIdentity | None = None,
    service: str | None = None,
    **options: object,
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
