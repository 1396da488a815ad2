"""One listing of the rules Rucio changed lately, shared by the reconciles that wait for it.

A new ReplicationRule creates its rules, then reads them back for its status (their states
decide Ready). Read one resource at a time, that is a listing by owner tag per resource: when
a thousand resources arrive at once, a thousand listings, each a scan of Rucio's rules
table (it has no index on comments, `RucioStorage.list_rules`). Here the reconciles that need
such a read at about the same time share one listing of the rules changed since the
earliest of them began (``updated_after``), group-commit style: while one listing runs, the
next requests gather and the first of them lists for all of them when it ends.

An answer is only given when it holds every rule id the caller knows it has (the ids its
creations returned); otherwise (a Rucio clock behind Steward's by more than the margin, a
listing that failed or waited too long) the caller gets None and lists by its tag as before,
so nothing is decided on a partial read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

from steward.exceptions import RucioError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from steward.storage.rucio import RucioStorage, Rule

MARGIN: Final = timedelta(seconds=2)
"""How far a listing reaches behind the earliest request: clock skew with Rucio (a larger
skew only costs the fallback listing)."""
WAIT: Final = 30.0
"""Seconds a request waits for listings ahead of it before it gives up (and lists alone)."""


@dataclass
class _Round:
    """The requests one listing answers."""

    since: datetime | None = None
    done: bool = False
    rules: list[Rule] | None = None
    """What the listing returned; None when it failed."""


@dataclass
class RecentRules:
    """Reads of just-created rules, coalesced into shared listings (see the module)."""

    rucio: RucioStorage
    margin: timedelta = MARGIN
    wait: float = WAIT
    clock: Callable[[], float] = time.monotonic
    listings: int = 0
    """Listings made (for tests and the benchmark)."""
    waiting: int = 0
    """Requests waiting for a listing now (for tests and the benchmark)."""
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _open: _Round = field(default_factory=_Round)
    _running: bool = False

    def rules(self, ids: Collection[str], since: datetime) -> list[Rule] | None:
        """The rules ``ids``, as a listing started after they were made; None if not all.

        ``since`` is a time (Steward's clock) before the caller asked Rucio to make them.
        """
        wanted = set(ids)
        deadline = self.clock() + self.wait
        with self._cond:
            mine = self._open
            mine.since = since if mine.since is None else min(mine.since, since)
            lead = False
            self.waiting += 1
            try:
                while not mine.done:
                    if not self._running:
                        self._running, self._open, lead = True, _Round(), True
                        break
                    left = deadline - self.clock()
                    if left <= 0:
                        return None
                    self._cond.wait(left)
            finally:
                self.waiting -= 1
        if lead:
            self._list(mine)
        if mine.rules is None:
            return None
        found = [rule for rule in mine.rules if rule.id in wanted]
        return found if len(found) == len(wanted) else None

    def _list(self, round_: _Round) -> None:
        """List for every request of ``round_``; wake them."""
        assert round_.since is not None  # noqa: S101 - set by the first request of a round
        try:
            listed: list[Rule] | None = self.rucio.list_rules(
                updated_after=round_.since - self.margin
            )
        except RucioError:
            listed = None  # each request then lists alone, and reports its own error
        with self._cond:
            self.listings += 1
            round_.rules, round_.done, self._running = listed, True, False
            self._cond.notify_all()
