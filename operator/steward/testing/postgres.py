"""A throw-away PostgreSQL server for tests and the local stack.

Steward's audit store and the Rucio test server both need a real PostgreSQL when the tests run
against it: SQLite hides locking and type differences that production would show. This module
starts Debian's PostgreSQL binaries (``initdb``, ``postgres``) on a loopback port in a temporary
directory, with durability off (``fsync=off``): the data is thrown away at the end anyway and
start-up takes about a second.

The server runs in the foreground as a child process, in its own process group, and dies with
the process that started it (``PR_SET_PDEATHSIG``), so a crashed test session leaves nothing
behind. When run as root, PostgreSQL (which refuses root) runs as the ``postgres`` user.

Examples
--------
>>> with postgres_server() as pg:  # doctest: +SKIP
...     url = pg.create_database()  # a fresh, empty database
...     engine = sqlalchemy.create_engine(url)
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from steward.testing.childprocess import ChildProcess, free_port, wait_until

__all__ = ["PostgresError", "PostgresServer", "find_bindir", "postgres_server"]

BINDIR_ENV = "STEWARD_PG_BINDIR"
"""Environment variable naming the directory of ``initdb`` and ``postgres``."""

SERVICE_USER = "postgres"
"""The account PostgreSQL runs as when Steward's tests run as root."""

START_TIMEOUT = 60.0
"""Seconds to wait for the server to accept connections."""

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresError(RuntimeError):
    """PostgreSQL could not be found, initialised or started."""


def find_bindir() -> Path:
    """Return the directory holding ``initdb`` and ``postgres``.

    Debian keeps them off ``PATH`` under ``/usr/lib/postgresql/<version>/bin``; the newest
    installed version wins unless ``STEWARD_PG_BINDIR`` names one.

    Raises
    ------
    PostgresError
        If no PostgreSQL installation is found (install it with ``apt-get install -y
        postgresql``).
    """
    configured = os.environ.get(BINDIR_ENV)
    candidates = [Path(configured)] if configured else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "initdb").is_file() and (candidate / "postgres").is_file():
            return candidate
    msg = (
        "PostgreSQL binaries (initdb, postgres) not found; install them with "
        f"'apt-get install -y postgresql' or set {BINDIR_ENV}"
    )
    raise PostgresError(msg)


@dataclass
class PostgresServer:
    """A running PostgreSQL server on 127.0.0.1; trust authentication, one superuser.

    Use :func:`postgres_server` to get one.
    """

    port: int
    """TCP port on 127.0.0.1."""

    directory: Path
    """Data directory, socket directory and log live under it."""

    user: str = SERVICE_USER
    """Superuser name (connections are trusted, no password)."""

    host: str = "127.0.0.1"
    """Listen address."""

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """Return the SQLAlchemy URL of ``database`` (``postgresql+<driver>://...``)."""
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        """Return a libpq connection string for ``database`` (for psycopg or psql)."""
        return f"host={self.host} port={self.port} user={self.user} dbname={database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its SQLAlchemy URL.

        Parameters
        ----------
        name
            Database name (lower case, digits, ``_``); a fresh unique one when omitted, so
            tests that each need a clean database do not interfere.
        """
        name = name or f"db_{secrets.token_hex(6)}"
        if not _IDENTIFIER.match(name):
            msg = f"invalid database name {name!r}: use lower case letters, digits and '_'"
            raise ValueError(msg)
        self._execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its sessions first."""
        if not _IDENTIFIER.match(name):
            msg = f"invalid database name {name!r}"
            raise ValueError(msg)
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _execute(self, statement: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg  # noqa: PLC0415 - optional dependency, only needed with PostgreSQL

        with psycopg.connect(self.conninfo(), autocommit=True) as connection:
            connection.execute(statement.encode())

    def ping(self) -> bool:
        """Return whether the server accepts TCP connections."""
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((self.host, self.port)) == 0


def _service_account() -> pwd.struct_passwd | None:
    """Return the account to run PostgreSQL as, or None to run as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        msg = f"running as root needs the '{SERVICE_USER}' user (created by Debian's package)"
        raise PostgresError(msg) from None


def _initdb(bindir: Path, data: Path, account: pwd.struct_passwd | None) -> None:
    """Initialise a cluster: trust authentication, no fsync, C locale (fast and portable)."""
    command = [
        str(bindir / "initdb"),
        "--pgdata",
        str(data),
        "--username",
        SERVICE_USER,
        "--auth",
        "trust",
        "--encoding",
        "UTF8",
        "--locale",
        "C",
        "--no-sync",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        user=account.pw_uid if account else None,
        group=account.pw_gid if account else None,
        extra_groups=[] if account else None,
        timeout=120,
    )
    if result.returncode != 0:
        msg = f"initdb failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        raise PostgresError(msg)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Run a PostgreSQL server for the duration of the ``with`` block.

    The cluster lives in a new temporary directory, removed afterwards. As root it is made
    under ``/tmp`` (world-traversable) rather than ``$TMPDIR``, which may be a directory the
    ``postgres`` user cannot enter.

    Yields
    ------
    PostgresServer
        The running server; :meth:`PostgresServer.create_database` gives fresh databases.

    Raises
    ------
    PostgresError
        If the binaries are missing or the server does not start within a minute.
    """
    bindir = find_bindir()
    account = _service_account()
    root = Path(tempfile.mkdtemp(prefix="steward-pg-", dir="/tmp" if account else None))  # noqa: S108 - see above
    try:
        if account is not None:
            os.chown(root, account.pw_uid, account.pw_gid)
        _initdb(bindir, root / "data", account)
        server = PostgresServer(port=free_port(), directory=root)
        process = _start(bindir, server, account)
        try:
            yield server
        finally:
            process.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start(bindir: Path, server: PostgresServer, account: pwd.struct_passwd | None) -> ChildProcess:
    """Start ``postgres`` in the foreground and wait until it accepts connections."""
    command = [
        str(bindir / "postgres"),
        "-D",
        str(server.directory / "data"),
        "-p",
        str(server.port),
        "-c",
        f"listen_addresses={server.host}",
        "-c",
        f"unix_socket_directories={server.directory}",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=200",
    ]
    process = ChildProcess.start(
        command,
        log=server.directory / "postgres.log",
        user=account.pw_uid if account else None,
        group=account.pw_gid if account else None,
        # SIGQUIT is PostgreSQL's immediate shutdown: nothing here is worth a checkpoint.
        stop_signal=signal.SIGQUIT,
        death_signal=signal.SIGQUIT,
    )
    try:
        wait_until(
            lambda: _accepts_connections(server),
            timeout=START_TIMEOUT,
            what=f"PostgreSQL on port {server.port}",
            alive=process.check_alive,
        )
    except BaseException:
        process.stop()
        raise
    return process


def _accepts_connections(server: PostgresServer) -> bool:
    """Return whether a real login succeeds (the port opens before recovery finishes)."""
    if not server.ping():
        return False
    import psycopg  # noqa: PLC0415 - optional dependency, only needed with PostgreSQL

    with suppress(psycopg.OperationalError), psycopg.connect(server.conninfo(), connect_timeout=2):
        return True
    return False
