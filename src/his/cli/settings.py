"""The settings of the operator's commands: `his up` (the supervisor) and the commands that
operate a running hospital (`his status`, `his dlq`, `his demo`, `his migrate` …)."""

from __future__ import annotations

from pydantic import Field

from his.kernel.config import Settings


class OperatorSettings(Settings):
    """What `his up` and the other `his` commands read, on top of the hospital's settings that
    `his up` hands to every service (``his.kernel.config.Settings``). No service reads these:
    `his up` gives each service only its own settings."""

    #: The gateway's public port: `his up` checks it is free, gives it to the gateway and prints it.
    gateway_port: int = 4004
    #: External PostgreSQL (a migration role's URL) and NATS; unset: `his up` starts its own.
    database_url: str | None = None
    nats_url: str | None = None
    #: The address browsers open the hospital at, when it is not the gateway's own
    #: (``http://<host>:<gateway_port>``): e.g. ``https://his.example.org`` behind a TLS proxy.
    #: The console refuses forms from any other origin and marks its cookie Secure on https.
    public_url: str | None = None
    #: The administrator created at the first start (by identity: ``python -m his.identity.admin``);
    #: without a password `his up` generates one and prints it once.
    admin_email: str = "admin@his.local"
    admin_password: str | None = None
    #: `his up` rotates each service's log under the data dir at this size (MB) and keeps this
    #: many rotated files (``<service>.log.1`` is the newest).
    log_max_mb: float = Field(default=50.0, gt=0)
    log_files: int = Field(default=5, ge=1, le=100)
    #: Replicas of every JetStream stream (and KV bucket) his declares: 1 on one server, 3 on a
    #: 3-node cluster so that losing any one node loses neither data nor availability.
    stream_replicas: int = Field(default=1, ge=1, le=5)
