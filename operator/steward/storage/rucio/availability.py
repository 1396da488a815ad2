"""Whether Rucio answers, for the whole process: timeouts, the shared "down" state, call slots.

A Rucio server that accepts connections and answers nothing (its processes stopped, a wedged
proxy) used to go unnoticed: Rucio's client waits 600 s for one response, and a thousand
resources each waited on their own, holding every one of kopf's handler threads. Three parts
of the one call path (`steward.storage.rucio.callpath`) prevent that:

- `CallTimeouts`: each call waits seconds, sized to what it does (a read, a write, a bulk
  listing), not minutes.
- `RucioAvailability`: one process-wide state. The first call Rucio leaves unanswered (refused,
  timed out, 502/503/504) marks Rucio down with that reason; from then on calls fail at once,
  without touching the network, while one caller at a time pings Rucio on a schedule that
  backs off exponentially with jitter. The first answer marks it up again. Transitions, not
  failures, reach the listeners (a log line and a metric), so an outage is reported once.
- `CallSlots`: at most ``limit`` Rucio calls in flight, fewer than kopf's handler threads, so
  hung calls never hold them all; a caller waiting for a slot gives up when Rucio is marked
  down or its own timeout passes.

Everything takes an injectable clock, so the schedule is tested without waiting.
"""

from __future__ import annotations

import enum
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from steward.exceptions import RucioTransientError

__all__ = [
    "Admission",
    "CallSlots",
    "CallTimeouts",
    "RucioAvailability",
    "RucioDownError",
]

_READS: Final = ("get_", "whoami", "ping")
_LISTINGS: Final = ("list_",)


@dataclass(frozen=True, slots=True)
class CallTimeouts:
    """Seconds one Rucio call may take, by what it does (requests' connect and read timeouts).

    The read timeout bounds each wait for data, not the whole transfer: a long listing that
    keeps streaming rows is not cut off, a server that stops answering is.
    """

    connect: float = 5.0
    """Establishing the TCP connection (a refused one fails at once)."""
    read: float = 10.0
    """Single reads: ``get_*``, ``whoami``, ``ping``."""
    write: float = 30.0
    """Writes: adding rules for a batch of DIDs, attaching files, updating RSEs."""
    listing: float = 60.0
    """Bulk listings (``list_*``): every rule of the account, a metadata query's matches."""

    def kind(self, operation: str) -> str:
        """``read``, ``write`` or ``listing``, from the name of Rucio's client method."""
        if operation.startswith(_LISTINGS):
            return "listing"
        if operation.startswith(_READS):
            return "read"
        return "write"

    def of(self, operation: str) -> tuple[float, float]:
        """(connect, read) timeouts for the client method ``operation``."""
        return self.connect, float(getattr(self, self.kind(operation)))


class RucioDownError(RucioTransientError):
    """Rucio was found not answering, and is not asked again until its next probe."""


class Admission(enum.Enum):
    """What `RucioAvailability.admit` allows one call to do."""

    CALL = "call"
    """Rucio is up: make the call."""
    PROBE = "probe"
    """Rucio is down and a probe is due: this caller pings it first."""
    REFUSE = "refuse"
    """Rucio is down and another caller probes, or none is due: fail without calling."""


@dataclass(frozen=True, slots=True)
class _Down:
    since: datetime
    reason: str
    failures: int
    next_probe: float
    probing: bool


