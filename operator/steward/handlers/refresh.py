"""One refresh loop per kind, instead of a kopf timer per object.

A kopf timer is an asyncio task per object, and kopf keeps the live body of every object of
a kind that has any timer: at 1,500 ReplicationRules the timers were half of what a resource
cost in memory (62 KiB a resource with them, 33 KiB without: docs/replication.md, "At
scale"), and at 10,000 one process's timers no longer kept a 10 s refresh. This loop is one
thread: each interval it lists the kind a page at a time and hands each due object to a small
pool of threads, spreading the passes over the interval as the timers' jitter did. A second
thread acts on edges: every few seconds it passes the objects whose last pass announced an
edge that has come (a window opening, an embargo ending, a backlog's next share), reading
just those objects.

It does itself what kopf does for a timer:

- acts only while this process leads (`leads`, from kopf's peering object), so a standby
  replica's loop stays idle;
- merges each pass's status and metadata patch and posts its Events (`RefreshObjects`), with
  the pass's Events routed there rather than to kopf's queue (`common.EVENT_SINK`);
- backs an object off after a transient error: kopf's ``TemporaryError`` names the delay.

Unlike kopf's timers it yields to the kind's change handlers: while they keep passing new or
changed objects (a burst of creates, or every object's resume at start), the next cycle
waits for a pause, for a bounded time (`cycle_wait`).

It refreshes only objects a change handler of this process has tracked (`Tracked.track`):
kopf calls those (resume at start, create for a new object) only once its indexes are full,
so no refresh pass ever judges a deletion against indexes still being filled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from steward.exceptions import PermanentError, TransientError
from steward.handlers.common import EVENT_SINK
from steward.observability import REFRESH_CYCLE_SECONDS, get_logger
from steward.storage.kubernetes import ResourceKey
from steward.storage.refreshing import RefreshObjects

__all__ = [
    "QUIET",
    "Cycle",
    "Pass",
    "RefreshLoop",
    "Tracked",
    "cycle_wait",
    "leads",
    "peering_leadership",
]

_LOG = get_logger(__name__)

Pass = Callable[[dict[str, Any], kopf.Patch, kopf.Memo], None]
"""One refresh pass of one object: its body, the patch to fill, its memo."""
QUIET = 1.0
"""Seconds without a new change pass after which change handlers count as idle."""


class Tracked:
    """The memo of every object of a kind that this process's change handlers have handled.

    kopf's per-object memo is out of the loop's reach, so the kind's handlers and its loop
    share these instead: the status this process last wrote, the next edge, the last pass.
    """

    def __init__(
        self, base: Mapping[str, Any], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._base = dict(base)
        self._memos: dict[str, kopf.Memo] = {}
        self._since: dict[str, float] = {}
        self._guard = threading.Lock()
        self._clock = clock
        self.changed_at: float | None = None
        """When a change handler last began a pass (called `track`), on ``clock``."""

    def track(self, uid: str, key: ResourceKey | None = None) -> kopf.Memo:
        """The object's memo, made (and the object refreshed from now on) if it had none.

        Change handlers call this as their pass begins, so it also notes when
        (``changed_at``): the loop yields to a burst of them. ``key`` names the object for
        the edge passes, which read it alone.
        """
        now = self.changed_at = self._clock()
        with self._guard:
            memo = self._memos.get(uid)
            if memo is None:
                memo = self._memos[uid] = kopf.Memo(self._base)
                self._since[uid] = now
            if key is not None:
                memo["key"] = key
            return memo

    def items(self) -> list[tuple[str, kopf.Memo]]:
        """Every tracked object's uid and memo, as of now."""
        with self._guard:
            return list(self._memos.items())

    def get(self, uid: str) -> kopf.Memo | None:
        """The object's memo, or None when no change handler of this process handled it."""
        return self._memos.get(uid)

    def forget(self, uid: str) -> None:
        """Stop refreshing the object (it is gone)."""
        with self._guard:
            self._memos.pop(uid, None)
            self._since.pop(uid, None)

    def prune(self, listed: Iterable[str], before: float) -> int:
        """Forget objects tracked before ``before`` that a whole listing did not show.

        An object deleted without its finalizer's handler (the finalizer removed by hand)
        never reaches `forget`. One tracked after the listing began may simply not be in it.
        """
        keep = set(listed)
        with self._guard:
            gone = [u for u, t in self._since.items() if u not in keep and t < before]
            for uid in gone:
                self._memos.pop(uid, None)
                self._since.pop(uid, None)
        return len(gone)

    def __len__(self) -> int:
        return len(self._memos)


