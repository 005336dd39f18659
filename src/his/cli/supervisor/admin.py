"""The hospital's first administrator, created once the services are ready on the first start."""

from __future__ import annotations

import secrets

from his.cli.supervisor.console import console
from his.cli.supervisor.stack import Stack
from his.infra.procs import ServerStartError


async def ensure_admin(stack: Stack) -> None:
    """On first start, create the administrator (from HIS_ADMIN_* or with a generated password)."""
    from his.access import Role
    from his.identity.domain import ADMIN_FULL_NAME, WeakPasswordError
    from his.identity.handlers import Identity, KeyRing
    from his.kernel.db import Database

    identity = next(c for c in stack.children if c.name == "identity")
    db = Database(identity.env["HIS_SERVICE_DATABASE_URL"], schema="identity", min_size=1, max_size=2)
    await db.open()
    try:
        if await db.pool.fetchval("SELECT 1 FROM app_user WHERE 'ADMIN' = ANY(roles) LIMIT 1"):
            return
        s = stack.settings
        password = s.admin_password or secrets.token_urlsafe(18)
        keys = KeyRing(db, identity.env["HIS_IDENTITY_KEY_PASSPHRASE"].encode())
        try:
            await Identity(db, keys).register(
                email=s.admin_email, password=password, full_name=ADMIN_FULL_NAME, roles=[Role.ADMIN]
            )
        except (WeakPasswordError, ValueError) as exc:
            raise ServerStartError(
                f"cannot create the administrator from HIS_ADMIN_EMAIL/HIS_ADMIN_PASSWORD: {exc}"
            ) from None
        shown = password if not s.admin_password else "(the one in HIS_ADMIN_PASSWORD)"
        console.print(
            f"[bold]administrator created:[/] {s.admin_email}  password: [bold]{shown}[/]"
            + ("   — shown once, store it now" if not s.admin_password else "")
        )
    finally:
        await db.close()
