"""The audit database for tests: SQLite in a temporary directory, or PostgreSQL in CI.

With ``STEWARD_TEST_DATABASE=postgresql`` every test gets a fresh database on the session's
real PostgreSQL server (started by the harness); otherwise a fresh SQLite file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[object | None]:
    if os.environ.get("STEWARD_TEST_DATABASE") != "postgresql":
        yield None
        return
    from steward.testing.postgres import postgres_server  # noqa: PLC0415 - only in CI mode

    with postgres_server() as server:
        yield server


@pytest.fixture
def database_url(tmp_path, _postgres_server) -> str:
    if _postgres_server is None:
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return _postgres_server.create_database()


def tamper(engine, *statements) -> None:
    """Act as a database administrator: bypass the append-only triggers and run statements."""
    from sqlalchemy import text  # noqa: PLC0415

    tables = ("audit_entries", "audit_checkpoints")
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            for table in tables:
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))
        else:
            for table in tables:
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_no_change"))
        for statement in statements:
            conn.execute(text(statement))


def rewrite_chain(engine, first: int, change: dict) -> None:
    """Edit row ``first`` with ``change`` and recompute every later hash and the head, as an
    administrator who knows how the chain is built would; only a checkpoint can tell."""
    from sqlalchemy import select, update  # noqa: PLC0415
    from sqlalchemy.orm import Session  # noqa: PLC0415

    from steward.schema.audit import AuditEntry, AuditHead  # noqa: PLC0415
    from steward.services.audit import entry_hash  # noqa: PLC0415

    tamper(engine)
    with Session(engine) as session, session.begin():
        rows = session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
        previous = None
        for row in rows:
            if row.id == first:
                for key, value in change.items():
                    setattr(row, key, value)
            if row.id >= first:
                row.prev_hash = previous.hash if previous is not None else row.prev_hash
                row.hash = entry_hash(row)
            previous = row
        session.flush()
        session.execute(update(AuditHead).where(AuditHead.id == 1).values(hash=previous.hash))


@pytest.fixture
def audit_engine(database_url):
    """The test database, migrated to this Steward's schema."""
    from steward.storage.database import make_engine, upgrade  # noqa: PLC0415

    engine = make_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def audit_service(audit_engine):
    """An AuditService on the test database."""
    from steward.services.audit import AuditService  # noqa: PLC0415
    from steward.storage.database import make_sessionmaker  # noqa: PLC0415

    return AuditService(make_sessionmaker(audit_engine))


@pytest.fixture
def audit(audit_service):
    """An empty, migrated audit trail (`AuditService`) of the test's own database."""
    return audit_service
