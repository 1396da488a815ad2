"""What arrived in a scope since a time: one listing shared by every policy of the scope.

Every metadata-selected ReplicationRule asks Rucio, at each refresh, for the DIDs of its
scope created (or whose JSON metadata was written) since its high-water mark, one bounded
listing per metadata plugin. Ten policies of the raw scope asked ten times for what is, on
a quiet tick, the same empty answer; and Rucio's tables have no index on those times, so
each bounded listing reads the scope (docs/replication.md, "Rucio database indexes for
incremental selection"). `ArrivalFeed` asks once per scope, DID type and plugin, with only
the time bound, and every policy checks just the arrived names against its own keys by
name (`RucioStorage.list_new_dids` with ``arrived``): a quiet tick costs one or two
listings per scope, not two per policy.

The high-water mark rules (`ReplicationService._selection`) hold because an answer carries
the time taken before its listing was sent (``taken``): a policy that uses it stores no
later mark than that, so a DID Rucio stamps after the listing is listed again next time,
and a listing is given only to a policy whose bound it covers (its own bound at or before
the policy's). The feed is memory only: after a restart the first asks list again, from
the marks the policies kept in their status.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from steward.storage.rucio import RucioStorage
from steward.storage.rucio.dids import DIDKind

__all__ = ["ArrivalFeed", "Arrivals"]


@dataclass(frozen=True, slots=True)
class Arrivals:
    """What arrived in a scope, per metadata plugin, as of ``taken``."""

    names: dict[str, frozenset[str]]
    """Per plugin (`steward.storage.rucio.dids.PLUGINS`), the names listed."""
    taken: datetime
    """When the earliest of the listings was sent: a DID created later may be missing, so
    this is the latest mark a policy using the answer may store."""


@dataclass(slots=True)
class _Listing:
    bound: datetime
    """The time bound the listing was sent with: it covers asks at or after it."""
    taken: datetime
    started: float
    """``clock`` when it was sent, for its age."""
    names: frozenset[str] | None
    """None: this Rucio has no such plugin (the JSON one on SQLite)."""


@dataclass(slots=True)
class _Key:
    listing: _Listing | None = None
    bounds: dict[str, tuple[datetime, float]] = field(default_factory=dict)
    """Per policy, the bound its next ask will have and when that was said (``clock``): the
    next listing starts at the earliest of those said lately, so one listing per interval
    covers every policy of the scope, whose marks differ (a quiet policy keeps its mark for
    ten intervals), and no earlier (a bound already passed would list old arrivals again)."""
    busy: bool = False


@dataclass
class ArrivalFeed:
    """Shared listings of what arrived per scope, DID type and plugin; see the module.

    A listing serves asks for ``max_age`` seconds (half a refresh interval in the operator:
    a new DID waits at most that much longer than with a listing per policy). A new listing
    starts at the earliest bound the policies of the key said they will ask next (`expect`,
    after each pass; forgotten after three ``max_age``, a policy gone or behind) or asked,
    so an ask whose bound is earlier than the listing's is rare and lists again. While one
    thread lists a key, others are not queued behind it (a listing that hangs would hold
    every handler thread): they get None and list on their own, as before the feed.
    """

    rucio: RucioStorage
    max_age: float
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _keys: dict[tuple[str, DIDKind, str], _Key] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def since(
        self,
        scope: str,
        did_type: DIDKind,
        plugins: Iterable[str],
        since: datetime,
        *,
        policy: str = "",
    ) -> Arrivals | None:
        """What arrived in ``scope`` at or after ``since`` for each of ``plugins``.

        None when a listing cannot be shared now (another thread is making it, or Rucio has
        no such plugin): the caller lists on its own. ``policy`` names the asker (its uid).
        """
        names: dict[str, frozenset[str]] = {}
        taken: datetime | None = None
        for plugin in sorted(set(plugins)):
            listing = self._listing((scope, did_type, plugin), since, policy)
            if listing is None or listing.names is None:
                return None
            names[plugin] = listing.names
            taken = listing.taken if taken is None else min(taken, listing.taken)
        if taken is None:
            return None
        return Arrivals(names, taken)

    def expect(
        self, scope: str, did_type: DIDKind, plugins: Iterable[str], since: datetime, policy: str
    ) -> None:
        """Say that ``policy``'s next ask of ``scope`` will be from ``since`` (its new mark)."""
        with self._lock:
            for plugin in set(plugins):
                state = self._keys.setdefault((scope, did_type, plugin), _Key())
                state.bounds[policy] = (since, self.clock())

    def _listing(
        self, key: tuple[str, DIDKind, str], since: datetime, policy: str
    ) -> _Listing | None:
        with self._lock:
            state = self._keys.setdefault(key, _Key())
            now = self.clock()
            state.bounds[policy] = (since, now)
            current = state.listing
            if (
                current is not None
                and now - current.started <= self.max_age
                and current.bound <= since
            ):
                return current
            if state.busy:
                return None
            for gone in [
                p for p, (_, said) in state.bounds.items() if now - said > 3 * self.max_age
            ]:
                del state.bounds[gone]
            bound = min(since, *(said for said, _ in state.bounds.values()))
            state.busy = True
        scope, did_type, plugin = key
        try:
            taken, started = self.wall(), self.clock()
            listed = self.rucio.list_arrived(scope, plugin, since=bound, did_type=did_type)
        finally:
            with self._lock:
                state.busy = False
        listing = _Listing(bound, taken, started, None if listed is None else frozenset(listed))
        with self._lock:
            state.listing = listing  # asks made while it listed stay for the next one's bound
        return listing