class RucioAvailability:
    """One process-wide answer to "does Rucio answer?", shared by every resource.

    Parameters
    ----------
    initial_probe
        Seconds from the first failure to the first probe.
    max_probe
        Longest wait between probes; with the jitter it bounds how long after Rucio answers
        again the process notices (and so convergence after an outage).
    clock, wall, jitter
        Monotonic clock, wall clock (the ``since`` of messages) and a source of uniform
        random numbers in [0, 1), injectable for tests.
    """

    def __init__(
        self,
        *,
        initial_probe: float = 1.0,
        max_probe: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial_probe
        self._max = max_probe
        self._clock = clock
        self._wall = wall
        self._jitter = jitter
        self._lock = threading.Lock()
        self._down: _Down | None = None
        self.listeners: list[Callable[[bool, str], None]] = []
        """Called with (up, reason) on each transition, outside the lock."""

    @property
    def up(self) -> bool:
        """Whether the last word from Rucio was an answer."""
        return self._down is None

    def describe(self) -> str:
        """``up``, or ``down since TIME: REASON`` (the liveness probe shows it)."""
        down = self._down
        return "up" if down is None else _down_message(down)

    def admit(self) -> Admission:
        """Whether one call may go to Rucio now (see `Admission`)."""
        with self._lock:
            down = self._down
            if down is None:
                return Admission.CALL
            if down.probing or self._clock() < down.next_probe:
                return Admission.REFUSE
            self._down = _replace(down, probing=True)
            return Admission.PROBE

    def wait(self) -> float:
        """Seconds until the next probe may start (0 when up or due)."""
        down = self._down
        return 0.0 if down is None else max(0.0, down.next_probe - self._clock())

    def refused(self, operation: str, *, retry_after: float) -> RucioDownError:
        """The error of a call refused while Rucio is down (stable for the whole outage)."""
        down = self._down
        reason = _down_message(down) if down is not None else "Rucio is down"
        message = f"Rucio {operation} not attempted: {reason}"
        return RucioDownError(message, retry_after=retry_after)

    def answered(self) -> None:
        """Rucio answered (even with an error): it is up; tell the listeners if it was down."""
        with self._lock:
            was = self._down
            self._down = None
        if was is not None:
            self._notify(up=True, reason=f"Rucio answers again (down since {_iso(was.since)})")

    @property
    def probing(self) -> bool:
        """Whether a probe is under way."""
        down = self._down
        return down is not None and down.probing

    def failed(self, reason: str, *, probe: bool = False) -> None:
        """A call or a probe went unanswered: mark Rucio down, schedule the next probe.

        Once down, only a failed ``probe`` moves the schedule: calls that were in flight when
        Rucio stopped answering fail one after another and must not push the probe back.
        """
        with self._lock:
            was = self._down
            if was is not None and not probe:
                return
            failures = 1 if was is None else was.failures + 1
            wait = min(self._max, self._initial * 2 ** (failures - 1))
            wait *= 0.8 + 0.4 * self._jitter()
            self._down = _Down(
                since=self._wall() if was is None else was.since,
                reason=reason if was is None else was.reason,
                failures=failures,
                next_probe=self._clock() + wait,
                probing=False,
            )
            down = self._down
        if was is None:
            self._notify(up=False, reason=_down_message(down))

    def _notify(self, *, up: bool, reason: str) -> None:
        for listener in list(self.listeners):
            listener(up, reason)


def _replace(down: _Down, *, probing: bool) -> _Down:
    return _Down(down.since, down.reason, down.failures, down.next_probe, probing)


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _down_message(down: _Down) -> str:
    return f"Rucio does not answer since {_iso(down.since)}: {down.reason}"


class CallSlots:
    """At most ``limit`` Rucio calls in flight at once.

    kopf runs synchronous handlers in a pool of ``Settings.workers`` threads and cannot cancel
    one; with fewer slots than threads, calls that hang leave threads for the rest (handlers
    that fail fast, edges, the audit). A caller waits for a slot until its own timeout, and
    gives up as soon as ``abandon()`` says so (Rucio marked down by another caller).
    """

    _POLL: Final = 0.2

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            msg = f"limit must be at least 1, not {limit}"
            raise ValueError(msg)
        self.limit = limit
        self._free = threading.Semaphore(limit)
        self._clock = clock

    @contextmanager
    def hold(self, timeout: float, abandon: Callable[[], bool]) -> Iterator[None]:
        """Hold one slot for the block.

        Raises
        ------
        TimeoutError
            No slot came free within ``timeout`` seconds, or ``abandon()`` turned true.
        """
        deadline = self._clock() + timeout
        while not self._free.acquire(timeout=self._POLL):
            if abandon() or self._clock() >= deadline:
                msg = f"all {self.limit} Rucio call slots stayed busy"
                raise TimeoutError(msg)
        if abandon():  # the slot came free because its call failed: Rucio is down
            self._free.release()
            msg = "Rucio was marked down while this call waited for a slot"
            raise TimeoutError(msg)
        try:
            yield
        finally:
            self._free.release()
