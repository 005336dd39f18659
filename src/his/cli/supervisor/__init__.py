"""``his up``: start PostgreSQL and NATS (unless external), provision, migrate, run every service.

Children run in their own sessions so that Ctrl-C reaches only the supervisor, which then
stops them in order: gateway and services first, then NATS, then PostgreSQL.

The services and the gateway are forked by a fork server that has imported their modules once
(``his.infra.forkserver``, docs/adr/0013-fork-server.md); without it (it could not start,
or it died) each is started as its own interpreter, ``python -m his.<name>``.

The steps, one module each: ``datadir`` (the lock, the run-state file, secrets, certificates),
``servers`` (PostgreSQL and NATS, and their durability), ``plan`` (the children and the
environment of each), ``children`` (launching, waiting, restarting, stopping them), ``admin``
(the first administrator); ``stack`` is what they share, ``console`` what they print.
"""

from __future__ import annotations

import asyncio
import signal
import time

from his.cli.services import durables
from his.cli.settings import OperatorSettings
from his.cli.supervisor.admin import ensure_admin
from his.cli.supervisor.children import bootstrap_and_launch, shutdown, supervise, wait_healthy
from his.cli.supervisor.console import console, fail
from his.cli.supervisor.datadir import acquire_lock, issue_identities, make_private, reap_leftovers
from his.cli.supervisor.plan import check_gateway_port, plan_children
from his.cli.supervisor.servers import check_durability, start_nats, start_postgres
from his.cli.supervisor.stack import Stack
from his.cli.supervisor.users import separate_users
from his.infra.forkserver import ForkServer
from his.infra.procs import ServerStartError
from his.kernel import safety


async def run_up(settings: OperatorSettings, forks: ForkServer | None = None) -> int:
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, forks=forks)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    t0 = time.monotonic()
    try:
        stack.lock = acquire_lock(data)
        # Only once the data directory is ours: a second `his up` refused on it must not touch the
        # modes of the running one's files (a chmod clears the ACL entries that share the maildir).
        make_private(data)
        reap_leftovers(data)
        check_gateway_port(settings)
        issue_identities(stack)
        separate_users(stack)
        consumers = asyncio.ensure_future(asyncio.to_thread(durables))  # imports the services: meanwhile
        await start_postgres(stack)
        await start_nats(stack, await consumers)
        await check_durability(stack)
        plan_children(stack)
        await bootstrap_and_launch(stack)
        if not await wait_healthy(stack):
            raise ServerStartError("services did not become ready; see their log lines above")
        await ensure_admin(stack)
        console.print(
            f"[bold green]his is up[/] in {time.monotonic() - t0:.1f}s — console: "
            f"http://{settings.host}:{settings.gateway_port}/   (Ctrl-C stops everything)"
        )
        await supervise(stack, stop)
        return 0
    except (ServerStartError, safety.UnsafeDurabilityError) as exc:
        fail(str(exc))
        return 1
    finally:
        shutdown(stack)


def up(settings: OperatorSettings, forks: ForkServer | None = None) -> int:
    """``his up``; ``forks`` forks the children (``services.start_forkserver``), or None: each is
    started as its own interpreter."""
    return asyncio.run(run_up(settings, forks))
