"""A real Rucio server on 127.0.0.1, for the tests and for ``steward dev up``.

Steward delegates data placement to Rucio, so its tests talk to the real thing: the ``rucio``
server package at the same release as the product's ``rucio-clients``, serving its REST API with
gunicorn over SQLite (WAL) or PostgreSQL, plus Rucio's own daemons run one pass at a time.

The server package lives in its own virtual environment under the Steward cache, because its
wheel contains every file of ``rucio-clients``: installing both into the product venv would
make uninstalling either break the other. The venv is built once (about a minute) and reused;
a file lock makes concurrent builders wait for the first one.

Examples
--------
>>> with run_rucio_server(tmp_path) as server:  # doctest: +SKIP
...     storage = RucioStorage(server.settings())
...     ...
...     server.daemons.converge()  # judge and conveyor passes until nothing changes
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from secrets import token_hex
from types import TracebackType
from typing import Any, Final, Literal, Self

from pydantic import SecretStr

from steward.config import Settings
from steward.constants import CACHE_DIR_ENV
from steward.storage.files import write_private
from steward.testing.childprocess import (
    ChildProcess,
    ChildProcessDiedError,
    free_port,
    log_tail,
    wait_until,
)
from steward.testing.postgres import PostgresError, find_bindir, postgres_server

__all__ = [
    "ACCOUNT",
    "DAEMONS",
    "DATABASE_ENV",
    "ROOT_ACCOUNT",
    "RUCIO_VERSION",
    "ConvergeResult",
    "DaemonPass",
    "RucioDaemons",
    "RucioHarnessError",
    "RucioServer",
    "ensure_venv",
    "run_rucio_server",
]

RUCIO_VERSION: Final = "41.5.1"
"""The server release: the same as the product's ``rucio-clients``."""

SERVER_REQUIREMENTS: Final = (
    f"rucio=={RUCIO_VERSION}",
    "gunicorn==27.0.1",
    "psycopg[binary]==3.3.9",
)
"""What the server venv holds; pinned so every machine serves the same thing."""

DATABASE_ENV: Final = "STEWARD_TEST_RUCIO_DB"
"""``auto`` (default), ``sqlite`` or ``postgresql``: the database behind the test server.
``auto`` takes PostgreSQL when it is installed, as ``steward dev up`` does."""

SQLITE_BUSY_SECONDS: Final = 60
"""How long a Rucio process waits for SQLite's write lock before "database is locked".

The API workers, the daemons and the tests contend for one write lock; SQLite's default of
5 s was not always enough on a loaded two-core machine, and the loser's call failed."""

DAEMONS: Final = (
    "judge-evaluator",
    "judge-cleaner",
    "judge-injector",
    "judge-repairer",
    "transmogrifier",
    "reaper",
    "undertaker",
    "conveyor-submitter",
    "conveyor-poller",
    "conveyor-finisher",
)
"""Daemons :meth:`RucioDaemons.run` can run one pass of."""

ACCOUNT: Final = "steward"
"""The account Steward acts as: a dedicated ``admin`` service account, never ``root``
(`steward.storage.rucio.accounts` says why and what ``admin`` is needed for)."""

ROOT_ACCOUNT: Final = "root"
"""Rucio's bootstrap account; the harness uses it only to create `ACCOUNT` and other accounts."""

_RUNNER: Final = Path(__file__).with_name("rucio_daemon_runner.py")
_READY_MARKER: Final = ".steward-ready"
_VENV_BUILD_TIMEOUT: Final = 900.0
_START_TIMEOUT: Final = 60.0
_DAEMON_TIMEOUT: Final = 300.0
_START_ATTEMPTS: Final = 3


class RucioHarnessError(RuntimeError):
    """The Rucio server or its daemons failed; the message ends with the relevant log."""


def _cache_root() -> Path:
    """``$STEWARD_CACHE_DIR`` or ``~/.cache/steward``."""
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "steward"


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Environment for server-venv processes: the product venv's Python settings removed."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "RUCIO_CONFIG", "RUCIO_HOME"}
    }
    env.update(extra)
    return env


