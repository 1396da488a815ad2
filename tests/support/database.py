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


@pytest.fixture
def audit(database_url):
    """An empty, migrated audit trail (`AuditService`) of the test's own database."""
    from steward.services.audit import AuditService  # noqa: PLC0415
    from steward.storage.database import make_engine, make_sessionmaker, upgrade  # noqa: PLC0415

    engine = make_engine(database_url)
    upgrade(engine)
    yield AuditService(make_sessionmaker(engine))
    engine.dispose()
