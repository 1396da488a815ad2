"""The audit database: engines, sessions and alembic migrations.

SQLite by default (one file, WAL so readers never block the operator's writes), PostgreSQL in
production. The operator refuses to start on a schema older than this code expects.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from steward.exceptions import ConfigurationError, TransientError

__all__ = [
    "MIGRATIONS",
    "current_revision",
    "ensure_current",
    "head_revision",
    "make_engine",
    "make_sessionmaker",
    "upgrade",
]

MIGRATIONS = Path(__file__).resolve().parent.parent / "schema" / "migrations"
"""Alembic script directory, shipped inside the package."""


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and immediate write transactions."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:  # noqa: ANN401
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:  # noqa: ANN401
            # BEGIN IMMEDIATE takes the write lock at once, so two writers queue instead of
            # deadlocking when both try to upgrade a read lock.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions for services, which own their transactions."""
    return sessionmaker(engine, expire_on_commit=False)


def _config() -> Config:
    """Alembic's configuration, without the database URL.

    Migrations run on a connection Steward opened (``config.attributes["connection"]``), so
    alembic never needs the URL. Handing it over would also break: alembic's configuration is
    a ConfigParser, which reads a ``%`` (as in a percent-encoded password) as interpolation,
    fails, and puts the whole URL, password included, in its error message.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """Return the newest migration this code ships."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        msg = "no migrations found"
        raise ConfigurationError(msg)
    return head


@contextmanager
def _reaching(engine: Engine) -> Iterator[None]:
    """Turn "cannot connect" into an error that names the database, never its password."""
    try:
        yield
    except OperationalError as error:
        url = engine.url.render_as_string(hide_password=True)
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        secret = engine.url.password
        if secret:
            reason = reason.replace(str(secret), "***")
        msg = f"cannot use the audit database {url}: {reason}"
        raise TransientError(msg) from None


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at, or None for an empty database."""
    with _reaching(engine), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (the newest by default)."""
    config = _config()
    with _reaching(engine), engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def ensure_current(engine: Engine) -> None:
    """Refuse to run against a database whose schema is not the one this code expects.

    Raises
    ------
    ConfigurationError
        Naming both revisions and the command that fixes it.
    """
    current, head = current_revision(engine), head_revision()
    if current != head:
        url = engine.url.render_as_string(hide_password=True)
        msg = (
            f"audit database {url} is at schema revision {current or 'none'}, but this "
            f"Steward needs {head}; run `steward audit upgrade` first"
        )
        raise ConfigurationError(msg)