def leads(peering: Mapping[str, Any] | None, priority: int, now: datetime) -> bool:
    """Whether kopf's peering lets the process of ``priority`` act, as kopf judges it.

    kopf pauses a process while a live peer has a higher priority, and every process while
    the (mandatory) peering object is missing. A peer is live until ``lastseen + lifetime``.
    """
    if peering is None:
        return False
    for peer in (peering.get("status") or {}).values():
        if not isinstance(peer, Mapping) or int(peer.get("priority", 0)) <= priority:
            continue
        seen = peer.get("lastseen")
        if seen is None:
            return False
        last = datetime.fromisoformat(str(seen))
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        if last + timedelta(seconds=int(peer.get("lifetime", 60))) > now:
            return False
    return True


def peering_leadership(
    objects: RefreshObjects, settings: kopf.OperatorSettings
) -> Callable[[], bool]:
    """Whether this process leads now: always when standalone, else as `leads` reads it."""
    if settings.peering.standalone:
        return lambda: True
    name, priority = settings.peering.name, settings.peering.priority
    return lambda: leads(objects.peering(name), priority, datetime.now(UTC))


def cycle_wait(
    now: float,
    last: float,
    *,
    interval: float,
    yield_limit: float,
    changed_at: float | None,
) -> float:
    """Seconds until the next cycle, the last one having begun at ``last``; 0 to begin now.

    A cycle is due an interval after the last one began. While change passes keep coming
    (one began within `QUIET` seconds), it waits for a pause, until ``yield_limit`` after
    the last one began: in a burst of new resources the change handlers and the loop share
    the cores and the API server, and at 10,000 resources the loop refreshing those already
    Ready made the burst half as long again (docs/replication.md, "At scale"). Edges do not
    wait. The limit bounds how stale a resource gets however long the burst.
    """
    due = last + interval
    if now < due:
        return due - now
    limit = last + max(interval, yield_limit)
    if changed_at is not None and now - changed_at < QUIET and now < limit:
        return min(QUIET - (now - changed_at), limit - now)
    return 0.0


@dataclass
class Cycle:
    """What one cycle over a kind did."""

    listed: int = 0
    passed: int = 0
    failed: int = 0
    pruned: int = 0
    led: bool = True
    """False when the process found it did not lead, and stopped listing."""
    complete: bool = True
    """Whether every page was listed (not stopped, led throughout): only then it prunes."""


