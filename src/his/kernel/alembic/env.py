"""Alembic environment shared by every service; see ``his.kernel.migrations``."""

from alembic import context

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    version_table="alembic_version",
    version_table_schema=config.attributes["schema"],
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
