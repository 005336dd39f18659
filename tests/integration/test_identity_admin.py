"""identity creates the hospital's administrator itself (``python -m his.identity.admin``, which
`his up` runs at every start): once, idempotently, never printing the password, refusing one
the rules refuse."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from his.identity.app import key_passphrase, use_cases
from his.kernel import migrations
from his.kernel.db import Database

PASSPHRASE = "a passphrase for the test keys"
PASSWORD = "violet kettle under the moon"


@pytest.fixture
async def identity_dsn(admin_dsn: str) -> AsyncIterator[str]:
    """identity's runtime role on a database of its own: no administrator yet."""
    parts = urlsplit(admin_dsn)
    name = f"his_admin_{uuid.uuid4().hex[:8]}"
    dsn = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    await migrations.ensure_database(dsn)
    runtime = await migrations.provision(dsn, "identity", "pw-identity-test")
    await migrations.upgrade(dsn, "identity")
    yield runtime
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def run(dsn: str, email: str, password: str, *, generated: bool = False) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIS_")}
    env |= {
        "HIS_SERVICE_DATABASE_URL": dsn,
        "HIS_IDENTITY_KEY_PASSPHRASE": PASSPHRASE,
        "HIS_ADMIN_EMAIL": email,
        "HIS_ADMIN_PASSWORD": password,
    }
    if generated:
        env["HIS_ADMIN_PASSWORD_GENERATED"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "his.identity.admin"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, done.stdout + done.stderr


async def admins(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r["email"] for r in await conn.fetch("SELECT email FROM app_user WHERE 'ADMIN' = ANY(roles)")]
    finally:
        await conn.close()


async def test_the_administrator_is_created_once_and_its_password_never_printed(identity_dsn: str) -> None:
    code, out = await asyncio.to_thread(run, identity_dsn, "chief@his.local", PASSWORD)
    assert code == 0, out
    assert json.loads(out.strip().splitlines()[-1]) == {"created": True}
    assert PASSWORD not in out
    assert await admins(identity_dsn) == ["chief@his.local"]
    # At the next start it is there: nothing changes, whatever the settings say now.
    code, out = await asyncio.to_thread(run, identity_dsn, "other@his.local", "another fine passphrase")
    assert code == 0, out
    assert json.loads(out.strip().splitlines()[-1]) == {"created": False}
    assert await admins(identity_dsn) == ["chief@his.local"]


async def test_a_generated_password_must_be_changed_at_the_first_sign_in(identity_dsn: str) -> None:
    code, out = await asyncio.to_thread(run, identity_dsn, "root@his.local", PASSWORD, generated=True)
    assert code == 0 and PASSWORD not in out, out
    conn = await asyncpg.connect(identity_dsn)
    try:
        required = await conn.fetchval("SELECT password_change_required FROM app_user WHERE email = 'root@his.local'")
    finally:
        await conn.close()
    assert required is True


async def test_a_password_the_rules_refuse_creates_nothing_and_says_why(identity_dsn: str) -> None:
    code, out = await asyncio.to_thread(run, identity_dsn, "admin@his.local", "password1234")
    assert code == 2, out
    assert json.loads(out.strip().splitlines()[-1]) == {"refused": "password is too common"}
    assert await admins(identity_dsn) == []


async def test_two_at_once_create_one(identity_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIS_IDENTITY_KEY_PASSPHRASE", PASSPHRASE)
    db = Database(identity_dsn, schema="identity", min_size=1, max_size=4)
    await db.open()
    try:
        identity = use_cases(db, key_passphrase())
        created = await asyncio.gather(
            identity.ensure_admin(email="one@his.local", password=PASSWORD),
            identity.ensure_admin(email="two@his.local", password=PASSWORD),
        )
    finally:
        await db.close()
    assert sorted(created) == [False, True]
    assert len(await admins(identity_dsn)) == 1
