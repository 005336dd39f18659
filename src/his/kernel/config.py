"""Typed settings, read from ``HIS_*`` environment variables (a ``.env`` file works too)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from his.kernel.pki import WorkloadIdentity

#: How long a service's stream (and the replay stream) keeps an event (``his.kernel.streams``).
STREAM_MAX_AGE_DAYS = 30


class ProcessSettings(BaseSettings):
    """What every process of a hospital reads, the gateway's and the supervisor's included: where
    it listens, how it logs and traces, and its workload identity."""

    model_config = SettingsConfigDict(env_prefix="HIS_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    log_level: str = "INFO"
    #: OTLP/HTTP collector base URL for traces (e.g. http://127.0.0.1:4318); unset: the standard
    #: OTEL_EXPORTER_OTLP_ENDPOINT, else no export (trace ids still travel and appear in logs).
    otlp_endpoint: str | None = None
    #: This process's workload identity (certificate with its SPIFFE id, key, trusted CA bundle).
    #: Set by `his up` from its local CA; SPIRE or cert-manager can provide the same three files.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    def workload(self) -> WorkloadIdentity | None:
        if self.tls_cert and self.tls_key and self.tls_ca:
            return WorkloadIdentity(self.tls_cert, self.tls_key, self.tls_ca)
        return None


class Settings(ProcessSettings):
    """The hospital's settings every service obeys: `his up` reads and checks them once and hands
    them to each service (``his.cli.settings.OperatorSettings`` adds what only the operator's
    commands read, ``his.gateway.settings.GatewaySettings`` what only the gateway reads)."""

    data_dir: Path = Field(default=Path(".his"))
    #: Refuse to start on unsafe durability settings unless this is set.
    allow_unsafe_durability: bool = False
    #: Deadline of every database statement a service or relay runs, in seconds. A statement that
    #: hangs (a lock held elsewhere, a server that stopped answering) is cancelled when it passes:
    #: the request gets a 503, a consumer tries the event again later, the relay reconnects.
    db_timeout: float = Field(default=30.0, gt=0)
    #: Test-only: fault points to arm (``his.kernel.faults``), e.g.
    #: ``billing.payment.after_commit=kill@/tmp/trigger``. Empty (off) in any real deployment.
    fault_points: str = ""
    #: How long a consumer remembers an event it applied (its inbox row), in days. A redelivery
    #: can come as long as a stream keeps the event (30 days), so it must be longer than that.
    #: Replaying a dead letter whose event is older than this is refused without ``--force``.
    inbox_retention_days: float = Field(default=60.0, gt=STREAM_MAX_AGE_DAYS)
    #: The hospital's time zone (IANA name): what "a day" means for slots and nightly jobs.
    timezone: str = "UTC"

    @cached_property
    def data_path(self) -> Path:
        return self.data_dir.expanduser().resolve()


class ServiceSettings(Settings):
    """What the supervisor hands to one service process."""

    service: str = ""
    #: Connection URL for this service's runtime role (set by the supervisor).
    service_database_url: str = ""
    service_nats_url: str = ""
    http_port: int = 0
    #: Port of this service's gRPC listener (mutual TLS); unset: the service serves no gRPC.
    grpc_port: int | None = None
    #: How long published outbox rows are kept before they are pruned.
    outbox_retention_seconds: float = 7 * 24 * 3600
    #: Poll interval of the relay when no wake-up arrives.
    outbox_poll_seconds: float = 1.0

    def grpc_target(self, service: str) -> str:
        """Where ``service``'s gRPC API listens: ``HIS_<SERVICE>_GRPC`` (``host:port``), set by the supervisor."""
        key = f"HIS_{service.upper()}_GRPC"
        target = os.environ.get(key, "")
        if not target:
            raise LookupError(f"{key} is not set: the address of {service}'s gRPC API is unknown")
        return target
