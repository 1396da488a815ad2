"""Child processes that never outlive the tests or the stack that started them.

The Rucio and PostgreSQL harnesses start servers that must not be left running when a test
fails, pytest is interrupted, or the parent is killed outright. Three layers make sure of it:

- each child runs in its own process group, so stopping it stops its workers too
  (gunicorn's workers, PostgreSQL's backends);
- ``PR_SET_PDEATHSIG`` makes the kernel signal the child when the thread that started it dies,
  which covers SIGKILL of the parent, where no Python code runs;
- an ``atexit`` hook stops whatever is still registered at a normal interpreter exit.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

__all__ = [
    "ChildProcess",
    "ChildProcessDiedError",
    "free_port",
    "log_tail",
    "poll",
    "wait_until",
]

_PR_SET_PDEATHSIG: Final = 1
_POLL_SECONDS: Final = 0.05
_LIVE: set[ChildProcess] = set()
_LIVE_LOCK = threading.Lock()
_T = TypeVar("_T")


class ChildProcessDiedError(RuntimeError):
    """A child exited while it was expected to run; the message ends with its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last lines of a log file, indented, for error messages."""
    if not path.is_file():
        return "    (no log)"
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail)


def poll(
    probe: Callable[[], _T],
    *,
    timeout: float,
    what: str,
    between: Callable[[], object] | None = None,
    interval: float = _POLL_SECONDS,
) -> _T:
    """Call ``probe`` until it returns something truthy, and return that.

    The one polling loop of the harnesses, the tests and the benchmarks: they wait on a
    condition with a deadline, never for a fixed time.

    Parameters
    ----------
    probe
        Returns a falsy value while the wait goes on.
    timeout
        Deadline in seconds.
    what
        Named in the timeout message.
    between
        Called between polls: raises (e.g. `ChildProcessDiedError`) to stop waiting early, or
        moves things along (one pass of Rucio's daemons).
    interval
        Seconds between polls.

    Raises
    ------
    TimeoutError
        If the deadline passes; the message carries the last value.
    """
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        if between is not None:
            between()
        if time.monotonic() > deadline:
            msg = f"{what} not reached within {timeout:.0f} s (last: {result!r})"
            raise TimeoutError(msg)
        time.sleep(interval)
    return result


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    alive: Callable[[], None] | None = None,
) -> float:
    """`poll` a condition and return the seconds it took (harness start-up timings)."""
    start = time.monotonic()
    poll(condition, timeout=timeout, what=what, between=alive)
    return time.monotonic() - start


def _die_with_parent(parent: int, sig: signal.Signals) -> Callable[[], None]:
    """Return a ``preexec_fn`` asking the kernel to send ``sig`` when the parent dies.

    It runs after Popen changed user and group: a credential change clears the setting.
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


@dataclass(eq=False)
class ChildProcess:
    """A started child in its own process group; see :meth:`start`."""

    popen: subprocess.Popen[bytes]
    """The process (leader of its group)."""

    log: Path
    """File receiving its stdout and stderr."""

    stop_signal: signal.Signals = signal.SIGTERM
    """Signal asking the group to stop gracefully."""

    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(
        cls,
        command: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: int | None = None,
        group: int | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        death_signal: signal.Signals | None = signal.SIGKILL,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
    ) -> ChildProcess:
        """Start ``command`` in a new session.

        Parameters
        ----------
        command
            Program and arguments (no shell).
        log
            Receives stderr, and stdout unless ``stdout`` is given.
        env
            Full environment of the child (inherited when None).
        cwd
            Working directory.
        user, group
            Run as this uid and gid (when started as root).
        stop_signal
            Graceful stop signal (SIGTERM; PostgreSQL prefers SIGQUIT).
        death_signal
            Sent by the kernel when the parent dies (``PR_SET_PDEATHSIG``); a graceful signal
            lets a server stop its own workers. None lets the child outlive the parent; note
            that the kernel ties the setting to the *thread* that calls this.
        stdin, stdout
            ``subprocess.PIPE`` to talk to the child; stdin defaults to /dev/null.
        """
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as output:
            popen = subprocess.Popen(
                list(command),
                stdin=stdin,
                stdout=output if stdout is None else stdout,
                stderr=output,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                user=user,
                group=group,
                extra_groups=[] if user is not None else None,
                start_new_session=True,
                preexec_fn=(  # noqa: PLW1509 - only prctl, getppid and kill run there
                    _die_with_parent(os.getpid(), death_signal) if death_signal else None
                ),
            )
        child = cls(popen, log, stop_signal)
        with _LIVE_LOCK:
            _LIVE.add(child)
        return child

    @property
    def pid(self) -> int:
        """Process id (also the process group id)."""
        return self.popen.pid

    def running(self) -> bool:
        """Return whether the process has not exited."""
        return self.popen.poll() is None

    def check_alive(self) -> None:
        """Raise `ChildProcessDiedError` with the end of its log if it has exited."""
        code = self.popen.poll()
        if code is not None:
            msg = (
                f"{self.popen.args!r} exited with {code}; end of {self.log}:\n{log_tail(self.log)}"
            )
            raise ChildProcessDiedError(msg)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the whole process group: the stop signal, then SIGKILL after ``timeout``."""
        if not self._release():
            return
        self._signal_group(self.stop_signal)
        self._signal_group(signal.SIGCONT)  # a paused group acts on the signal only once resumed
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.popen.wait()
        # Workers that ignored the signal to their leader (or re-parented) go too.
        self._signal_group(signal.SIGKILL)
        self._close_streams()

    def pause(self) -> None:
        """SIGSTOP the whole group: it keeps its sockets open and answers nothing (a hang)."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the whole group after `pause`."""
        self._signal_group(signal.SIGCONT)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group at once and wait for the leader to exit.

        Unlike `stop`, nothing graceful comes first: crash tests SIGKILL a process mid-work.
        """
        if not self._release():
            return
        self._signal_group(sig)
        self.popen.wait()
        self._close_streams()

    def _release(self) -> bool:
        """Take the child off the exit hook's list; False if it was stopped already."""
        if self._stopped:
            return False
        self._stopped = True
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return True

    def _close_streams(self) -> None:
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()

    def _signal_group(self, sig: signal.Signals) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


@atexit.register
def _stop_all() -> None:
    """Stop every child still registered when the interpreter exits normally."""
    with _LIVE_LOCK:
        children = list(_LIVE)
    for child in children:
        child.stop(timeout=5.0)
