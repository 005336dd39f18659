"""What one ``his up`` runs: the servers it started, its children (the services and the gateway)
and how each is started, and the workload identities it issued."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

from his.cli.settings import OperatorSettings
from his.cli.supervisor.console import ChildOutput
from his.infra.forkserver import ForkedProcess, ForkServer
from his.infra.procs import ManagedProcess
from his.infra.users import Account
from his.kernel.pki import WorkloadIdentity


@dataclass
class Child:
    name: str
    #: What it runs as ``__main__`` (``python -m <module>``).
    module: str
    env: dict[str, str]
    url: str
    proc: ManagedProcess | ForkedProcess | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0
    output: ChildOutput | None = None
    #: The system user it runs as (``his up`` run as root), or None: the supervisor's own.
    user: Account | None = None


@dataclass
class Stack:
    settings: OperatorSettings
    admin_dsn: str = ""
    nats_url: str = ""
    nats_monitor: str | None = None
    infra: list[ManagedProcess] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    lock: IO[str] | None = None
    #: Workload identities issued by the local CA, by name ("operator", "nats", each service).
    identities: dict[str, WorkloadIdentity] = field(default_factory=dict)
    #: Forks the children; None (or ``forks_off``) starts each as its own interpreter instead.
    forks: ForkServer | None = None
    forks_off: bool = False
    #: Run as root: the system user of each service, the console and the gateway (ADR 0029).
    accounts: dict[str, Account] = field(default_factory=dict)

    @property
    def operator(self) -> WorkloadIdentity:
        return self.identities["operator"]
