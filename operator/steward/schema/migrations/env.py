"""Alembic environment: migrate the database named by the caller or by Steward's settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from steward.config import Settings
from steward.schema import ledger as _ledger  # noqa: F401 - registers the ledger tables
from steward.schema.audit import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().database_url
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
