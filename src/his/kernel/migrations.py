"""Schemas, roles and migrations of one service.

Each service gets two roles: ``his_<service>_owner`` (NOLOGIN) owns the schema and its
objects and is the role migrations run as; ``his_<service>`` is the runtime login, which may
only read and write rows in its own schema (default privileges), with a fixed search_path.
Migrations are Alembic scripts in ``his/<service>/store/migrations``, run with a version
table inside the service's schema.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection as SAConnection
from sqlalchemy.ext.asyncio import create_async_engine

IDENT = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def owner_role(service: str) -> str:
    return f"his_{service}_owner"


def runtime_role(service: str) -> str:
    return f"his_{service}"


def with_credentials(dsn: str, user: str, password: str) -> str:
    """The same server and database as ``dsn``, logged in as another role."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def ensure_database(admin_dsn: str) -> None:
    """Create the database named in ``admin_dsn`` if it does not exist."""
    parts = urlsplit(admin_dsn)
    dbname = parts.path.lstrip("/") or "postgres"
    try:
        conn = await asyncpg.connect(admin_dsn)
        await conn.close()
        return
    except asyncpg.InvalidCatalogNameError:
        pass
    maint = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
    conn = await asyncpg.connect(maint)
    try:
        await conn.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await conn.close()


async def provision(admin_dsn: str, service: str, password: str) -> str:
    """Create (or re-assert) the schema and roles of ``service``; returns the runtime DSN."""
    if not IDENT.match(service):
        raise ValueError(f"bad service name {service!r}")
    owner, runtime = owner_role(service), runtime_role(service)
    conn = await asyncpg.connect(admin_dsn)
    try:
        async with conn.transaction():
            # Serialise concurrent provisioning of the same cluster.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('his.provision'))")
            dbname = await conn.fetchval("SELECT current_database()")
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", owner)
            if not exists:
                await conn.execute(f"CREATE ROLE {owner} NOLOGIN")
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", runtime)
            verb = "ALTER" if exists else "CREATE"
            await conn.execute(
                f"{verb} ROLE {runtime} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
                f"PASSWORD {_literal(password)}"
            )
            await conn.execute(f"GRANT {owner} TO CURRENT_USER")
            # Exclusion constraints over (id WITH =, time range WITH &&) need btree_gist.
            await conn.execute("CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public")
            # Name search tolerant of typos (trigram similarity).
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {service} AUTHORIZATION {owner}")
            await conn.execute(f"REVOKE ALL ON SCHEMA {service} FROM PUBLIC")
            await conn.execute(f"GRANT USAGE ON SCHEMA {service} TO {runtime}")
            await conn.execute(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {service} "
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {runtime}"
            )
            await conn.execute(
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {service} "
                f"GRANT USAGE, SELECT ON SEQUENCES TO {runtime}"
            )
            await conn.execute(f"ALTER ROLE {runtime} SET search_path = {service}")
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            await conn.execute(f'REVOKE ALL ON DATABASE "{dbname}" FROM PUBLIC')
            await conn.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{dbname}" TO {runtime}')
    finally:
        await conn.close()
    return with_credentials(admin_dsn, runtime, password)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def migrations_dir(service: str) -> Path:
    spec = importlib.util.find_spec(f"his.{service}")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"no package his.{service}")
    return Path(next(iter(spec.submodule_search_locations))) / "store" / "migrations"


async def upgrade(admin_dsn: str, service: str, versions: Path | None = None) -> None:
    """Run the service's migrations to head, as its owner role."""
    versions = versions or migrations_dir(service)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "alembic"))
    cfg.set_main_option("version_locations", str(versions))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["schema"] = service
    engine = create_async_engine("postgresql+asyncpg://", async_creator=lambda: asyncpg.connect(admin_dsn))
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql(f"SET ROLE {owner_role(service)}")
            await conn.exec_driver_sql(f"SET search_path TO {service}")
            await conn.commit()  # commit first: see FACTS.md on Alembic and pre-transaction SQL

            def _run(sync_conn: SAConnection) -> None:
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, "head")

            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def upgrade_blocking(admin_dsn: str, service: str) -> None:
    asyncio.run(upgrade(admin_dsn, service))