class RefreshLoop:
    """Refresh every tracked object of one kind once per interval, in a thread of its own."""

    def __init__(
        self,
        *,
        objects: RefreshObjects,
        tracked: Tracked,
        refresh: Pass,
        interval: float,
        edge_interval: float,
        workers: int,
        leading: Callable[[], bool],
        yield_limit: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        page_size: int = 500,
    ) -> None:
        """A loop over ``objects``; see `cycle_wait` for ``yield_limit``.

        ``yield_limit`` is how long after a cycle began the next one may wait for change
        passes to pause; with 0, the default, it never waits past its interval.
        """
        self.objects = objects
        self.page_size = page_size
        self.tracked = tracked
        self._refresh = refresh
        self.interval = interval
        self.edge_interval = edge_interval
        self.yield_limit = yield_limit
        self._leading = leading
        self._clock = clock
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"refresh-{objects.kind}")
        self._slots = threading.BoundedSemaphore(2 * workers)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._inflight: set[str] = set()
        self._inflight_guard = threading.Lock()
        self._expected = 0

    def start(self) -> None:
        """Run cycles, and edge checks, in two daemon threads until `stop`."""
        kind = self.objects.kind
        self._threads = [
            threading.Thread(target=self._run, name=f"refresh-{kind}", daemon=True),
            threading.Thread(target=self._run_edges, name=f"edges-{kind}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the passes under way and stop."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.objects.close()

    @property
    def running(self) -> bool:
        """Whether a thread of the loop still runs."""
        return any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        # The first cycle waits an interval: the change handlers have just passed everything.
        started = self._clock()
        while self._next_cycle(started):
            started = self._clock()
            try:
                self.cycle()
            except (TransientError, PermanentError) as exc:
                _LOG.warning("refresh cycle failed", kind=self.objects.kind, error=str(exc))
            except Exception:  # noqa: BLE001 - the loop must outlive any one cycle's bug
                _LOG.exception("refresh cycle failed", kind=self.objects.kind)

    def _next_cycle(self, last: float) -> bool:
        """Wait until the next cycle is due (`cycle_wait`); False once the loop stops."""
        due = last + self.interval
        while True:
            now = self._clock()
            wait = cycle_wait(
                now,
                last,
                interval=self.interval,
                yield_limit=self.yield_limit,
                changed_at=self.tracked.changed_at,
            )
            if wait <= 0:
                if now - due >= QUIET:
                    _LOG.info(
                        "refresh cycle yielded to change handlers",
                        kind=self.objects.kind,
                        seconds=round(now - due, 1),
                    )
                return not self._stop.is_set()
            if self._stop.wait(wait):
                return False

    def _run_edges(self) -> None:
        while not self._stop.wait(self.edge_interval):
            try:
                self.edges()
            except Exception:  # noqa: BLE001 - the loop must outlive any one check's bug
                _LOG.exception("edge check failed", kind=self.objects.kind)

    def edges(self) -> int:
        """Pass the tracked objects whose announced edge has come; return how many.

        Reads only those objects: a window or an embargo has to be acted on within seconds,
        and few objects have one. An object backing off waits for its retry.
        """
        now = self._clock()
        due = [
            memo
            for uid, memo in self.tracked.items()
            if uid not in self._inflight
            and memo.get("edge_at") is not None
            and memo["edge_at"] <= now
            and (memo.get("retry_at") is None or memo["retry_at"] <= now)
            and memo.get("key") is not None
        ]
        if not due or not self._leading():
            return 0
        passed = 0
        for memo in due:
            try:
                body = self.objects.get(memo["key"])
            except (TransientError, PermanentError) as exc:
                _LOG.warning("edge read failed", kind=self.objects.kind, error=str(exc))
                continue
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                continue
            if self._submit(body, memo) is not None:
                passed += 1
        return passed

    def cycle(self) -> Cycle:
        """List the kind once and pass each due tracked object; wait for those passes."""
        kind = self.objects.kind
        started = self._clock()
        report = Cycle()
        listed: list[str] = []
        futures: list[Future[bool]] = []
        expected = self._expected
        for page in self.objects.pages(self.page_size):
            if self._stop.is_set():
                report.complete = False
                break
            if not self._leading():
                report.led = report.complete = False
                break
            for body in page:
                meta = body.get("metadata") or {}
                uid = str(meta.get("uid"))
                listed.append(uid)
                memo = self.tracked.get(uid)
                if memo is None or meta.get("deletionTimestamp") or not self._due(memo):
                    continue
                self._pace(started, len(listed) - 1, max(expected, len(listed)))
                future = self._submit(body, memo)
                if future is not None:
                    futures.append(future)
        for future in futures:
            if future.result():
                report.passed += 1
            else:
                report.failed += 1
        report.listed = len(listed)
        if report.complete:
            report.pruned = self.tracked.prune(listed, started)
            self._expected = report.listed
        REFRESH_CYCLE_SECONDS.labels(kind).observe(self._clock() - started)
        _LOG.debug("refresh cycle", kind=kind, **vars(report))
        return report

    def _due(self, memo: kopf.Memo) -> bool:
        """Not passed within half an interval (a change handler's pass counts), not backing off."""
        now = self._clock()
        passed: float | None = memo.get("passed_at")
        retry: float | None = memo.get("retry_at")
        recent = passed is not None and now - passed < self.interval / 2
        return not recent and (retry is None or now >= retry)

    def _pace(self, started: float, index: int, total: int) -> None:
        """Wait until the ``index``-th object listed has its share of nine tenths of the interval.

        By its place in the listing, so each object passes at about the same moment of every
        cycle: one interval apart.
        """
        if total <= 1:
            return
        wait = started + 0.9 * self.interval * index / total - self._clock()
        if wait > 0:
            self._stop.wait(wait)

    def _submit(self, body: dict[str, Any], memo: kopf.Memo) -> Future[bool] | None:
        """Hand the object's pass to the pool, unless one is already under way."""
        uid = str((body.get("metadata") or {}).get("uid"))
        with self._inflight_guard:
            if uid in self._inflight:
                return None
            self._inflight.add(uid)
        self._slots.acquire()
        return self._pool.submit(self._pass, uid, body, memo)

    def _pass(self, uid: str, body: dict[str, Any], memo: kopf.Memo) -> bool:
        """One object's pass; its patch merged and its Events posted whatever the outcome."""
        try:
            return self._pass_and_merge(body, memo)
        finally:
            self._slots.release()
            with self._inflight_guard:
                self._inflight.discard(uid)

    def _pass_and_merge(self, body: dict[str, Any], memo: kopf.Memo) -> bool:
        patch = kopf.Patch()
        token = EVENT_SINK.set(self._post)
        ok = False
        try:
            self._refresh(body, patch, memo)
            memo["retry_at"] = None
            ok = True
        except kopf.TemporaryError as exc:
            memo["retry_at"] = self._clock() + (exc.delay or self.interval)
        except Exception:  # noqa: BLE001 - as kopf does for a handler: log, retry later
            _LOG.exception("refresh pass failed", kind=self.objects.kind)
            memo["retry_at"] = self._clock() + self.interval
        finally:
            EVENT_SINK.reset(token)
        if patch:
            try:
                self.objects.merge(ResourceKey.of(body), patch)
            except (TransientError, PermanentError) as exc:
                # What the pass remembered writing never landed: compare with the stored
                # status next time.
                memo.pop("status", None)
                _LOG.warning("refresh patch failed", kind=self.objects.kind, error=str(exc))
                return False
        return ok

    def _post(self, body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            self.objects.event(body, type_, reason, message)
        except (TransientError, PermanentError) as exc:
            _LOG.warning("refresh event not posted", reason=reason, error=str(exc))
