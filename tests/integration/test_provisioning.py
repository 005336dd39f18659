"""Schemas, roles and migrations on a real PostgreSQL; the durability startup check."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from his.infra import nats as nats_infra
from his.kernel import migrations, safety
from tests.conftest import NatsServer


@pytest.fixture(scope="module")
async def provisioned(admin_dsn: str) -> dict[str, str]:
    dsns = {}
    for svc in ("patients", "notifications"):
        dsns[svc] = await migrations.provision(admin_dsn, svc, f"pw-{svc}-x")
        await migrations.upgrade(admin_dsn, svc)
    return dsns


async def test_migrations_are_recorded_in_the_service_schema_and_rerun_cleanly(
    admin_dsn: str, provisioned: dict[str, str]
) -> None:
    await migrations.provision(admin_dsn, "patients", "pw-patients-x")
    await migrations.upgrade(admin_dsn, "patients")  # idempotent second run
    conn = await asyncpg.connect(admin_dsn)
    try:
        latest = max(p.name[:4] for p in migrations.migrations_dir("patients").glob("[0-9]*.py"))
        assert await conn.fetchval("SELECT version_num FROM patients.alembic_version") == f"patients_{latest}"
        owner = await conn.fetchval(
            "SELECT tableowner FROM pg_tables WHERE schemaname='patients' AND tablename='patient'"
        )
        assert owner == "his_patients_owner"
    finally:
        await conn.close()


async def test_runtime_role_reaches_only_its_own_schema(provisioned: dict[str, str]) -> None:
    conn = await asyncpg.connect(provisioned["notifications"])
    try:
        assert await conn.fetchval("SHOW search_path") == "notifications"
        assert await conn.fetchval("SELECT count(*) FROM delivery") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM patients.patient")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE sneaky (x int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DROP TABLE delivery")
        row = await conn.fetchrow(
            "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )
        assert tuple(row) == (False, False, False)  # type: ignore[arg-type]
    finally:
        await conn.close()


async def test_wrong_password_is_refused(provisioned: dict[str, str]) -> None:
    bad = provisioned["patients"].replace("pw-patients-x", "guess")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(bad)


async def test_unsafe_postgres_settings_are_refused_unless_allowed(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        assert await safety.postgres_problems(conn) == []
        await conn.execute("SET synchronous_commit = off")
        problems = await safety.postgres_problems(conn)
    finally:
        await conn.close()
    assert problems and "synchronous_commit=off" in problems[0]
    with pytest.raises(safety.UnsafeDurabilityError, match="HIS_ALLOW_UNSAFE_DURABILITY"):
        safety.enforce(problems, allow_unsafe=False)
    assert safety.enforce(problems, allow_unsafe=True) == problems


def test_nats_sync_always_is_verified(nats_server: NatsServer, tmp_path: Path) -> None:
    assert safety.nats_problems(nats_server.monitor_url) == []
    assert safety.nats_problems(None)  # cannot verify: refuse
    proc, loc = nats_infra.start(tmp_path / "unsafe", sync_always=False)
    try:
        problems = safety.nats_problems(f"http://{loc.host}:{loc.monitor_port}")
    finally:
        proc.stop()
    assert problems and "sync_interval" in problems[0]
