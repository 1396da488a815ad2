"""Give the process's free heap back to the operating system, now and then (glibc only).

A burst of new resources allocates far more than the operator keeps: watch events, patch
answers, Rucio's listings, each handler thread's working set. Python frees those objects,
but glibc's allocator keeps the freed memory for reuse instead of returning it, so the
operator's RSS stays at the burst's peak (docs/replication.md, "Where the operator's memory
goes": 17 of 73 MiB above the start was such free memory at 300 resources; most of what
a resource costs is live objects, which this cannot return). ``malloc_trim(0)`` returns every free
page of every arena. It is glibc's; elsewhere (musl, macOS) there is nothing to call and
`trim` says so by returning False.

`HeapTrimmer` calls it from a daemon thread every ``interval`` seconds
(``STEWARD_HEAP_TRIM_INTERVAL``): in a thread, not on the event loop, because the call
walks every arena's free lists while holding each arena's lock; ctypes releases the GIL
during it, so Python code in other threads keeps running.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable
from functools import cache

from steward.observability import get_logger

__all__ = ["HeapTrimmer", "trim"]

_LOG = get_logger(__name__)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """Return glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        function = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def trim() -> bool:
    """Return the heap's free memory to the operating system; False where that is not glibc.

    True means glibc was asked (it returned memory, or had none to return): the result of
    ``malloc_trim`` itself says only whether any page was released, which is not an error
    either way.
    """
    function = _malloc_trim()
    if function is None:
        return False
    function(0)
    return True


class HeapTrimmer:
    """A daemon thread that calls `trim` every ``interval`` seconds until `stop`.

    Parameters
    ----------
    interval
        Seconds between calls. `start` makes the first call itself, which also tells whether
        the platform has ``malloc_trim``.
    trimmer
        What to call (`trim`; tests pass their own to count calls).
    """

    def __init__(self, interval: float, trimmer: Callable[[], bool] = trim) -> None:
        self._interval = interval
        self._trimmer = trimmer
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.calls = 0
        """Calls made so far."""

    def start(self) -> None:
        """Start the thread (once); a platform without ``malloc_trim`` starts none."""
        if self._thread is not None:
            return
        if not self._trimmer():
            _LOG.info("heap trimming off: the C library has no malloc_trim (not glibc)")
            return
        self.calls += 1
        self._thread = threading.Thread(target=self._run, name="steward-heap-trim", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._trimmer()
            self.calls += 1

    def stop(self) -> None:
        """Stop the thread and wait for it (a call in progress finishes first)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