def ensure_venv(*, log: Callable[[str], None] | None = None) -> Path:
    """Return the server's virtual environment, building it first if needed.

    The venv is ``${STEWARD_CACHE_DIR:-~/.cache/steward}/rucio/<version>/venv``. A marker file
    written last records the requirements it was built from; a venv without it (an interrupted
    build) or with other requirements is rebuilt from scratch. An exclusive ``flock`` on a file
    next to it serialises builders: the second one waits, then finds the venv ready.

    Raises
    ------
    RucioHarnessError
        If pip fails (the message ends with its output).
    """
    root = _cache_root() / "rucio" / RUCIO_VERSION
    venv = root / "venv"
    marker = venv / _READY_MARKER
    wanted = json.dumps(list(SERVER_REQUIREMENTS))
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and marker.read_text() == wanted:
            return venv
        if log is not None:
            log(f"building the Rucio {RUCIO_VERSION} server venv in {venv} (about a minute)")
        shutil.rmtree(venv, ignore_errors=True)
        build_log = root / "build.log"
        commands = [
            [sys.executable, "-m", "venv", str(venv)],
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                *SERVER_REQUIREMENTS,
            ],
        ]
        with build_log.open("wb") as output:
            for command in commands:
                result = subprocess.run(
                    command,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=_clean_env({}),
                    timeout=_VENV_BUILD_TIMEOUT,
                    check=False,
                )
                if result.returncode != 0:
                    msg = f"{command[:4]} failed; end of {build_log}:\n{log_tail(build_log)}"
                    raise RucioHarnessError(msg)
        marker.write_text(wanted)
        return venv


def _site_packages(venv: Path) -> Path:
    """Return the venv's site-packages (``lib/pythonX.Y/site-packages``)."""
    found = sorted(venv.glob("lib/python*/site-packages"))
    if not found:
        msg = f"no site-packages in {venv}; delete it to rebuild"
        raise RucioHarnessError(msg)
    return found[0]


_ALEMBIC_INI: Final = """\
[alembic]
script_location = {scripts}
sqlalchemy.url = {url}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %%(levelname)-5.5s [%%(name)s] %%(message)s
"""

_RUCIO_CFG: Final = """\
# Written by steward.testing.rucio_server; serves the server, the clients and the daemons.
[common]
loglevel = WARNING
logdir = {logdir}
mailtemplatedir = {mailtemplates}

[client]
rucio_host = {host}
auth_host = {host}
auth_type = userpass
username = {root_username}
password = {root_password}
account = {root_account}
request_retries = 3

[database]
default = {url}
pool_reset_on_return = rollback

[bootstrap]
userpass_identity = {root_username}
userpass_pwd = {root_password}
userpass_email = steward@localhost

[alembic]
cfg = {alembic}

[conveyor]
transfertool = mock
scheme = mock,file

[cache]
# No memcached: Rucio would cache RSE expressions and attributes for 10 minutes.
url = 127.0.0.1:1

[monitor]
enable_metrics = False
"""


@dataclass(frozen=True)
class DaemonPass:
    """What one daemon pass reported."""

    daemon: str
    seconds: float
    """Time the pass took inside the runner."""


@dataclass(frozen=True)
class ConvergeResult:
    """What :meth:`RucioDaemons.converge` did."""

    rounds: int
    """Rounds of injector, evaluator, submitter, poller, finisher."""

    quiet: bool
    """Whether the last round changed nothing (False: ``max_rounds`` ran out)."""

    state: dict[str, Any]
    """Counts of rules, locks, requests and replicas by state, and queued DID updates."""

    seconds: float
    """Wall time."""


