"""``his migrate``: provision and migrate every schema and declare the streams, then exit.

`his up` does the same as part of its start; in a cluster this runs once per release (a Job
before the services roll), against an external PostgreSQL and NATS. Each service's runtime
role gets the password in ``<passwords_dir>/<service>``, the file the same Secret puts in that
service's pods, so nothing generated here needs to travel anywhere.
"""

from __future__ import annotations

from pathlib import Path

from his.cli.services import SERVICES
from his.cli.settings import OperatorSettings
from his.kernel import bus, migrations, streams


class MigrateError(Exception):
    """The migration cannot start: a setting or a password file is missing."""


def passwords(directory: Path, services: tuple[str, ...] = SERVICES) -> dict[str, str]:
    """The runtime role password of each service, one file per service, all required."""
    found: dict[str, str] = {}
    for svc in services:
        path = directory / svc
        if not path.is_file() or not (text := path.read_text().strip()):
            raise MigrateError(f"no database password for {svc}: {path} is missing or empty")
        found[svc] = text
    return found


async def run_migrate(settings: OperatorSettings, passwords_dir: Path) -> list[str]:
    """Declare the streams (when HIS_NATS_URL is set), then provision and migrate each service."""
    if not settings.database_url:
        raise MigrateError("HIS_DATABASE_URL (an administrator's connection URL) is not set")
    secrets = passwords(passwords_dir)
    done: list[str] = []
    if settings.nats_url:
        nc = await bus.connect(settings.nats_url, name="his-migrate", identity=settings.workload(), connect_timeout=5)
        try:
            await streams.declare(nc.jetstream(), SERVICES, replicas=settings.stream_replicas)
        finally:
            await nc.close()
        done.append(f"streams declared with {settings.stream_replicas} replica(s)")
    await migrations.ensure_database(settings.database_url)
    for svc in SERVICES:
        await migrations.provision(settings.database_url, svc, secrets[svc])
        await migrations.upgrade(settings.database_url, svc)
        done.append(f"{svc} migrated")
    return done
