"""The hospital's first administrator, created by identity: ``python -m his.identity.admin``.

`his up` runs it at every start once the services are ready (forked like them), with identity's
own environment (its database role, its key passphrase) and ``HIS_ADMIN_EMAIL`` /
``HIS_ADMIN_PASSWORD``, which it gives to no other process: it creates the administrator unless
the hospital has one, so a restart changes nothing. A cluster's job can run it the same way.

``python -m his.identity.admin check`` only checks the address and the password against
identity's rules, without a database (and quickly: it imports only the rules): `his up` asks it
before it starts anything.

Both read the two variables from the environment only (`his up` resolves them from its settings,
a ``.env`` file included). With ``HIS_ADMIN_PASSWORD_GENERATED=1`` (a password `his up` made up
and wrote to a file only its owner reads), the administrator must change it at the first
sign-in. It answers with one JSON line on stdout and never prints the password:
``{"created": true}``, ``{"created": false}`` (the hospital has one), ``{"ok": true}``
(``check``), or, with exit status 2, ``{"refused": "<why>"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence

#: The exit status of a refusal (the address or the password breaks the rules).
REFUSED = 2
DEFAULT_EMAIL = "admin@his.local"


def answer(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def account(environ: Mapping[str, str]) -> tuple[str, str | None]:
    """The administrator's address and password (None: not given)."""
    return environ.get("HIS_ADMIN_EMAIL", DEFAULT_EMAIL), environ.get("HIS_ADMIN_PASSWORD")


def check(email: str, password: str | None) -> str | None:
    """Why identity would refuse this administrator, or None (no password: one is generated)."""
    from his.identity.domain import check_admin_account

    try:
        check_admin_account(email, password)
    except ValueError as exc:
        return str(exc)
    return None


async def ensure(email: str, secret: str, *, change_required: bool = False) -> bool:
    """Create the administrator in identity's database unless there is one; True if created.
    ``change_required``: the password was generated; the first sign-in must change it."""
    from his.identity.app import key_passphrase, use_cases
    from his.kernel.config import ServiceSettings
    from his.kernel.db import Database

    service = ServiceSettings()
    db = Database(service.service_database_url, schema="identity", min_size=1, max_size=2, timeout=service.db_timeout)
    await db.open()
    try:
        return await use_cases(db, key_passphrase()).ensure_admin(
            email=email, password=secret, change_required=change_required
        )
    finally:
        await db.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    email, password = account(os.environ)
    if args == ["check"]:
        why = check(email, password)
        if why is not None:
            answer(refused=why)
            return REFUSED
        answer(ok=True)
        return 0
    if args:
        sys.stderr.write("usage: python -m his.identity.admin [check]\n")
        return 64
    if password is None:
        answer(refused="no password: set HIS_ADMIN_PASSWORD")
        return REFUSED
    from his.identity.domain import EmailTakenError

    try:
        generated = os.environ.get("HIS_ADMIN_PASSWORD_GENERATED") == "1"
        created = asyncio.run(ensure(email, password, change_required=generated))
    except EmailTakenError:
        answer(refused=f"another account has the address {email}")
        return REFUSED
    except ValueError as exc:  # WeakPasswordError, InvalidEmailError
        answer(refused=str(exc))
        return REFUSED
    answer(created=created)
    return 0


if __name__ == "__main__":
    sys.exit(main())
