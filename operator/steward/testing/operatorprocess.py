"""One ``steward operator`` process, run as it is deployed: started, probed, killed, restarted.

The end-to-end tests, ``bench/reconcile.py`` and ``steward dev up`` all run the operator as a
separate process talking to the API server with a kubeconfig and to Rucio over HTTP, so each of
them measures or proves the real thing. It can be SIGKILLed mid-reconcile and started again,
which is how crash safety is tested. Built on `ChildProcess`: its own process group, and it dies
with the process that started it.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from pathlib import Path

from steward.testing.childprocess import ChildProcess, free_port, log_tail, wait_until
from steward.testing.controlplane import is_healthy
from steward.testing.devoperator import operator_command

__all__ = ["OperatorProcess"]


class OperatorProcess:
    """``steward operator`` with a liveness endpoint on a free loopback port."""

    def __init__(
        self,
        env: Mapping[str, str],
        log: Path,
        *,
        cwd: Path | None = None,
        standalone: bool = True,
    ) -> None:
        self.env = dict(env)
        self.standalone = standalone
        """False: take part in leader election, as deployed (the peering object must exist)."""
        self.log = log
        self.cwd = cwd
        self.liveness = ""
        """URL of the liveness endpoint of the current run (a new port at each start)."""
        self.starts = 0
        self._process: ChildProcess | None = None

    @property
    def pid(self) -> int:
        """The running operator's process id."""
        if self._process is None:
            msg = "the operator is not running"
            raise RuntimeError(msg)
        return self._process.pid

    def start(self, timeout: float = 90.0) -> None:
        """Start it and wait until its liveness endpoint answers.

        Raises
        ------
        ChildProcessDiedError
            It exited while starting (the message carries the end of its log).
        TimeoutError
            It did not answer within ``timeout`` seconds (the message carries the log's end).
        """
        self.liveness = f"http://127.0.0.1:{free_port()}/healthz"
        self._process = ChildProcess.start(
            operator_command(self.liveness, standalone=self.standalone),
            log=self.log,
            env=self.env,
            cwd=self.cwd,
        )
        self.starts += 1
        try:
            wait_until(
                self.healthy,
                timeout=timeout,
                what=f"the Steward operator ({self.liveness})",
                alive=self.check_alive,
            )
        except TimeoutError as error:
            msg = f"{error}; end of {self.log}:\n{log_tail(self.log)}"
            raise TimeoutError(msg) from error

    def check_alive(self) -> None:
        """Raise `ChildProcessDiedError` (with the end of its log) if it has exited."""
        if self._process is not None:
            self._process.check_alive()

    def healthy(self) -> bool:
        """Whether the liveness endpoint answers 200."""
        return bool(self.liveness) and is_healthy(self.liveness, None)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the whole process group and wait for it (SIGKILL: no cleanup at all)."""
        if self._process is not None:
            self._process.kill(sig)
            self._process = None

    def stop(self, timeout: float = 20.0) -> None:
        """Stop gracefully (SIGTERM), SIGKILL after ``timeout``."""
        if self._process is not None:
            self._process.stop(timeout)
            self._process = None

    def tail(self, lines: int = 40) -> str:
        """The end of its log."""
        return log_tail(self.log, lines)
