"""`his migrate` (a cluster's migration Job) on a real PostgreSQL and NATS."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import nats

from his.cli.migrate import run_migrate
from his.cli.services import SERVICES
from his.cli.settings import OperatorSettings
from his.kernel import migrations
from his.kernel.events import stream_name
from his.kernel.streams import DLQ_STREAM
from tests.conftest import NatsServer


async def test_migrate_declares_streams_and_provisions_every_service(
    admin_dsn: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    for svc in SERVICES:
        (tmp_path / svc).write_text(f"pw-{svc}-migrate\n")
    settings = OperatorSettings(_env_file=None, database_url=admin_dsn, nats_url=nats_server.url, stream_replicas=1)

    done = await run_migrate(settings, tmp_path)

    assert done[0] == "streams declared with 1 replica(s)"
    assert done[1:] == [f"{svc} migrated" for svc in SERVICES]
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        for name in (stream_name("scheduling"), DLQ_STREAM):
            assert (await js.stream_info(name)).config.num_replicas == 1
    finally:
        await nc.close()
    # The runtime login works with the password from its file, and sees its own schema only.
    dsn = migrations.with_credentials(admin_dsn, migrations.runtime_role("billing"), "pw-billing-migrate")
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SHOW search_path") == "billing"
        assert await conn.fetchval("SELECT count(*) FROM billing.alembic_version") == 1
    finally:
        await conn.close()
