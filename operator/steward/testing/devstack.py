"""The local development stack behind ``steward dev up|down|status|env``.

``up`` builds (or reuses) the binaries, then starts a detached supervisor process,
``python -m steward.testing.devstack serve``, which starts each stack component in turn and
waits for SIGTERM. The components' processes die with the supervisor (they carry
``PR_SET_PDEATHSIG``), so ``down`` stops the whole stack by stopping the supervisor, and kills
any recorded process left over should the supervisor itself have been killed.

The supervisor describes the running stack in ``<state dir>/state.json``: its own pid, each
component's processes (pid, start time, health URL, log), the environment a shell needs
(``KUBECONFIG``, ``RUCIO_CONFIG``, ``STEWARD_*``), hints for the user and notes on what cannot
work locally. ``status`` and ``env`` only read that file and probe the health URLs, so they work
from any process.

The stack is ephemeral: every ``up`` starts an empty cluster, Rucio and audit store, and
``down`` discards them (the logs stay in ``<state dir>/run`` until the next ``up``).

Stack components are the extension point: `STACK_COMPONENTS` lists factories of
`StackComponent`, started in order and stopped in reverse: the Kubernetes control plane, Rucio
(`RucioStackComponent`) and Steward itself (`OperatorComponent`: namespace, audit store,
``sites/`` and ``policies/`` applied, the operator, demo data).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from steward.exceptions import StewardError
from steward.storage.rucio import RucioStorage
from steward.testing.certs import Pki
from steward.testing.childprocess import (
    ChildProcessDiedError,
    free_port,
    wait_until,
)
from steward.testing.controlplane import ControlPlane, is_healthy, process_alive
from steward.testing.devkueue import KueueSites
from steward.testing.devoperator import (
    NAMESPACE,
    REFRESH_INTERVAL,
    Applied,
    DevOperatorError,
    InvalidRepositoryError,
    RucioDatabase,
    apply_repository,
    choose_rucio_database,
    create_namespace,
    declared_rses,
    declared_sites,
    demo_rses,
    local_limitations,
    make_signing_key,
    migrate_audit,
    operator_env,
    reconciled_kinds,
    refused_selections,
    replication_rules,
    rucio_settings,
    seed_demo_data,
    sites_not_ready,
)
from steward.testing.k8sbuild import KUBERNETES_VERSION, Binaries, cache_root, ensure_binaries
from steward.testing.kueue import POOL_LABELS, QUEUEING_STAGES
from steward.testing.operatorprocess import OperatorProcess
from steward.testing.rucio_server import DATABASE_ENV, RucioComponent, RucioHarnessError

__all__ = [
    "RUCIO_DATABASES",
    "STACK_COMPONENTS",
    "ControlPlaneComponent",
    "DevStackError",
    "OperatorComponent",
    "ProcessState",
    "RucioStackComponent",
    "StackComponent",
    "StackContext",
    "StackState",
    "default_state_dir",
    "down",
    "find_repo_root",
    "read_state",
    "status",
    "up",
]

STATE_FILE: Final = "state.json"
_SUPERVISOR_LOG: Final = "supervisor.log"
_POLL_SECONDS: Final = 0.2
_LOG_TAIL_LINES: Final = 40
_OPERATOR_START_TIMEOUT: Final = 90.0
_REGISTRATION_TIMEOUT: Final = 120.0

RUCIO_DATABASES: Final = ("auto", "postgresql", "sqlite")
"""``--rucio-database`` choices; ``auto``: PostgreSQL when installed, else SQLite."""


class DevStackError(RuntimeError):
    """The stack failed to start or to stop; the message says where to look."""


@dataclass(frozen=True)
class StackContext:
    """What a component gets to start with."""

    run_dir: Path
    """Empty directory for this run; each component makes a subdirectory named after itself."""

    binaries: Binaries
    """The Kubernetes binaries (kubectl included)."""

    repo_root: Path | None
    """The Steward checkout (crds/, sites/, policies/), or None outside a checkout."""

    nodes: int
    """How many kwok nodes to create."""

    kueue: bool = False
    """Run Kueue as a MultiKueue manager, and the worker sites of ``sites/`` (`devkueue`)."""

    rucio_database: str = "auto"
    """One of `RUCIO_DATABASES`."""

    env: Mapping[str, str] = field(default_factory=dict)
    """What the components started before this one export (``KUBECONFIG``...)."""


@dataclass(frozen=True)
class ProcessState:
    """One process of a component, as recorded in the state file."""

    component: str
    name: str
    pid: int
    start_time: str
    """``/proc/<pid>/stat`` start time: tells the recorded process from a later one with its pid."""
    health_url: str
    log: str
    pki: str | None = None
    """Directory of the CA and client certificate needed to probe an HTTPS `health_url`."""
    scratch: str | None = None
    """Throw-away directory of the process (PostgreSQL's cluster in /tmp) that ``down`` removes
    should the process have been killed before it could."""

    def alive(self) -> bool:
        """Whether this very process still runs."""
        return _start_time(self.pid) == self.start_time

    def healthy(self) -> bool:
        """Whether the process runs and its health endpoint answers.

        An ``http(s)://`` URL must answer 200; a ``tcp://host:port`` one (PostgreSQL) must
        accept a connection.
        """
        if not self.alive():
            return False
        if self.health_url.startswith("tcp://"):
            address = urlsplit(self.health_url)
            with socket.socket() as sock:
                sock.settimeout(2.0)
                return sock.connect_ex((address.hostname or "", address.port or 0)) == 0
        pki = Pki(Path(self.pki)) if self.pki else None
        return is_healthy(self.health_url, pki)


class StackComponent(Protocol):
    """One part of the stack, started and stopped by the supervisor.

    To add a component, write a class with these members and append its factory to
    `STACK_COMPONENTS`.
    """

    name: str
    """Shown by ``steward dev status``."""

    def start(self, context: StackContext) -> None:
        """Start, and return once usable; raise with the reason if that fails."""

    def stop(self) -> None:
        """Stop everything started, leaving no process."""

    def processes(self) -> list[ProcessState]:
        """List the running processes, for ``status``, and for ``down`` after a crash."""

    def env(self) -> dict[str, str]:
        """Variables a shell needs to use the component (``steward dev env`` exports them)."""

    def summary(self) -> list[str]:
        """Lines for the user after ``up``: what runs, where, a command to try."""

    def notes(self) -> list[str]:
        """Lines for ``up`` and ``status``: how it is configured, what cannot work locally."""


class ControlPlaneComponent:
    """The Kubernetes control plane with kwok nodes and the checkout's CRDs installed."""

    name = "kubernetes"

    def __init__(self) -> None:
        self._plane: ControlPlane | None = None
        self._crds: list[str] = []
        self._nodes: list[str] = []
        self._kubectl = "kubectl"
        self._kueue: KueueSites | None = None

    def start(self, context: StackContext) -> None:
        """Start the control plane, create the nodes, install crds/ (and Kueue, if asked)."""
        self._plane = ControlPlane(
            binaries=context.binaries,
            run_dir=context.run_dir / self.name,
            stages=[QUEUEING_STAGES] if context.kueue else (),
        )
        self._plane.start()
        self._nodes = self._plane.create_nodes(
            context.nodes, labels=POOL_LABELS if context.kueue else None
        )
        if context.repo_root is not None:
            self._crds = self._plane.install_crds(context.repo_root / "crds")
        self._kubectl = str(context.binaries.kubectl)
        if context.kueue:
            self._kueue = KueueSites.start(
                self._plane, context.binaries, context.repo_root, context.run_dir, NAMESPACE
            )

    def stop(self) -> None:
        """Stop every process of the control plane (and Kueue's, workers first)."""
        if self._kueue is not None:
            self._kueue.stop()
        if self._plane is not None:
            self._plane.stop()

    def _running(self) -> ControlPlane:
        if self._plane is None:
            raise DevStackError("the control plane is not started")
        return self._plane

    def processes(self) -> list[ProcessState]:
        """etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok."""
        plane = self._running()
        return [
            ProcessState(
                self.name,
                info.name,
                info.pid,
                _start_time(info.pid) or "",
                info.health_url,
                str(info.log),
                str(plane.pki.directory),
            )
            for info in plane.components()
        ] + [
            ProcessState(
                self.name,
                info.name,
                info.pid,
                _start_time(info.pid) or "",
                info.health_url,
                str(info.log),
                str(pki) if pki else None,
            )
            for info, pki in (self._kueue.components() if self._kueue else [])
        ]

    def env(self) -> dict[str, str]:
        """``KUBECONFIG``, pointing at the admin kubeconfig."""
        return {"KUBECONFIG": str(self._running().kubeconfig)}

    def summary(self) -> list[str]:
        """Tell the API server URL, nodes, CRDs, kubeconfig, and a kubectl line to try."""
        plane = self._running()
        return [
            f"Kubernetes {KUBERNETES_VERSION} API server at {plane.server}",
            f"{len(self._nodes)} kwok nodes: {', '.join(self._nodes)}",
            f"{len(self._crds)} CRDs installed: {', '.join(self._crds) or '(no crds/ found)'}",
            f"kubeconfig: {plane.kubeconfig}",
            f"try: {self._kubectl} --kubeconfig {plane.kubeconfig} get nodes,crds",
            *(self._kueue.summary() if self._kueue else []),
        ]

    def notes(self) -> list[str]:
        """Nothing to add: the control plane is the real one."""
        return []


def _postgres_processes(component: str) -> list[ProcessState]:
    """The PostgreSQL servers this process started (Debian's ``postgres``, our children).

    The Rucio harness starts PostgreSQL inside `run_rucio_server` and keeps its handle to
    itself; the supervisor finds the server among its own children, with the port and data
    directory from its command line.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            args = [a.decode() for a in (entry / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        name = stat[stat.find("(") + 1 : stat.rfind(")")]
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if name != "postgres" or parent != os.getpid() or "-p" not in args or "-D" not in args:
            continue
        port = args[args.index("-p") + 1]
        data = Path(args[args.index("-D") + 1])
        pid = int(entry.name)
        found.append(
            ProcessState(
                component,
                "postgresql",
                pid,
                _start_time(pid) or "",
                f"tcp://127.0.0.1:{port}",
                str(data.parent / "postgres.log"),
                scratch=str(data.parent),
            )
        )
    return found


class RucioStackComponent(RucioComponent):
    """The Rucio server with its daemon loop, on PostgreSQL when installed, else SQLite.

    `RucioComponent` picks its database from ``$STEWARD_TEST_RUCIO_DB`` (auto by default); this
    sets it from ``--rucio-database`` for the start (the supervisor is a process of its own),
    lists PostgreSQL among the processes, and says which database serves and what that means.
    """

    def __init__(self) -> None:
        super().__init__()
        self.database: RucioDatabase = "sqlite"
        self._why = ""

    def start(self, context: StackContext) -> None:
        """Choose the database, then start Rucio, its daemons and their loop."""
        self.database, self._why = choose_rucio_database(context.rucio_database)
        previous = os.environ.get(DATABASE_ENV)
        os.environ[DATABASE_ENV] = self.database
        try:
            super().start(context)
        finally:
            if previous is None:
                os.environ.pop(DATABASE_ENV, None)
            else:
                os.environ[DATABASE_ENV] = previous

    def processes(self) -> list[ProcessState]:
        """PostgreSQL (when used), the API server and the daemon runner."""
        database = _postgres_processes(self.name) if self.database == "postgresql" else []
        return [*database, *super().processes()]

    def notes(self) -> list[str]:
        """Which database serves Rucio, and what runs its daemons."""
        return [
            f"Rucio database: {self._why}",
            (
                "Rucio daemons (judge, conveyor with the mock transfertool, cleaner, reaper...) "
                f"run every {self.DAEMON_INTERVAL:.0f} s in the supervisor; transfers always "
                "succeed"
            ),
        ]


class OperatorComponent:
    """Steward itself: namespace, audit store, sites/ and policies/ applied, operator, demo data.

    Needs the components before it: ``KUBECONFIG`` from the control plane, ``STEWARD_RUCIO_*``
    from Rucio. The demo data goes in after the operator has registered the Sites' RSEs (Rucio
    refuses replicas on an unknown RSE), so the ReplicationRules' next timer tick places it.
    """

    name = "operator"

    def __init__(self) -> None:
        self._process: OperatorProcess | None = None
        self._directory = Path()
        self._metrics_port = 0
        self._database_url = ""
        self._applied: Applied | None = None
        self._seeded: list[str] = []
        self._notes: list[str] = []

    def start(self, context: StackContext) -> None:
        """Prepare the cluster and audit store, start the operator, then load the demo data."""
        self._directory = context.run_dir / self.name
        self._directory.mkdir(parents=True, exist_ok=True)
        kubeconfig = Path(context.env["KUBECONFIG"])
        self._database_url = f"sqlite:///{self._directory / 'audit.db'}"
        try:
            create_namespace(kubeconfig, NAMESPACE)
            migrate_audit(self._database_url)
            self._apply(context, kubeconfig)
            self._start_operator(context)
            if self._applied is not None and self._applied.resources:
                self._load_demo_data(context)
        except (StewardError, DevOperatorError, TimeoutError) as error:
            raise DevStackError(f"{self.name}: {error}") from error

    def _apply(self, context: StackContext, kubeconfig: Path) -> None:
        """Apply sites/ and policies/; files that do not validate leave the stack empty, noted."""
        if context.repo_root is None:
            self._notes.append("outside a checkout: nothing applied, no demo data")
            return
        try:
            self._applied = apply_repository(
                context.repo_root,
                kubeconfig,
                self._database_url,
                progress=lambda line: _say(f"apply: {line}"),
            )
        except InvalidRepositoryError as error:
            shown = "; ".join(error.problems[:5]) + (" ..." if len(error.problems) > 5 else "")  # noqa: PLR2004
            self._notes.append(
                f"nothing applied and no demo data: {len(error.problems)} validation problems "
                f"in sites/ or policies/ ({shown}); fix them (steward validate), then "
                "steward apply --allow-dirty sites policies"
            )

    def _start_operator(self, context: StackContext) -> None:
        self._metrics_port = free_port()
        self._process = OperatorProcess(
            operator_env(
                os.environ,
                context.env,
                self._database_url,
                self._metrics_port,
                make_signing_key(self._directory),
            ),
            self._directory / "operator.log",
            cwd=context.repo_root or self._directory,
        )
        try:
            self._process.start(_OPERATOR_START_TIMEOUT)
        except (TimeoutError, ChildProcessDiedError) as error:
            raise DevStackError(str(error)) from error

    def _load_demo_data(self, context: StackContext) -> None:
        assert self._applied is not None  # noqa: S101 - checked by the caller
        assert self._process is not None  # noqa: S101 - started before
        rules = replication_rules(self._applied.resources)
        kubeconfig = Path(context.env["KUBECONFIG"])
        sites = declared_sites(self._applied.resources)
        wait_until(
            lambda: not sites_not_ready(kubeconfig, sites),
            timeout=_REGISTRATION_TIMEOUT,
            what=(
                f"Sites {', '.join(sorted(sites))} Ready (their RSEs and distances registered "
                "in Rucio by the operator)"
            ),
            alive=self._process.check_alive,
        )
        with RucioStorage(rucio_settings(context.env)) as storage:
            wanted = demo_rses() & declared_rses(self._applied.resources)
            self._seeded = seed_demo_data(storage, wanted)
            refused = refused_selections(storage, rules)
        self._notes += local_limitations(
            self._applied.resources, reconciled_kinds(), refused, datetime.now(UTC)
        )

    def stop(self) -> None:
        """Stop the operator (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def processes(self) -> list[ProcessState]:
        """The operator process, probed on its liveness endpoint."""
        if self._process is None:
            return []
        pid = self._process.pid
        log = self._directory / "operator.log"
        return [
            ProcessState(
                self.name,
                "steward-operator",
                pid,
                _start_time(pid) or "",
                self._process.liveness,
                str(log),
            )
        ]

    def env(self) -> dict[str, str]:
        """The audit store and the operator's namespace; never the signing key.

        ``steward audit log`` and ``history`` read the store, ``steward audit verify
        --from-cluster`` the checkpoints in the namespace.
        """
        return {"STEWARD_DATABASE_URL": self._database_url, "STEWARD_OPERATOR_NAMESPACE": NAMESPACE}

    def summary(self) -> list[str]:
        """Where the operator runs, what was applied and loaded, and commands to try."""
        liveness = self._process.liveness if self._process is not None else "(not running)"
        lines = [
            (
                f"Steward operator: liveness {liveness}, metrics "
                f"http://127.0.0.1:{self._metrics_port}/metrics, refresh every "
                f"{REFRESH_INTERVAL:.0f} s, log {self._directory / 'operator.log'}"
            ),
            f"audit store: {self._database_url}",
        ]
        applied = self._applied
        if applied is not None and applied.resources:
            counts = ", ".join(f"{n} {kind}" for kind, n in applied.count().items())
            lines.append(f"applied sites/ and policies/ at {applied.commit[:12]}: {counts}")
            if applied.dirty:
                lines.append(
                    f"applied with uncommitted changes (--allow-dirty): {', '.join(applied.dirty)}"
                )
        lines += self._seeded
        lines.append(
            "try: kubectl get site,rr -A; steward audit log; steward audit verify --from-cluster; "
            f"steward history rr/raw-to-in2p3 -n {NAMESPACE}"
        )
        return lines

    def notes(self) -> list[str]:
        """What cannot converge on this stack, and why."""
        return list(self._notes)


STACK_COMPONENTS: list[Callable[[], StackComponent]] = [
    ControlPlaneComponent,
    RucioStackComponent,
    OperatorComponent,
]
"""Factories of the stack's components, in start order (stopped in reverse)."""


@dataclass
class StackState:
    """Contents of the state file."""

    supervisor: int
    supervisor_start_time: str
    phase: str = "starting"
    """``starting``, ``ready`` or ``failed``."""
    error: str = ""
    bin_dir: str = ""
    components: list[str] = field(default_factory=list)
    processes: list[ProcessState] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What cannot work locally, and how the stack is configured (``up`` and ``status``)."""

    def supervisor_alive(self) -> bool:
        """Whether the supervisor that wrote this state still runs."""
        return _start_time(self.supervisor) == self.supervisor_start_time

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackState:
        """Read what `write` wrote."""
        processes = [ProcessState(**process) for process in data.pop("processes", [])]
        return cls(**data, processes=processes)

    def write(self, state_dir: Path) -> None:
        """Replace the state file atomically, so readers never see half of it."""
        partial = state_dir / f"{STATE_FILE}.tmp"
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n")
        partial.replace(state_dir / STATE_FILE)


def _start_time(pid: int) -> str | None:
    """Start time of PID in clock ticks since boot, or None if it is not running."""
    if not process_alive(pid):
        return None
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (FileNotFoundError, IndexError):
        return None


def find_repo_root(start: Path) -> Path | None:
    """Find the nearest directory at or above START holding pyproject.toml and crds/."""
    for directory in (start, *start.parents):
        if (directory / "pyproject.toml").is_file() and (directory / "crds").is_dir():
            return directory
    return None


def default_state_dir(repo_root: Path | None) -> Path:
    """``<checkout>/.steward/dev``; outside a checkout, ``<steward cache>/dev``."""
    return repo_root / ".steward" / "dev" if repo_root else cache_root() / "dev"


def read_state(state_dir: Path) -> StackState | None:
    """Read the recorded stack; None if there is none."""
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    return StackState.from_json(json.loads(path.read_text()))


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise ``up`` and ``down`` on one state directory."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path) -> str:
    if not path.is_file():
        return "    (no log)"
    lines = path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(f"    {line}" for line in lines)


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll CONDITION for up to TIMEOUT seconds; return whether it came true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def up(
    state_dir: Path,
    repo_root: Path | None,
    *,
    nodes: int = 3,
    kueue: bool = False,
    rucio_database: str = "auto",
    timeout: float = 300.0,
    log: Callable[[str], None] | None = None,
) -> tuple[StackState, bool]:
    """Start the stack unless it already runs whole.

    A stack that failed, or one of whose processes died, is stopped and replaced.

    Parameters
    ----------
    state_dir
        Holds the state file, the supervisor's log and the run directory.
    repo_root
        Checkout whose crds/ are installed; None installs none.
    nodes
        kwok nodes to create.
    kueue
        Also run Kueue, and the worker sites' control planes (`devkueue`).
    rucio_database
        One of `RUCIO_DATABASES` (ignored when the stack already runs).
    timeout
        Seconds the supervisor may take to bring every component up (after the build).
    log
        Receives build progress.

    Returns
    -------
    tuple of StackState and bool
        The running stack, and whether this call started it (False: it was already up).

    Raises
    ------
    DevStackError
        The supervisor reported a failure, died, or was not ready in time; the message carries
        the failure and the end of the supervisor's log. Nothing is left running.
    """
    with _locked(state_dir):
        state = read_state(state_dir)
        if (
            state is not None
            and state.phase == "ready"
            and state.supervisor_alive()
            and all(process.alive() for process in state.processes)
        ):
            return state, False
        if state is not None:  # failed, or partly crashed: clear it away and start afresh
            _stop(state_dir, state, timeout=60.0)
        binaries = ensure_binaries(log=log)
        run_dir = state_dir / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        supervisor_log = state_dir / _SUPERVISOR_LOG
        with supervisor_log.open("wb") as output:
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "steward.testing.devstack",
                    "serve",
                    str(state_dir),
                    f"--bin-dir={binaries.bin_dir}",
                    f"--nodes={nodes}",
                    *(["--kueue"] if kueue else []),
                    f"--rucio-database={rucio_database}",
                    *([f"--repo-root={repo_root}"] if repo_root else []),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this command and the terminal
            )

        def settled() -> bool:
            current = read_state(state_dir)
            return current is not None and (
                current.phase != "starting" or not current.supervisor_alive()
            )

        ready = _wait(settled, timeout)
        state = read_state(state_dir)
        if ready and state is not None and state.phase == "ready" and state.supervisor_alive():
            return state, True
        if state is not None:
            _stop(state_dir, state, timeout=60.0)
        if state is not None and state.error:
            reason = f"{state.error}\n(details in {supervisor_log} and {run_dir})"
        else:
            reason = f"not ready in time; end of {supervisor_log}:\n{_tail(supervisor_log)}"
        raise DevStackError(f"the dev stack did not start: {reason}")


def _stop(state_dir: Path, state: StackState, *, timeout: float) -> None:
    """Stop the supervisor, then kill whatever recorded process outlived it."""
    if state.supervisor_alive():
        os.kill(state.supervisor, signal.SIGTERM)
        if not _wait(lambda: not state.supervisor_alive(), timeout):
            os.kill(state.supervisor, signal.SIGKILL)
    for process in state.processes:
        if process.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    leftovers = [p for p in state.processes if p.alive()]
    if not _wait(lambda: not any(p.alive() for p in leftovers), 10):
        names = ", ".join(f"{p.name} ({p.pid})" for p in leftovers if p.alive())
        raise DevStackError(f"could not stop {names}; kill them by hand")
    for process in state.processes:
        if process.scratch:
            shutil.rmtree(process.scratch, ignore_errors=True)
    (state_dir / STATE_FILE).unlink(missing_ok=True)


def down(state_dir: Path, *, timeout: float = 60.0) -> StackState | None:
    """Stop the stack; return what was running, or None if nothing was.

    Raises
    ------
    DevStackError
        A recorded process survived SIGKILL.
    """
    with _locked(state_dir):
        state = read_state(state_dir)
        if state is not None:
            _stop(state_dir, state, timeout=timeout)
        return state


def status(state_dir: Path) -> tuple[StackState | None, dict[str, bool]]:
    """Read the recorded stack and tell, per process, whether it is up (alive and healthy)."""
    state = read_state(state_dir)
    if state is None:
        return None, {}
    return state, {process.name: process.healthy() for process in state.processes}


# --- the supervisor ------------------------------------------------------------------------------


def _say(line: str) -> None:
    """Write a line to the supervisor's log (its stdout)."""
    print(line, flush=True)  # noqa: T201 - the supervisor's log


def _stop_component(component: StackComponent) -> None:
    started = time.monotonic()
    component.stop()
    _say(f"stopped {component.name} in {time.monotonic() - started:.1f} s")


def _processes_of(component: StackComponent) -> list[ProcessState]:
    """The component's processes; none if it did not get far enough to have any."""
    try:
        return component.processes()
    except (DevStackError, RucioHarnessError):
        return []


def _serve(state_dir: Path, context: StackContext) -> int:
    """Start the components, record them, and hold them until SIGTERM, SIGINT or SIGHUP."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    state = StackState(
        supervisor=os.getpid(),
        supervisor_start_time=_start_time(os.getpid()) or "",
        bin_dir=str(context.binaries.bin_dir),
    )
    state.write(state_dir)
    with contextlib.ExitStack() as running:
        try:
            for factory in STACK_COMPONENTS:
                if stop.is_set():
                    return 0
                component = factory()
                running.callback(_stop_component, component)
                started = time.monotonic()
                try:
                    component.start(replace(context, env=dict(state.env)))
                finally:  # a half-started component's processes are recorded for `down`
                    state.processes += _processes_of(component)
                _say(f"started {component.name} in {time.monotonic() - started:.1f} s")
                state.components.append(component.name)
                state.env.update(component.env())
                state.summary += component.summary()
                state.notes += component.notes()
                state.write(state_dir)
        except Exception as error:
            state.phase, state.error = "failed", f"{error}"
            state.write(state_dir)
            raise
        state.phase = "ready"
        state.write(state_dir)
        _say("stack ready")
        stop.wait()
    _say("stack stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the supervisor process that ``steward dev up`` starts."""
    parser = argparse.ArgumentParser(prog="python -m steward.testing.devstack")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("state_dir", type=Path)
    parser.add_argument("--bin-dir", type=Path, required=True)
    parser.add_argument("--repo-root", type=Path)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--kueue", action="store_true")
    parser.add_argument("--rucio-database", choices=RUCIO_DATABASES, default="auto")
    args = parser.parse_args(argv)
    context = StackContext(
        run_dir=args.state_dir / "run",
        binaries=Binaries(args.bin_dir),
        repo_root=args.repo_root,
        nodes=args.nodes,
        kueue=args.kueue,
        rucio_database=args.rucio_database,
    )
    return _serve(args.state_dir, context)


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: components that import
    # steward.testing.devstack (RucioComponent does) then share one set of classes.
    sys.exit(importlib.import_module("steward.testing.devstack").main())