class RucioDaemons:
    """A long-lived process in the server venv that runs Rucio daemon passes on request.

    Each daemon's command line idles about ten seconds (it waits for peer workers), so the
    runner imports the daemons once and runs a pass with ``once=True`` and no wait, in a
    fraction of a second. Requests and replies are JSON lines over its stdin and stdout.
    The process starts on first use and is thread-safe.
    """

    def __init__(self, python: Path, env: Mapping[str, str], log: Path) -> None:
        self._python = python
        self._env = dict(env)
        self._log = log
        self._process: ChildProcess | None = None
        self._lock = threading.Lock()

    def run(self, daemon: str, *, timeout: float = _DAEMON_TIMEOUT, **options: Any) -> DaemonPass:  # noqa: ANN401
        """Run one pass of ``daemon`` (one of `DAEMONS`) with its keyword ``options``.

        Raises
        ------
        RucioHarnessError
            If the pass raised (the message carries Rucio's traceback) or timed out.
        """
        reply = self._request({"daemon": daemon, "options": options}, timeout)
        return DaemonPass(daemon, reply["seconds"])

    def converge(
        self,
        *,
        max_rounds: int = 30,
        timeout: float = _DAEMON_TIMEOUT,
        scope: str | None = None,
    ) -> ConvergeResult:
        """Run judge-injector, judge-evaluator and the conveyor until a round changes nothing.

        With the mock transfertool every transfer succeeds, so afterwards rules that can be
        satisfied are OK. Stops after ``max_rounds`` rounds (``quiet`` is then False). With
        ``scope`` (a test's own), "nothing changes" is judged on that scope's rows only, so
        work other tests left on a shared server neither delays nor fails the check.
        """
        options: dict[str, Any] = {"max_rounds": max_rounds}
        if scope is not None:
            options["scope"] = scope
        reply = self._request({"daemon": "converge", "options": options}, timeout)
        result = reply["result"]
        return ConvergeResult(result["rounds"], result["quiet"], result["state"], reply["seconds"])

    def age_locks(self, rule_id: str, seconds: float) -> int:
        """Make a rule's locks ``seconds`` older (Rucio's repairer backs off for hours).

        Returns how many locks moved. For tests only: it writes to Rucio's database directly.
        """
        reply = self._request(
            {"daemon": "age-locks", "options": {"rule_id": rule_id, "seconds": seconds}},
            _DAEMON_TIMEOUT,
        )
        return int(reply["result"]["locks"])

    def age_rule(self, rule_id: str, seconds: float) -> int:
        """Move a rule's creation, update and expiry times ``seconds`` into the past.

        Rucio's clock moved forward, for that rule: a rule whose lifetime has run out this way
        is removed by the next ``judge-cleaner`` pass. Returns how many rules moved (0 or 1).
        For tests only: it writes to Rucio's database directly.
        """
        reply = self._request(
            {"daemon": "age-rule", "options": {"rule_id": rule_id, "seconds": seconds}},
            _DAEMON_TIMEOUT,
        )
        return int(reply["result"]["rules"])

    def fingerprint(self, scope: str | None = None) -> dict[str, Any]:
        """Return counts of rules, locks, requests and replicas by state (of ``scope`` only)."""
        options = {"scope": scope} if scope is not None else {}
        request = {"daemon": "fingerprint", "options": options}
        result: dict[str, Any] = self._request(request, _DAEMON_TIMEOUT)["result"]
        return result

    @property
    def pid(self) -> int | None:
        """The runner's process id, or None when it is not running."""
        process = self._process
        return process.pid if process is not None and process.running() else None

    def close(self) -> None:
        """Stop the runner process (it restarts on next use)."""
        with self._lock:
            if self._process is not None:
                self._process.stop()
                self._process = None

    def _request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and read its reply.

        A read interrupted before its reply arrived (a test's timeout firing, ^C) would
        leave that reply in the pipe for the next request, and every later request would
        read the one before's; so such a runner is stopped, and the next request starts a
        fresh one.
        """
        with self._lock:
            try:
                process = self._running()
                assert process.popen.stdin is not None  # noqa: S101 - started with PIPE
                process.popen.stdin.write(json.dumps(request).encode() + b"\n")
                process.popen.stdin.flush()
                reply = self._read(process, timeout)
            except BaseException:
                if self._process is not None:
                    self._process.stop()
                    self._process = None
                raise
        if not reply.get("ok"):
            msg = f"Rucio daemon {request['daemon']!r} failed:\n{reply.get('error')}"
            raise RucioHarnessError(msg)
        return reply

    def _running(self) -> ChildProcess:
        if self._process is None or not self._process.running():
            self._process = ChildProcess.start(
                [str(self._python), str(_RUNNER), "serve"],
                log=self._log,
                env=self._env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            self._read(self._process, _START_TIMEOUT)
        return self._process

    def _read(self, process: ChildProcess, timeout: float) -> dict[str, Any]:
        """Read one reply line, with a deadline, noticing if the runner died."""
        stdout = process.popen.stdout
        assert stdout is not None  # noqa: S101 - started with PIPE
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline() if ready else b""
        if not line:
            process.stop()
            self._process = None
            msg = (
                f"the Rucio daemon runner gave no answer within {timeout:.0f} s; end of "
                f"{self._log}:\n{log_tail(self._log)}"
            )
            raise RucioHarnessError(msg)
        reply: dict[str, Any] = json.loads(line)
        return reply


@dataclass
class RucioServer:
    """A Rucio server (REST API on 127.0.0.1 with gunicorn) and its daemons.

    Parameters
    ----------
    directory
        Holds rucio.cfg, alembic.ini, the SQLite database and the logs.
    database_url
        SQLAlchemy URL of an existing, empty database; SQLite in ``directory`` when None.
    username, password
        The userpass identity of `ACCOUNT`, the account Steward acts as (random password).
    root_username, root_password
        The userpass identity of ``root`` (random password), written to ``rucio.cfg`` for the
        ``rucio`` command and used to create `ACCOUNT`.
    workers
        gunicorn workers.
    death_signal
        Signal the server gets if this process dies; None lets it outlive the thread that
        started it (for a supervisor that starts it from a short-lived thread).
    """

    directory: Path
    database_url: str | None = None
    username: str = "steward"
    password: SecretStr = field(default_factory=lambda: SecretStr(token_hex(16)))
    root_username: str = "steward-root"
    root_password: SecretStr = field(default_factory=lambda: SecretStr(token_hex(16)))
    workers: int = 2
    death_signal: signal.Signals | None = signal.SIGTERM
    port: int = 0
    """The API's port (chosen at start)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds taken by ``venv``, ``bootstrap`` and ``api_start``."""

    _venv: Path | None = field(default=None, repr=False)
    _api: ChildProcess | None = field(default=None, repr=False)
    _daemons: RucioDaemons | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        """Base URL of the REST API (also the auth endpoint)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def account(self) -> str:
        """The account Steward acts as (`ACCOUNT`, an ``admin`` service account)."""
        return ACCOUNT

    @property
    def config_path(self) -> Path:
        """The rucio.cfg shared by server, daemons and the ``rucio`` command."""
        return self.directory / "rucio.cfg"

    @property
    def venv(self) -> Path:
        """The server's virtual environment."""
        if self._venv is None:
            msg = "the Rucio server is not started"
            raise RucioHarnessError(msg)
        return self._venv

    @property
    def daemons(self) -> RucioDaemons:
        """The daemon runner (started on first use)."""
        if self._daemons is None:
            self._daemons = RucioDaemons(
                self.venv / "bin" / "python", self._env(), self.directory / "daemons.log"
            )
        return self._daemons

    def env(self) -> dict[str, str]:
        """Variables pointing the ``rucio`` command of the server venv at this server."""
        return {"RUCIO_CONFIG": str(self.config_path)}

    def settings(self, **overrides: Any) -> Settings:  # noqa: ANN401
        """Steward settings for this server (`ACCOUNT`, userpass), with ``overrides``."""
        values: dict[str, Any] = {
            "rucio_host": self.host,
            "rucio_account": self.account,
            "rucio_username": self.username,
            "rucio_password": self.password,
        }
        values.update(overrides)
        return Settings(**values)

    def root_settings(self, **overrides: Any) -> Settings:  # noqa: ANN401
        """Settings acting as ``root``: for creating accounts and other users' rules in tests."""
        return self.settings(
            rucio_account=ROOT_ACCOUNT,
            rucio_username=self.root_username,
            rucio_password=self.root_password,
            **overrides,
        )

    def start(self, *, log: Callable[[str], None] | None = None) -> None:
        """Build the venv if needed, write the configuration, bootstrap, serve, wait for /ping.

        Raises
        ------
        RucioHarnessError
            If any step fails; nothing is left running.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        self._venv = ensure_venv(log=log)
        self.timings["venv"] = time.monotonic() - start
        self.port = free_port()
        self._write_config()
        self._bootstrap()
        self.start_api()
        self._create_operator_account()

    def _create_operator_account(self) -> None:
        """Create `ACCOUNT` (``admin``) with this server's userpass identity for it, as root."""
        from steward.storage.rucio import RucioStorage  # noqa: PLC0415 - rucio.client is heavy

        with RucioStorage(self.root_settings(rucio_calls_per_second=1000.0)) as root:
            root.ensure_account(self.account, email="steward@localhost", admin=True)
            root.ensure_userpass_identity(
                self.account,
                self.username,
                self.password.get_secret_value(),
                email="steward@localhost",
            )

    def _env(self) -> dict[str, str]:
        return _clean_env(
            {
                "RUCIO_CONFIG": str(self.config_path),
                "VIRTUAL_ENV": str(self.venv),
                "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            }
        )

    def _write_config(self) -> None:
        url = self.database_url or (
            f"sqlite:///{self.directory / 'rucio.db'}?timeout={SQLITE_BUSY_SECONDS}"
        )
        (self.directory / "logs").mkdir(exist_ok=True)
        alembic = self.directory / "alembic.ini"
        scripts = _site_packages(self.venv) / "rucio" / "db" / "sqla" / "migrate_repo"
        alembic.write_text(_ALEMBIC_INI.format(scripts=scripts, url=url.replace("%", "%%")))
        write_private(
            self.config_path,
            _RUCIO_CFG.format(
                logdir=self.directory / "logs",
                mailtemplates=self.venv / "rucio" / "etc" / "mail_templates",
                host=self.host,
                root_username=self.root_username,
                root_password=self.root_password.get_secret_value(),
                root_account=ROOT_ACCOUNT,
                url=url.replace("%", "%%"),
                alembic=alembic,
            ),
        )

    def _bootstrap(self) -> None:
        """Create schema and root account with Rucio's functions, in the server venv."""
        log = self.directory / "bootstrap.log"
        with log.open("wb") as output:
            result = subprocess.run(
                [str(self.venv / "bin" / "python"), str(_RUNNER), "bootstrap"],
                stdout=subprocess.PIPE,
                stderr=output,
                env=self._env(),
                timeout=300,
                check=False,
            )
        if result.returncode != 0:
            msg = f"Rucio bootstrap failed; end of {log}:\n{log_tail(log)}"
            raise RucioHarnessError(msg)
        self.timings["bootstrap"] = json.loads(result.stdout)["seconds"]

    def start_api(self) -> None:
        """Serve the REST API with gunicorn on ``port`` and wait until /ping answers.

        Also used to restart the API after :meth:`stop_api` (same port, same database).
        """
        for attempt in range(_START_ATTEMPTS):
            try:
                self._start_api_once()
            except ChildProcessDiedError:
                if attempt == _START_ATTEMPTS - 1 or not self._port_was_taken():
                    raise
                self.port = free_port()  # another process took the port meanwhile
                self._write_config()
            else:
                return

    def _port_was_taken(self) -> bool:
        """Whether gunicorn failed because another process bound the port first."""
        return "in use" in log_tail(self.directory / "gunicorn.log", 5)

    def _start_api_once(self) -> None:
        start = time.monotonic()
        self._api = ChildProcess.start(
            [
                str(self.venv / "bin" / "gunicorn"),
                "--workers",
                str(self.workers),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--timeout",
                "600",
                "--graceful-timeout",
                "5",
                "--no-control-socket",
                "rucio.web.rest.flaskapi.v1.main:application",
            ],
            log=self.directory / "gunicorn.log",
            env=self._env(),
            cwd=self.directory,
            death_signal=self.death_signal,
        )
        try:
            wait_until(
                self.ping,
                timeout=_START_TIMEOUT,
                what=f"Rucio server at {self.host}",
                alive=self._api.check_alive,
            )
        except TimeoutError as error:
            self.stop_api()
            msg = f"{error}; end of gunicorn.log:\n{log_tail(self.directory / 'gunicorn.log')}"
            raise RucioHarnessError(msg) from error
        except BaseException:
            self.stop_api()
            raise
        self.timings["api_start"] = time.monotonic() - start

    def ping(self) -> bool:
        """Return whether ``GET /ping`` answers 200."""
        try:
            with urllib.request.urlopen(f"{self.host}/ping", timeout=2) as response:  # noqa: S310 - our own http URL
                return bool(response.status == 200)  # noqa: PLR2004 - HTTP OK
        except (urllib.error.URLError, OSError):
            return False

    def stop_api(self) -> None:
        """Stop gunicorn and its workers (the database and daemons stay)."""
        if self._api is not None:
            self._api.stop()
            self._api = None

    def freeze_api(self) -> None:
        """SIGSTOP gunicorn and its workers: connections are accepted, nothing is answered.

        The hang of issue 11 (a stopped, not killed, server); `thaw_api` ends it. The kernel
        still completes TCP handshakes into the listen backlog, so clients see a timeout,
        not a refusal.
        """
        if self._api is None:
            msg = "the Rucio API is not running"
            raise RucioHarnessError(msg)
        self._api.pause()

    def thaw_api(self) -> None:
        """SIGCONT the API after `freeze_api`: it answers again (queued requests first)."""
        if self._api is not None:
            self._api.resume()

    def stop(self) -> None:
        """Stop the daemon runner and the API; leave no process behind."""
        if self._daemons is not None:
            self._daemons.close()
        self.stop_api()

    def processes(self) -> list[tuple[str, int]]:
        """(name, pid) of the running processes: the API, and the daemon runner if started."""
        running = []
        if self._api is not None and self._api.running():
            running.append(("rucio-server", self._api.pid))
        runner = self._daemons.pid if self._daemons is not None else None
        if runner is not None:
            running.append(("rucio-daemons", runner))
        return running

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _database_kind(database: str | None) -> Literal["sqlite", "postgresql"]:
    """Return the database to use: the argument, else ``$STEWARD_TEST_RUCIO_DB``, else auto.

    ``auto`` is PostgreSQL when its binaries are installed, SQLite otherwise: the choice
    ``steward dev up`` makes, so tests meet the database developers and CI use.
    """
    kind = (database or os.environ.get(DATABASE_ENV) or "auto").lower()
    if kind not in {"auto", "sqlite", "postgresql"}:
        msg = f"{DATABASE_ENV} must be 'auto', 'sqlite' or 'postgresql', not {kind!r}"
        raise RucioHarnessError(msg)
    if kind == "auto":
        try:
            find_bindir()
        except PostgresError:
            return "sqlite"
        return "postgresql"
    return "postgresql" if kind == "postgresql" else "sqlite"


@contextmanager
def run_rucio_server(
    directory: Path,
    *,
    database: str | None = None,
    death_signal: signal.Signals | None = signal.SIGTERM,
    log: Callable[[str], None] | None = None,
) -> Iterator[RucioServer]:
    """Run a Rucio server (and, for PostgreSQL, its database server) for a ``with`` block.

    Parameters
    ----------
    directory
        Working directory (configuration, database, logs).
    database
        ``auto``, ``sqlite`` or ``postgresql``; ``$STEWARD_TEST_RUCIO_DB`` or ``auto`` when
        None.
    death_signal
        See `RucioServer`.
    log
        Receives progress messages (the venv build).
    """
    with ExitStack() as stack:
        url = None
        if _database_kind(database) == "postgresql":
            postgres = stack.enter_context(postgres_server())
            url = postgres.create_database("rucio")
        server = RucioServer(directory, database_url=url, death_signal=death_signal)
        stack.callback(server.stop)
        server.start(log=log)
        yield server


class RucioComponent:
    """The Rucio server as a ``steward dev up`` stack component (see ``testing.devstack``).

    Append ``RucioComponent`` to ``devstack.STACK_COMPONENTS``. The database is PostgreSQL when
    installed, else SQLite, unless ``STEWARD_TEST_RUCIO_DB`` says which. Without daemons rules
    would stay REPLICATING, so a thread runs the daemons every `DAEMON_INTERVAL` seconds:
    judge and conveyor until quiet, then judge-cleaner, transmogrifier, undertaker and reaper.
    """

    name = "rucio"
    DAEMON_INTERVAL: Final = 5.0
    _PERIODIC: Final = ("judge-cleaner", "transmogrifier", "undertaker", "reaper")

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._server: RucioServer | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def start(self, context: Any) -> None:  # noqa: ANN401 - devstack.StackContext; no import cycle
        """Start the server in ``<run dir>/rucio``, run the daemons once, start their loop."""
        self._server = self._stack.enter_context(run_rucio_server(context.run_dir / self.name))
        self._run_daemons()  # starts the runner here, so processes() lists it
        self._ticker = threading.Thread(target=self._loop, name="rucio-daemons", daemon=True)
        self._ticker.start()

    def _run_daemons(self) -> None:
        daemons = self._running().daemons
        daemons.converge()
        for daemon in self._PERIODIC:
            daemons.run(daemon)

    def _loop(self) -> None:
        while not self._stop.wait(self.DAEMON_INTERVAL):
            try:
                self._run_daemons()
            except RucioHarnessError as error:  # keep the stack up; the log says what failed
                sys.stderr.write(f"rucio daemons: {error}\n")

    def stop(self) -> None:
        """Stop the daemon loop, the server, its daemon runner and its database."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self._stack.close()
        self._server = None

    def _running(self) -> RucioServer:
        if self._server is None:
            msg = "the Rucio server is not started"
            raise RucioHarnessError(msg)
        return self._server

    def processes(self) -> list[Any]:
        """Return the server's processes as ``devstack.ProcessState`` (API, daemon runner)."""
        from steward.testing.devstack import ProcessState, _start_time  # noqa: PLC0415 - cycle

        server = self._running()
        return [
            ProcessState(
                self.name,
                name,
                pid,
                _start_time(pid) or "",
                f"{server.host}/ping",
                str(server.directory / "gunicorn.log"),
            )
            for name, pid in server.processes()
        ]

    def env(self) -> dict[str, str]:
        """``RUCIO_CONFIG`` for the ``rucio`` command and ``STEWARD_RUCIO_*`` for Steward."""
        server = self._running()
        return {
            **server.env(),
            "STEWARD_RUCIO_HOST": server.host,
            "STEWARD_RUCIO_ACCOUNT": server.account,
            "STEWARD_RUCIO_USERNAME": server.username,
            "STEWARD_RUCIO_PASSWORD_FILE": str(self._password_file(server)),
        }

    def summary(self) -> list[str]:
        """Where the server is and how to use the ``rucio`` command."""
        server = self._running()
        rucio = server.venv / "bin" / "rucio"
        return [
            (
                f"Rucio {RUCIO_VERSION} at {server.host}; the operator acts as account "
                f"{server.account} (admin), the rucio command as {ROOT_ACCOUNT}"
            ),
            f"rucio.cfg: {server.config_path}",
            f"try: RUCIO_CONFIG={server.config_path} {rucio} rule list --account {server.account}",
        ]

    @staticmethod
    def _password_file(server: RucioServer) -> Path:
        """Write the password to a 0600 file, so env output never shows it."""
        path = server.directory / "password"
        write_private(path, server.password.get_secret_value())
        return path
