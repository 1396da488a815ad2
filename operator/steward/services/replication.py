"""ReplicationRule reconciliation: one Rucio rule per selected DID, owned, converged, reported.

Ownership lives in Rucio itself: every rule Steward creates carries the resource's owner tag
(`steward.services.ownership.owner_tag`: a hash of the cluster's identity and the resource's
UID) as its comment, and one bulk listing by comment returns every rule of a resource. Nothing
depends on having written status before a crash, so a reconcile killed at any line is repeated
safely: a rule created just before the kill is listed (or, through ``DuplicateRule``, found and
recognised by its exact tag) on the next run, never created twice.

Changes of copies or destination go through Rucio's move/reduce or a child rule
(`RucioStorage.change_rule`), so there is never a moment with fewer copies than declared. Once
the new placement is OK, Rucio removes the replicas at RSEs that leave the rule: a change that
can do so (fewer copies, or a destination whose RSEs lose some of the old one's,
`leaving_rses`) is judged by the deletion gate first, like a release (`ReplicationService.
_change`), and a change the gate keeps leaves the rule as it is.

No silent data loss (design.md guarantee 2) rests on these rules, each kept in one place:

- **One way out.** Every rule Steward gives up, by deselection, by ``finalize`` or under either
  deletion policy, goes through `ReplicationService.release`; every change of copies or
  destination that can remove replicas is judged first (`RucioView.judge_change`). Both build
  their candidates and ask the facility's deletion gate (legal holds, locks, pins, freeze, the
  last custodial replica) through `RucioView._judge`, and nowhere else.
- **An error postpones, never decides.** The default deletion policy is worked out when the
  resource is first reconciled and kept in its status; while Rucio cannot say whether the
  destination is custodial the policy is Orphan, and once decided no later Rucio error changes
  it. A destination that may put a copy on any custodial RSE is Orphan.
- **A brake on deselection.** A DID missing from a metadata selection is released only when it
  is missing on two consecutive passes with the same set missing; a pass that would release
  more than `ReleaseLimit` allows holds (Degraded ``ReleaseHeld``, one Warning Event) until the
  annotation `ANNOTATION_APPROVE_RELEASE` names the number of rules held.
- **Only what Steward made is Steward's.** An existing rule is taken over only when its
  comment is this resource's exact tag (a crash between create and record), or the marks this
  resource itself left when releasing it. Other rules (hand-made, another resource's, a tag
  someone edited) are reported, never changed or released.
- **Intent first.** Batches of rule creations, releases, transfer-gate changes and publications
  write an ``intent`` row to the audit trail before Rucio is asked, then one row per item as it
  completes, and a ``failure`` row if Rucio refuses: a crash or a refusal half-way leaves a
  trail that says what was attempted and what was done.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from steward.constants import ANNOTATION_APPROVE_RELEASE
from steward.exceptions import PermanentError, RucioError, RucioNotFoundError, RucioPermanentError
from steward.models.common import format_duration, name_wildcard_regex
from steward.models.replication import (
    WEEKDAYS,
    DeletionPolicy,
    ManagementPolicy,
    ReplicationRule,
    ReplicationRuleSpec,
    TransferWindow,
)
from steward.models.rse_expression import canonical
from steward.observability import EXTERNAL_ACTIONS, RULE_READ_BACKS
from steward.services import selection
from steward.services.arrivals import ArrivalFeed
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.catchup import (
    CATCHING_UP,
    CatchUpPlan,
    backlogged,
    plan_catch_up,
    wanted_priority,
)
from steward.services.conditions import DEGRADED, PROGRESSING, READY, condition, set_condition
from steward.services.deletion import (
    DeletionGate,
    DeletionPlan,
    DeletionRequest,
    Mode,
    Operation,
    plan_deletion,
)
from steward.services.ownership import TAG_LENGTH, TAG_PREFIX, owner_tag, subscription_name
from steward.services.protections import (
    ClusterFacts,
    candidate_of,
    gather_placement,
    protections_of,
    with_sizes,
)
from steward.services.recent_rules import RecentRules
from steward.services.site import Outcome
from steward.storage.audit import AuditFilter
from steward.storage.rucio import (
    SUBSCRIPTION_INACTIVE,
    RucioStorage,
    Rule,
    RuleSpec,
    RuleState,
    SubscriptionSpec,
    refused_as_unsupported,
)
from steward.storage.rucio.dids import arrival_plugins

__all__ = [
    "LEGACY_TAG_PREFIX",
    "ORPHANED_PREFIX",
    "RELEASED_PREFIX",
    "STATUS_SAMPLE",
    "SUBSCRIPTION_KEYS",
    "ChangeVerdict",
    "ExpressionCache",
    "Kept",
    "PlacementLedger",
    "ReleaseLimit",
    "ReleaseRefusedError",
    "ReplicationService",
    "RucioView",
    "RuleIndex",
    "RuleSnapshot",
    "leaving_rses",
    "subscribable",
    "subscription_filter",
    "transfer_gate",
]

STATUS_SAMPLE: Final = 100
"""Most rule ids (and unowned rules) one status lists; counts say how many there are.

A resource selecting a night of raw data owns tens of thousands of rules: every id in status
would outgrow what one API write may carry (about 40,000 ids), and nothing needs them there.
Ownership lives in Rucio (the owner tag), placement history in the audit trail
(`PlacementLedger`); status keeps counts and this sorted, hence stable, sample.
"""

_LIFETIME_TOLERANCE = timedelta(minutes=5)
"""Expiry differences smaller than this are not drift (clock skew, time to apply)."""

ORPHANED_PREFIX: Final = "orphaned-by-steward:"
"""Comment prefix of rules released by Orphan: no longer listed as owned, still findable."""

RELEASED_PREFIX: Final = "deleted-by-steward:"
"""Comment prefix of rules released by Delete.

Rucio's delete is soft: it sets ``expires_at`` to at most an hour ahead and judge-cleaner
removes the rule later, so a deleted rule stays listed meanwhile. Steward re-tags the rules it
deleted, right after deleting them, so they leave the resource's listing at once: nothing
needs to guess from an expiry whether a rule was deleted (an earlier version took every rule
expiring within 65 minutes for deleted, rules that merely expire soon by their own lifetime
included, and left them out of Orphan, Delete and ``steward plan``). Deleting first and
re-tagging second is crash-safe: a crash in between leaves a deleted rule with the owner tag,
which the next pass deletes again (a no-op) and re-tags.
"""

LEGACY_TAG_PREFIX: Final = "steward:"
"""Owner tags before `steward.services.ownership` were ``steward:<namespace>/<name>``."""


SUBSCRIPTION_KEYS: Final = frozenset(
    {
        "campaign",
        "datatype",
        "events",
        "guid",
        "lumiblocknr",
        "panda_id",
        "phys_group",
        "prod_step",
        "project",
        "provenance",
        "run_number",
        "stream_name",
        "task_id",
        "version",
    }
)
"""Metadata keys Rucio's transmogrifier can match: columns of the DID table.

It reads a new DID's metadata with the ``DID_COLUMN`` plugin only, so a subscription filtering
on any other key (a JSON-plugin key such as ``instrument`` or ``release``) never matches; such
a selection is placed by the operator's own periodic selection alone.
"""

_FOREIGN_REASON: Final = "ForeignRule"
_SHARED_REASON: Final = "SharedRule"
_HELD_REASON: Final = "ReleaseHeld"
_PROTECTED_REASON: Final = "ReleaseProtected"
_FROZEN_REASON: Final = "DeletionFrozen"
_CHANGE_KEPT_REASON: Final = "ChangeProtected"
_BEHIND_REASON: Final = "Behind"
"""Ready=False and Progressing: more rules are missing than one pass creates."""


class ReleaseRefusedError(PermanentError):
    """The deletion gate kept rules a deleted resource would release (a protection, a freeze).

    The finalizer stays and the release is tried again later: the resource goes once the
    protection ends, or once its ``deletionPolicy`` says Orphan (which keeps the data).
    """


@dataclass(frozen=True)
class Kept:
    """Rules a release did not remove because the deletion gate kept them, and why."""

    rules: tuple[str, ...] = ()
    why: str = ""


def leaving_rses(
    before: frozenset[str], copies_before: int, after: frozenset[str], copies_after: int
) -> frozenset[str]:
    """RSEs a change of a rule may remove replicas from; empty when it only adds.

    ``before`` and ``after`` are the RSEs of the old and the new expression. Fewer copies let
    Rucio drop a copy at any RSE of the old expression (it chooses which); otherwise a copy
    can go only from an RSE the new expression leaves out. More copies, or a new expression
    covering every RSE of the old one, only add: Rucio keeps the copies it has (it prefers
    RSEs already holding the data) and places the rest.
    """
    if copies_after < copies_before:
        return before
    return before - after


@dataclass(frozen=True)
class ChangeVerdict:
    """The deletion gate's verdict on changing some rules to one expression and copies."""

    rules: tuple[Rule, ...]
    """The rules to change (each DID's rule in charge)."""
    leaving: Mapping[str, frozenset[str]]
    """Rule id -> RSEs the change may remove replicas from (`leaving_rses`); empty: adds only."""
    plan: DeletionPlan | None
    """The gate's plan over the changes that may remove replicas; None when none may."""

    def _going(self) -> set[str]:
        plan = self.plan
        if plan is None or plan.mode is not Mode.ACT:
            return set()
        return {candidate.key for candidate in plan.removals}

    def allowed(self) -> list[Rule]:
        """Rules to change now: those that only add, and those the gate lets through."""
        going = self._going()
        return [r for r in self.rules if not self.leaving[r.id] or r.id in going]

    def kept(self) -> list[tuple[Rule, str, str]]:
        """(rule, what keeps it, why) for each change the gate keeps, by rule id.

        What keeps it is a `Protection` name, or the plan's mode (``Frozen``) when the plan as
        a whole may not act.
        """
        plan = self.plan
        if plan is None:
            return []
        going = self._going()
        saved = {s.candidate.key: s for s in plan.saved}
        kept = []
        for rule in sorted(self.rules, key=lambda r: r.id):
            if not self.leaving[rule.id] or rule.id in going:
                continue
            found = saved.get(rule.id)
            if found is not None:
                kept.append((rule, found.protection.value, found.detail))
            else:
                kept.append((rule, plan.mode.value, plan.reason))
        return kept


@dataclass(frozen=True)
class ReleaseLimit:
    """How much one pass may release before it waits for an acknowledgement.

    A pass releasing more than ``max_rules`` rules, or more than one rule and more than
    ``max_fraction`` of the rules the resource owns, holds. A single rule may always go: a
    resource of one DID would otherwise need an approval for every change of its selection.
    """

    max_rules: int = 100
    """``Settings.release_max_rules``."""
    max_fraction: float = 0.25
    """``Settings.release_max_fraction``."""

    def holds(self, count: int, owned: int) -> bool:
        """Whether releasing ``count`` of ``owned`` rules needs an acknowledgement."""
        return count > self.max_rules or (count > 1 and count > self.max_fraction * owned)


def _next_opening(window: TransferWindow, now: datetime) -> tuple[bool, datetime]:
    """Whether ``window`` is open at ``now``, and when it next opens (or closes if open)."""
    from zoneinfo import ZoneInfo  # noqa: PLC0415 - only windows need time zones

    zone = ZoneInfo(window.timezone)
    local = now.astimezone(zone)
    start_h, start_m = (int(p) for p in window.start.split(":"))
    length = timedelta(hours=window.length_hours())
    best: datetime | None = None
    for offset in range(-1, 8):
        day = (local + timedelta(days=offset)).date()
        if WEEKDAYS[day.weekday()] not in window.days:
            continue
        opens = datetime(day.year, day.month, day.day, start_h, start_m, tzinfo=zone)
        if opens <= local < opens + length:
            return True, (opens + length).astimezone(UTC)
        if opens > local and (best is None or opens < best):
            best = opens
    assert best is not None  # noqa: S101 - a window opens at least once a week
    return False, best.astimezone(UTC)


def transfer_gate(spec: ReplicationRuleSpec, now: datetime) -> tuple[bool, str, datetime | None]:
    """May transfers start now? Returns (allowed, reason, when that changes)."""
    if spec.not_before is not None and now < spec.not_before:
        return False, f"embargoed until {spec.not_before.isoformat()}", spec.not_before
    if spec.transfer_window is not None:
        is_open, edge = _next_opening(spec.transfer_window, now)
        if not is_open:
            return False, f"transfer window closed until {edge.isoformat()}", edge
        return True, "", edge
    return True, "", None


def subscribable(spec: ReplicationRuleSpec) -> bool:
    """Whether a Rucio subscription may place new data for this spec.

    A subscription creates rules whenever data arrives: it cannot honour a transfer window,
    an embargo or metadata exclusions, it must not act for an Observe resource, and it only
    sees DID-column metadata (`SUBSCRIPTION_KEYS`); other specs rely on the operator's own
    periodic selection. A name pattern alone, or with such metadata, is subscribable: the
    filter's ``pattern`` selects the same names (see `subscription_filter`).
    """
    selector = spec.selector
    return (
        selector.dids is None
        and spec.management_policy is ManagementPolicy.MANAGE
        and spec.transfer_window is None
        and spec.not_before is None
        and not selector.exclude
        and set(selector.match or {}) <= SUBSCRIPTION_KEYS
    )


def _exactly(value: str) -> str:
    """A regular expression matching ``value`` and nothing else.

    Rucio's transmogrifier matches filter values with ``re.match``, a prefix match: ``DR1``
    would also select ``DR10``, whose rules Steward (which selects exactly) would then
    release.
    """
    return f"^{re.escape(value)}$"


def subscription_filter(spec: ReplicationRuleSpec) -> dict[str, Any]:
    """The subscription filter selecting exactly what ``spec.selector`` selects.

    Every metadata value is a list (Rucio's schema requires lists for ``datatype``,
    ``project``, ``stream_name`` and ``prod_step``, and the transmogrifier accepts lists
    everywhere) of anchored, escaped regular expressions. A name pattern becomes the filter's
    ``pattern`` (a single regular expression in Rucio's schema, applied to the DID name with
    ``re.match``): `name_wildcard_regex` anchors both ends and escapes everything but ``*``,
    so the transmogrifier places exactly the names the operator's listing selects (the
    listing checks case the same way on every database).
    """
    selector = spec.selector
    assert selector.scope is not None  # noqa: S101 - the model requires it with a filter
    name = {"pattern": name_wildcard_regex(selector.name)} if selector.name is not None else {}
    return {
        "scope": [_exactly(selector.scope)],
        "did_type": [selector.did_type.value],
        **name,
        **{key: [_exactly(value)] for key, value in sorted((selector.match or {}).items())},
    }


def _rule_spec(spec: ReplicationRuleSpec, tag: str, lifetime: timedelta | None) -> RuleSpec:
    return RuleSpec(
        rse_expression=spec.destination,
        copies=spec.copies,
        lifetime=lifetime,
        grouping=spec.grouping.value,
        priority=spec.priority,
        activity=spec.activity,
        source_replica_expression=_source(spec),
        comment=tag,
        locked=spec.locked,
    )


def _source(spec: ReplicationRuleSpec) -> str | None:
    """The source preference as Steward sends and compares it: canonical."""
    return canonical(spec.source_preference) if spec.source_preference else None


def _digest(items: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:16]


@dataclass
class _Owned:
    """The rules a resource owns, grouped by DID."""

    by_did: dict[str, list[Rule]]

    @classmethod
    def of(cls, rules: Iterable[Rule]) -> _Owned:
        grouped: dict[str, list[Rule]] = {}
        for rule in rules:
            grouped.setdefault(rule.did, []).append(rule)
        return cls(grouped)

    def current(self, did: str, expression: str, copies: int) -> Rule | None:
        """The rule in charge of ``did``: the desired one if present, else the parent."""
        rules = self.by_did.get(did, [])
        for rule in rules:
            if (rule.rse_expression, rule.copies) == (expression, copies):
                return rule
        children = {r.child_rule_id for r in rules if r.child_rule_id}
        parents = [r for r in rules if r.id not in children]
        return parents[0] if parents else (rules[0] if rules else None)

    def all(self) -> list[Rule]:
        return [rule for rules in self.by_did.values() for rule in rules]


@dataclass
class _Pass:
    """Everything one reconcile of one resource works on."""

    rule: ReplicationRule
    ref: ResourceRef
    tag: str
    expression: str
    selected: list[str]
    owned: _Owned
    now: datetime
    old: Mapping[str, Any]
    """The status the pass started from (this pass's decisions build on earlier ones)."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    """Status fields decided during the pass (deletion policy, brake, subscription...)."""
    annotations: dict[str, str | None] = field(default_factory=dict)
    unowned: dict[str, dict[str, str]] = field(default_factory=dict)
    """DIDs whose rule exists but is not this resource's: ``{did: {rule, owner, kind}}``."""
    expired: set[str] = field(default_factory=set)
    """Selected DIDs whose copy lived its ``lifetime`` and is not placed again."""
    published: int | None = None
    """Datasets in the published container (``publish: true`` only)."""
    protected: str = ""
    """Why the deletion gate kept rules of deselected DIDs this pass, or empty."""
    change_kept: str = ""
    """Why the deletion gate kept changes of copies or destination this pass, or empty."""
    catch_up: CatchUpPlan | None = None
    """Catch-up archiving this pass (``spec.catchUp`` on a managed resource only)."""
    unboosted: set[str] = field(default_factory=set)
    """Rules whose priority Rucio would not change (their transfers already went out)."""
    touched: bool = False
    """Whether a rule was changed in place without an Event (a catch-up priority)."""
    deferred: int = 0
    """Missing rules left for later passes (`ReplicationService.max_rules_per_pass`)."""
    made: dict[str, str] = field(default_factory=dict)
    """Rule ids this pass created or took back, by DID."""
    from_snapshot: bool = False
    """Whether ``owned`` came from the shared `RuleSnapshot` (a timer tick), not Rucio now."""

    @property
    def spec(self) -> ReplicationRuleSpec:
        return self.rule.spec


class RuleIndex:
    """The rules of Steward's account by owner tag, merged by rule id (no I/O; not locked).

    `RuleSnapshot` keeps one and merges Rucio's answers into it: a full listing replaces it,
    a listing of changed rules moves each rule to the tag its comment now carries, and what a
    reconcile listed for one tag replaces that tag's rules.
    """

    def __init__(self) -> None:
        self._by_tag: dict[str, dict[str, Rule]] = {}
        self._tag_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._tag_of)

    def replace(self, rules: Iterable[Rule]) -> None:
        """Start over from a full listing: a rule it does not return is gone."""
        self._by_tag, self._tag_of = {}, {}
        self.merge(rules)

    def merge(self, rules: Iterable[Rule]) -> None:
        """Take each rule as it is now, under the tag its comment carries."""
        for rule in rules:
            self._place(rule, rule.comment or "")

    def put(self, tag: str, rules: Iterable[Rule]) -> None:
        """Make ``rules`` the whole of ``tag``: what a listing by that comment just returned.

        A rule the tag had and ``rules`` lacks left it (released, re-tagged, deleted); where
        it went, if anywhere, the next listing of changed rules says.
        """
        for rule_id in self._by_tag.pop(tag, {}):
            if self._tag_of.get(rule_id) == tag:
                del self._tag_of[rule_id]
        for rule in rules:
            self._place(rule, tag)

    def rules(self, tag: str, now: datetime, tolerance: timedelta) -> list[Rule]:
        """The rules of ``tag``, less those whose expiry passed ``tolerance`` before ``now``.

        Rucio's judge-cleaner removes a rule once it expires, and a listing of changed rules
        does not report that removal; an expired rule is gone or about to go, either way
        no longer a copy to count on. The tolerance covers clock skew with Rucio.
        """
        return [
            rule
            for rule in self._by_tag.get(tag, {}).values()
            if rule.expires_at is None or rule.expires_at + tolerance > now
        ]

    def _place(self, rule: Rule, tag: str) -> None:
        previous = self._tag_of.get(rule.id)
        if previous is not None and previous != tag:
            bucket = self._by_tag[previous]
            del bucket[rule.id]
            if not bucket:
                del self._by_tag[previous]
        self._by_tag.setdefault(tag, {})[rule.id] = rule
        self._tag_of[rule.id] = tag


class RuleSnapshot:
    """Every rule of Steward's account, kept current by listing what changed; shared by all.

    Timers of a thousand resources would otherwise list Rucio a thousand times per interval;
    with the snapshot, a steady state costs one listing per interval for all of them (Rucio
    has no watch, so someone must poll; one bulk call is the cheapest poll).

    **Incremental.** The first listing, and one every ``full_resync`` seconds, lists every
    rule of the account; the others list only the rules Rucio changed since the high-water
    mark less ``overlap`` (``updated_after``, `RucioStorage.list_rules`), and merge them by
    rule id (`RuleIndex`): a new rule joins its tag, a rule whose comment changed moves to
    its new tag. So a quiet interval costs what changed, not the size of the archive. The
    mark is Rucio's own time, the latest ``updated_at`` listed, so Steward's clock does not
    enter it; the overlap covers rows Rucio committed after the time it stamped on them
    (``updated_at`` is set when the row is written, the commit comes later) and daemons on
    other hosts. A rule listed twice is merged once. The listing that raised the mark saw a
    row stamped with it, so when it ended Rucio's clock had reached the mark; a listing that
    begins an overlap later (on ``clock``) therefore finds every row stamped before the mark
    committed, and lists them from an overlap before it. Once such a listing has returned
    with the mark unmoved (`_settled`), the next ones start at the mark itself, until it
    moves. Only the two clocks' rates enter, not their settings. So a quiet steady state
    lists the rules of the mark's second, not every rule changed in the overlap before it.
    (Rucio's rule listing has these time bounds, `RucioStorage.list_rules` says which and
    what indexes it has; listing by the scopes the resources select instead would still
    grow with the archive.)

    **What it does not see.** Rucio reports no removal in a listing of changed rules. A
    rule deleted through Rucio's API is not removed at once: ``delete_replication_rule`` is
    soft (it sets ``expires_at`` at most an hour ahead, rucio/core/rule.py ``delete_rule``),
    which changes the rule, so the next listing shows it expiring and the owner restores it
    within an interval, as before. An expired rule is left out of every answer (judge-cleaner
    removes it). A rule removed without changing first (by hand in Rucio's database, or
    while expired) stays in the snapshot until a reconcile of its resource lists its own
    rules (a change of the resource, or a pass that changed something, `put`) or the next
    full listing: restoring such drift waits for one of them (at most ``full_resync``, the
    operator's ``STEWARD_FULL_RESYNC_INTERVAL``). Nothing unsafe follows from a rule that
    is gone: it makes its DID look placed, so it delays a creation, never causes a removal;
    a release is decided on a listing of the resource's own rules
    (`ReplicationService._release_deselected`), and removing a rule that is gone is a no-op
    (a rule id is never reused).

    **Never queued.** One thread lists; the others never queue behind it, for a listing that
    hangs would then hold every handler thread until its timeout. While it lists they use the
    previous snapshot if it is at most twice ``max_age`` old, else list their own rules (one
    small call, through the call path's slots and availability state like any other).
    """

    def __init__(
        self,
        rucio: RucioStorage,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        full_resync: float = 21600.0,
        overlap: timedelta = timedelta(minutes=5),
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rucio = rucio
        self._max_age = max_age
        self._clock = clock
        self._full_resync = full_resync
        self._overlap = overlap
        self._wall = wall
        self._lock = threading.Lock()
        self._taken: float | None = None
        """When the last listing started (``clock``)."""
        self._synced: float | None = None
        """When the last full listing started (``clock``)."""
        self._mark: datetime | None = None
        """Rucio's latest ``updated_at`` among the rules listed since the last full listing."""
        self._raised: float | None = None
        """When the listing that last raised ``_mark`` ended (``clock``)."""
        self._settled = False
        """Whether a listing from an overlap before the mark began an overlap after
        ``_raised`` and returned with the mark unmoved: every row stamped before the mark is
        listed, so listings may start at the mark."""
        self._listing = False
        self._recent: dict[str, list[Rule]] = {}
        self._index = RuleIndex()

    def rules(self, tag: str) -> list[Rule]:
        """Rules carrying ``tag``, from a listing at most ``max_age`` seconds old (see above)."""
        with self._lock:
            age = None if self._taken is None else self._clock() - self._taken
            if age is not None and age <= self._max_age:
                return self._answer(tag)
            if self._listing:
                if age is not None and age <= 2 * self._max_age:
                    return self._answer(tag)
                own = True
            else:
                own, self._listing, self._recent = False, True, {}
                since = self._since()
        if own:
            return self._rucio.list_rules(comment=tag)
        try:
            taken = self._clock()
            if since is None:
                listed = self._rucio.list_rules()
            else:
                listed = self._rucio.list_rules(updated_after=since)
        finally:
            with self._lock:
                self._listing = False
        with self._lock:
            if since is None:
                self._index.replace(listed)
                self._synced, self._mark = taken, None
            else:
                self._index.merge(listed)
            self._note_mark(listed, taken)
            # What reconciles recorded while the listing ran is fresher than the listing.
            for recorded, rules in self._recent.items():
                self._index.put(recorded, rules)
            self._taken, self._recent = taken, {}
            return self._answer(tag)

    def put(self, tag: str, rules: Sequence[Rule]) -> None:
        """Record what a reconcile just listed for ``tag`` (fresher than the snapshot)."""
        with self._lock:
            self._index.put(tag, rules)
            if self._listing:
                self._recent[tag] = list(rules)

    def _note_mark(self, listed: Sequence[Rule], taken: float) -> None:
        """Raise the mark to what a listing that began at ``taken`` returned; or settle it."""
        mark = _latest(self._mark, listed)
        if mark != self._mark:
            self._mark, self._raised, self._settled = mark, self._clock(), False
        elif self._raised is not None and taken - self._raised >= self._overlap.total_seconds():
            self._settled = True

    def _since(self) -> datetime | None:
        """Where the next listing starts; None for a full one (first, due, or no mark)."""
        if self._synced is None or self._mark is None:
            return None
        if self._clock() - self._synced >= self._full_resync:
            return None
        return self._mark if self._settled else self._mark - self._overlap

    def _answer(self, tag: str) -> list[Rule]:
        return self._index.rules(tag, self._wall(), self._overlap)


def _latest(mark: datetime | None, rules: Iterable[Rule]) -> datetime | None:
    """The latest of ``mark`` and the rules' ``updated_at``: the snapshot's high-water mark."""
    times = [rule.updated_at for rule in rules if rule.updated_at is not None]
    if mark is not None:
        times.append(mark)
    return max(times, default=None)


class ExpressionCache:
    """The RSEs of RSE expressions, shared by all resources, at most ``max_age`` seconds old.

    Deciding a default deletion policy needs the RSEs of the destination and those that are
    custodial: two listings per new resource, the same ones for a thousand resources arriving
    together. Rucio caches expressions for ten minutes itself; so can Steward. Only answers
    are kept, never errors.

    One listing per expression at a time (single flight): when an answer ages out during a
    burst, every worker thread would otherwise ask Rucio the same question at once. The others
    wait for that answer; if the listing fails, each of them asks again in turn, so a failure
    is reported by every caller's own call and never shared.
    """

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[float, frozenset[str]]] = {}
        self._flights: dict[str, _Flight] = {}
        self.listings = 0
        """Listings asked of Rucio (for tests and the benchmark)."""
        self.waiting = 0
        """Callers waiting for another's listing now (for tests)."""

    def rses(self, rucio: RucioStorage, expression: str) -> frozenset[str]:
        """The RSEs ``expression`` selects (Rucio's answer, maybe from the cache)."""
        while True:
            now = self._clock()
            with self._lock:
                known = self._known.get(expression)
                if known is not None and now - known[0] <= self._max_age:
                    return known[1]
                flight = self._flights.get(expression)
                if flight is None:
                    flight = self._flights[expression] = _Flight()
                    self.listings += 1
                    break
                self.waiting += 1
            flight.done.wait()
            with self._lock:
                self.waiting -= 1
            if flight.answer is not None:
                return flight.answer
        try:
            flight.answer = frozenset(rucio.list_rses(expression))
            with self._lock:
                self._known[expression] = (now, flight.answer)
            return flight.answer
        finally:
            with self._lock:
                del self._flights[expression]
            flight.done.set()


@dataclass
class _Flight:
    """One listing of an expression in progress, and its answer (None until, or if failed)."""

    done: threading.Event = field(default_factory=threading.Event)
    answer: frozenset[str] | None = None


class PlacementLedger:
    """When Steward first placed each DID for each resource, read from the audit trail.

    A copy with a ``lifetime`` lives that long from its first placement and is not placed
    again once Rucio has expired it (design choice recorded in docs and status): Rucio removes
    an expired rule entirely, so only Steward's own record says that a DID was placed before.
    The trail is append-only, so the ledger reads each resource's new rows only (rows after
    the last one it saw), once per pass of a resource that has a lifetime.
    """

    _ACTIONS: Final = ("rucio.rule.add", "rucio.rule.adopt")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[int, dict[str, datetime]]] = {}

    def first_placed(self, audit: AuditService, ref: ResourceRef) -> dict[str, datetime]:
        """DID -> time of its first placement for the resource (by UID)."""
        key = ref.uid or ""
        with self._lock:
            last, placed = self._seen.get(key, (0, {}))
            where = AuditFilter(
                kind=ref.kind, namespace=ref.namespace, name=ref.name, uid=ref.uid, result="success"
            )
            rows = audit.query_after(where, last, self._ACTIONS)
            placed = dict(placed)
            for row in rows:
                did = _after_did(row.after)
                if did is not None and did not in placed:
                    placed[did] = _aware(row.time)
                last = max(last, row.id)
            self._seen[key] = (last, placed)
            return placed


def _after_did(after: str | None) -> str | None:
    import json  # noqa: PLC0415 - only the ledger parses rows

    if not after:
        return None
    value = json.loads(after)
    did = value.get("did") if isinstance(value, dict) else None
    return did if isinstance(did, str) else None


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@dataclass
class RucioView:
    """What a ReplicationRule means in Rucio, read-only: selection and deletion policy."""

    rucio: RucioStorage
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    cluster_id: str = field(default="", kw_only=True)
    """This cluster's identity, half of every owner tag (`steward.services.ownership`)."""
    expressions: ExpressionCache | None = field(default=None, kw_only=True)
    """Shared answers to RSE expressions; without it each question goes to Rucio."""
    facts: ClusterFacts = field(default_factory=ClusterFacts, kw_only=True)
    """What every release is judged against: holds and locks (RetentionPolicies), pins
    (OODSCaches), freezes (Sites, ``STEWARD_DELETION_FREEZE``), campaigns. The operator passes
    its indexes; ``steward plan`` reads them from the cluster."""

    def tag(self, ref: ResourceRef) -> str:
        """The owner tag of the resource's Rucio rules (see `steward.services.ownership`)."""
        return owner_tag(self.cluster_id, ref.uid or "")

    # -- selection ----------------------------------------------------------------------------

    def select(self, spec: ReplicationRuleSpec) -> list[str]:
        """DIDs the resource selects now (explicit list, or the filter's matches)."""
        return selection.select(self.rucio, spec.selector)

    # -- deletion policy ----------------------------------------------------------------------

    def custodial(self, expression: str) -> bool | None:
        """Whether the expression may place a copy on a custodial (tape archive) RSE.

        True when any RSE it selects has the ``custodial`` attribute or ``type=TAPE`` (a
        copy may land there); False when it selects RSEs and none is; None when Rucio cannot
        say (an error, or an expression selecting nothing yet): the caller must not decide.
        """
        try:
            matched = self._rses(expression)
            if not matched:
                return None
            archive = self._rses("custodial|type=TAPE")
        except RucioError:
            return None
        return bool(matched & archive)

    def _rses(self, expression: str) -> frozenset[str]:
        if self.expressions is None:
            return frozenset(self.rucio.list_rses(expression))
        return self.expressions.rses(self.rucio, expression)

    def plan_release(
        self, rules: Sequence[Rule], requester: str, owner: str, *, reason: str
    ) -> DeletionPlan:
        """The deletion gate's plan for deleting ``rules``, which the tag ``owner`` owns.

        The same gate, protections and precedence as retention and OODS eviction (legal hold
        > compliance lock > governance lock > pins > campaign inputs, failed-campaign reviews,
        the last custodial replica; the freeze): a ReplicationRule's Delete policy removes no
        rule the gate keeps. The rules are the resource's own, so neither the scratch-owner
        nor the other-resource protection applies: releasing them removes only this
        resource's reference, and Rucio keeps every file another rule still locks (DRP29).
        Open datasets are sized first, so the plan and the audit trail never count them as
        empty.
        """
        sized = with_sizes(self.rucio, rules)
        rses = {rule.id: self._rses(rule.rse_expression) for rule in sized}
        return self._judge(sized, rses, requester, owner, reason=reason)

    def leaving(self, rule: Rule, expression: str, copies: int) -> frozenset[str]:
        """RSEs changing ``rule`` to ``copies`` at ``expression`` may remove replicas from.

        The RSEs of both expressions as Rucio evaluates them now (`leaving_rses`). When the
        old expression selects nothing any more (an RSE renamed or an attribute removed), the
        RSEs of the rule's own locks stand for it: where its replicas are is then the only
        thing known, and an unknown answer must never read as "nothing leaves".
        """
        before = self._rses(rule.rse_expression)
        if not before:
            before = frozenset(lock.rse for lock in self.rucio.list_rule_locks(rule.id))
        return leaving_rses(before, rule.copies, self._rses(expression), copies)

    def judge_change(
        self, rules: Sequence[Rule], expression: str, copies: int, requester: str, owner: str
    ) -> ChangeVerdict:
        """The deletion gate's verdict on changing ``rules`` (owned by ``owner``) to the target.

        A change that may remove replicas from some RSE is a candidate for the gate like a
        released rule (`plan_release`), but its RSEs are only those it leaves: a freeze, or a
        pin, at an RSE the rule keeps does not stop it. The last custodial copy is judged with
        the new placement counted: when every RSE of ``expression`` is custodial, the rule
        after the change keeps a custodial copy (Rucio removes the old replicas only once the
        new placement is OK), so a move from tape to tape passes and a move from tape to disk
        is kept unless another rule keeps a custodial copy. A Rucio error raises: it postpones
        the change, it never decides it.
        """
        leaving = {rule.id: self.leaving(rule, expression, copies) for rule in rules}
        removing = [rule for rule in rules if leaving[rule.id]]
        if not removing:
            return ChangeVerdict(tuple(rules), leaving, None)
        plan = self._judge(
            with_sizes(self.rucio, removing),
            leaving,
            requester,
            owner,
            reason=f"Changed to {expression} x{copies}",
            after=self._rses(expression),
        )
        return ChangeVerdict(tuple(rules), leaving, plan)

    def _judge(
        self,
        rules: Sequence[Rule],
        rses: Mapping[str, frozenset[str]],
        requester: str,
        owner: str,
        *,
        reason: str,
        after: frozenset[str] | None = None,
    ) -> DeletionPlan:
        """The gate's plan for ``rules``, each at ``rses[rule.id]``: THE way both ask it.

        ``after`` is the RSEs of the placement that replaces the rules (a change); when all
        of them are custodial, it counts as keeping a custodial copy of each DID.
        """
        now = self.clock()
        candidates = [
            replace(candidate_of(rule, rses[rule.id], reason), owner=None) for rule in rules
        ]
        placement = gather_placement(
            self.rucio,
            candidates,
            lambda dids: [rule for did in sorted(dids) for rule in self.rucio.list_did_rules(did)],
            self._rses,
        )
        if after and after <= placement.custodial_rses:
            keepers = dict(placement.keepers)
            for rule in rules:
                # The rule as it will be: never a removal, so it keeps the custodial copy.
                keepers[rule.did] = keepers.get(rule.did, frozenset()) | {f"{rule.id}:after"}
            placement = replace(placement, keepers=keepers)
        request = DeletionRequest(
            requester=requester,
            operation=Operation.DELETE,
            candidates=candidates,
            placement=placement,
            own_tags=frozenset({owner}),
        )
        return plan_deletion(request, protections_of(self.facts, self.rucio, now=now), now=now)

    def deletion_policy(
        self, spec: ReplicationRuleSpec, status: Mapping[str, Any] | None = None
    ) -> tuple[DeletionPolicy, str, str | None]:
        """The deletion policy in force: (policy, why, destination the default was decided for).

        A declared policy wins. The default is decided once per destination, from a definite
        answer of Rucio, and kept in status (``deletionPolicyDecidedFor``); while undecided it
        is Orphan. A default never turns from Orphan to Delete on its own: after a move away
        from a custodial destination it stays Orphan until the spec declares Delete.
        """
        if spec.deletion_policy is not None:
            return spec.deletion_policy, "declared in the spec", None
        known = status or {}
        expression = canonical(spec.destination)
        recorded = known.get("deletionPolicy")
        decided_for = known.get("deletionPolicyDecidedFor")
        if decided_for == expression and recorded in {p.value for p in DeletionPolicy}:
            return DeletionPolicy(recorded), str(known.get("deletionPolicyReason", "")), expression
        custodial = self.custodial(expression)
        if custodial is None:
            why = (
                f"default: Rucio could not say whether {expression} is custodial; Orphan until "
                "it does"
            )
            return DeletionPolicy.ORPHAN, why, None
        if custodial:
            return (
                DeletionPolicy.ORPHAN,
                f"default: {expression} may place a custodial copy",
                (expression),
            )
        if decided_for is not None and recorded == DeletionPolicy.ORPHAN.value:
            why = (
                f"default: kept Orphan, decided for {decided_for}; declare deletionPolicy: "
                "Delete to delete"
            )
            return DeletionPolicy.ORPHAN, why, expression
        return DeletionPolicy.DELETE, f"default: {expression} is not custodial", expression


@dataclass(kw_only=True)
class ReplicationService(RucioView):
    """Reconciles ReplicationRule resources against Rucio."""

    audit: AuditService
    snapshot: RuleSnapshot | None = None
    arrivals: ArrivalFeed | None = None
    """Shares what arrived in a scope between the incremental passes of its policies
    (`steward.services.arrivals`); None: each pass lists its scope on its own."""
    recent: RecentRules | None = None
    """Shares the read-back of a new resource's rules with other new resources (`_read_back`);
    None: each lists its own."""
    ledger: PlacementLedger = field(default_factory=PlacementLedger)
    actor: str = "steward-operator"
    release_limit: ReleaseLimit = field(default_factory=ReleaseLimit)
    gate: DeletionGate | None = None
    """Carries deletions out (intent, Rucio, outcome); one on this service's Rucio and audit
    trail when None."""
    batch_size: int = 500
    """DIDs per rule-creation call, each batch audited as it completes."""
    max_rules_per_pass: int = 10000
    """``Settings.max_rules_per_pass``: most rules one pass creates; the rest wait for the
    next passes (`_create_missing`)."""
    full_resync: timedelta = timedelta(hours=6)
    """``Settings.full_resync_interval``: how often a metadata selection lists its whole scope."""
    overlap: timedelta = timedelta(minutes=5)
    """``Settings.selection_overlap``: how far an incremental listing reaches behind the mark."""
    mark_refresh: timedelta = timedelta(minutes=10)
    """How old the high-water mark may get before a quiet pass moves it: moving it on every
    pass would write every resource's status every interval; a staler mark only makes the
    incremental listing reach further back (ten intervals of arrivals)."""

    # -- reconcile ----------------------------------------------------------------------------

    def reconcile(
        self,
        rule: ReplicationRule,
        ref: ResourceRef,
        old_status: Mapping[str, Any] | None = None,
        *,
        fresh: bool = True,
        first_pass: bool = False,
    ) -> Outcome:
        """Converge Rucio on the resource and return its whole status.

        ``fresh`` lists the resource's rules now (a change event); otherwise the shared
        snapshot is used (a timer tick), and Rucio is called only if something must change.
        ``first_pass`` says the resource was never reconciled (its status has no
        ``observedGeneration``): a managed one then skips that listing, as it can only own
        rules that a crashed first pass created, and creating those again meets Rucio's
        DuplicateRule, whose rule carries this resource's exact tag and is taken back.
        That saves one of its three Rucio calls when a thousand resources arrive at once.

        Raises
        ------
        TransientError
            Rucio is unreachable; the caller marks Degraded and retries with backoff.
        PermanentError
            Rucio refuses the spec (unknown DID, quota); the caller marks Degraded.
        """
        spec = rule.spec
        old = dict(old_status or {})
        tag = self.tag(ref)
        taken = self.clock()
        from_snapshot = False
        if first_pass and spec.management_policy is ManagementPolicy.MANAGE:
            listed: list[Rule] = []
        elif fresh or self.snapshot is None:
            listed = self.rucio.list_rules(comment=tag)
        else:
            listed, from_snapshot = self.snapshot.rules(tag), True
        since = self._incremental_since(spec, ref, old, taken, listed)
        covered = taken
        if since is None:
            selected = self.select(spec)
        else:
            selected, covered = self._select_new(spec, since, listed, old=old, ref=ref, now=taken)
        work = _Pass(
            rule=rule,
            ref=ref,
            tag=tag,
            expression=canonical(spec.destination),
            selected=selected,
            owned=_Owned.of(listed),
            now=self.clock(),
            old=old,
            from_snapshot=from_snapshot,
        )
        if "observedGeneration" in old and "ownerTag" not in old:
            self._take_over_legacy_rules(work)
        policy, why, decided_for = self.deletion_policy(spec, old)
        work.status.update(
            deletionPolicy=policy.value,
            deletionPolicyReason=why,
            deletionPolicyDecidedFor=decided_for,
            managementPolicy=spec.management_policy.value,
        )
        self._converge_subscription(work, fresh=fresh)
        allowed, gate_reason, gate_edge = transfer_gate(spec, work.now)
        self._recheck_unowned(work)
        if spec.management_policy is ManagementPolicy.MANAGE:
            work.catch_up = plan_catch_up(spec, work.owned.all(), old.get("catchUp"), work.now)
            if allowed:
                self._create_missing(work)
            self._converge_existing(work)
            self._converge_share(work)
            self._announce_catch_up(work)
            self._gate_transfers(work, allowed=allowed)
            self._release_deselected(work, policy)
            if work.events or work.touched:
                work.owned = _Owned.of(self._read_back(work, taken, first_pass=first_pass))
            if spec.publish:
                self._publish(work, int(old.get("published", 0) or 0))
        work.status["selection"] = self._selection(work, since, covered)
        self._expect_arrivals(work)
        if self.snapshot is not None and (work.events or work.touched or not work.from_snapshot):
            self.snapshot.put(tag, work.owned.all())
        after = (gate_edge - work.now).total_seconds() + 1 if gate_edge is not None else None
        return Outcome(
            self._status(work, gate_reason),
            work.events,
            0.0 if work.deferred else after,
            work.annotations,
        )

    # -- incremental selection ----------------------------------------------------------------

    def _incremental_since(
        self,
        spec: ReplicationRuleSpec,
        ref: ResourceRef,
        old: Mapping[str, Any],
        now: datetime,
        listed: Sequence[Rule],
    ) -> datetime | None:
        """Where an incremental listing starts, or None when this pass lists everything.

        Everything is listed for explicit DIDs (no listing at all), before the first mark,
        after a spec change, once every ``full_resync`` (only while transfers may start, so
        a resync finding new DIDs can place them), while a deselection waits for its
        second look or an acknowledgement (both need the whole selection), and when the
        resource owns rules for fewer DIDs than its last status counted.
        """
        if spec.selector.dids is not None:
            return None
        state: Mapping[str, Any] = old.get("selection") or {}
        mark, synced = _time(state.get("highWaterMark")), _time(state.get("fullSyncTime"))
        if mark is None or synced is None or state.get("generation") != ref.generation:
            return None
        if old.get("deselection") or old.get("pendingRelease"):
            return None
        if len({rule.did for rule in listed}) < int(old.get("ruleCount") or 0):
            # A rule went away (deleted behind Steward's back, or expired): only a full
            # listing says whether its DID is still selected, so drift is restored now,
            # not at the next resync.
            return None
        if now - synced >= self.full_resync and transfer_gate(spec, now)[0]:
            return None
        return mark - self.overlap

    def _select_new(
        self,
        spec: ReplicationRuleSpec,
        since: datetime,
        listed: Sequence[Rule],
        *,
        old: Mapping[str, Any],
        ref: ResourceRef,
        now: datetime,
    ) -> tuple[list[str], datetime]:
        """The selection as the last full listing left it, plus the DIDs new since ``since``.

        What the resource already has in hand (its rules, the unowned rules it remembers,
        the DIDs whose lifetime ended) stands for the rest of the selection until the next
        full listing; the new DIDs, with exclusions applied to them only, come from one
        bounded listing per metadata plugin, or from the scope's shared arrivals checked by
        name (`ArrivalFeed`). Duplicates of the overlap are merged here.

        Returns the selection and the time its listings cover up to: ``now`` (taken before
        this pass listed anything), or when a shared listing used here was sent if that is
        earlier, so the mark never passes what was listed.
        """
        known = {rule.did for rule in listed} | set(old.get("unownedRules") or {})
        if spec.lifetime is not None:
            placed = self.ledger.first_placed(self.audit, ref)
            known |= {
                did
                for did, first in placed.items()
                if first + spec.lifetime - now <= _LIFETIME_TOLERANCE
            }
        covered, arrived = now, None
        selector = spec.selector
        if self.arrivals is not None and selector.scope is not None:
            shared = self.arrivals.since(
                selector.scope,
                selection.DID_KINDS[selector.did_type],
                arrival_plugins(selector.match),
                since,
                policy=ref.uid or "",
            )
            if shared is not None:
                covered = min(now, shared.taken)
                arrived = {
                    plugin: {n for n in found if f"{selector.scope}:{n}" not in known}
                    for plugin, found in shared.names.items()
                }
        new = selection.select_new(self.rucio, selector, since=since, arrived=arrived)
        return sorted(known.union(new)), covered

    def _expect_arrivals(self, work: _Pass) -> None:
        """Tell the shared arrival listing where this policy's next pass will start."""
        selector, state = work.spec.selector, work.status.get("selection") or {}
        mark = _time(state.get("highWaterMark"))
        if self.arrivals is None or selector.scope is None or mark is None:
            return
        self.arrivals.expect(
            selector.scope,
            selection.DID_KINDS[selector.did_type],
            arrival_plugins(selector.match),
            mark - self.overlap,
            work.ref.uid or "",
        )

    def _selection(
        self, work: _Pass, since: datetime | None, taken: datetime
    ) -> dict[str, Any] | None:
        """The selection state status keeps: mode, high-water mark, last full listing.

        The mark is the time taken before this pass listed anything, so a DID created while
        it listed is after the mark and listed next time (the overlap covers clocks and late
        commits). It moves only when every selected DID has a rule (or a reason not to):
        a DID waiting for a transfer window must be listed again. After a full pass that
        leaves DIDs waiting there is no mark, and passes stay full until they are placed.
        """
        spec = work.spec
        if spec.selector.dids is not None:
            return None
        state: Mapping[str, Any] = work.old.get("selection") or {}
        waiting = any(
            work.owned.current(did, work.expression, spec.copies) is None
            and did not in work.unowned
            and did not in work.expired
            for did in work.selected
        )
        old_mark = _time(state.get("highWaterMark"))
        mark: datetime | None
        if since is None:
            synced: datetime | None = taken
            mark = None if waiting else taken
        else:
            synced = _time(state.get("fullSyncTime"))
            stale = old_mark is None or taken - old_mark >= self.mark_refresh
            mark = old_mark if waiting or not (work.events or stale) else taken
        subscription: Mapping[str, Any] = work.status.get("subscription") or {}
        active = bool(subscription) and subscription.get("state") != SUBSCRIPTION_INACTIVE
        return {
            "mode": "Full" if since is None else "Incremental",
            "highWaterMark": _stamp(mark),
            "fullSyncTime": _stamp(synced),
            "generation": work.ref.generation,
            "newData": "Subscription" if active else "Steward",
        }

    # -- ownership ----------------------------------------------------------------------------

    def _ours(self, comment: str | None, tag: str) -> bool:
        """Whether a rule with this comment is this resource's to take (back) over.

        Exactly its tag (created before a crash), or the marks this resource left on rules it
        released (re-selected since). Nothing else: a tag someone edited is not ours.
        """
        return comment in {tag, ORPHANED_PREFIX + tag, RELEASED_PREFIX + tag}

    def _take_over_legacy_rules(self, work: _Pass) -> None:
        """Re-tag rules carrying this resource's tag from before owner tags were hashes.

        A resource reconciled by an earlier Steward (status without ``ownerTag``) tagged its
        rules ``steward:<namespace>/<name>``; they are this resource's, so they get the new
        tag once, audited, and the resource converges instead of finding them foreign.
        """
        ref = work.ref
        legacy = f"{LEGACY_TAG_PREFIX}{ref.namespace}/{ref.name}"
        self._deactivate_legacy_subscription(ref, legacy)
        rules = self.rucio.list_rules(comment=legacy)
        for rule in rules:
            self.rucio.update_rule(rule.id, comment=work.tag)
            self._record(
                ref,
                "rucio.rule.retag",
                rule.id,
                before={"comment": legacy},
                after={"comment": work.tag, "did": rule.did},
            )
        if rules:
            work.owned = _Owned.of([*work.owned.all(), *(_retagged(r, work.tag) for r in rules)])
            work.events.append(
                ("Normal", "RulesRetagged", f"took over {len(rules)} rules of the legacy tag")
            )

    def _deactivate_legacy_subscription(self, ref: ResourceRef, legacy: str) -> None:
        """Stop the subscription an earlier Steward named ``steward-<namespace>-<name>``.

        It would go on creating rules with the old tag. That name is ambiguous (``a-b/c`` and
        ``a/b-c`` shared it), so it is deactivated only if its rules carry this resource's old
        tag.
        """
        name = f"steward-{ref.namespace}-{ref.name}"
        current = self.rucio.get_subscription(name)
        if current is None or current.state == SUBSCRIPTION_INACTIVE:
            return
        if any(rule.get("comments") == legacy for rule in current.rules):
            self._deactivate(ref, name)

    def _recheck_unowned(self, work: _Pass) -> None:
        """Look again at rules found last pass that are not this resource's (one call each).

        Remembering them avoids a create/duplicate/list cycle every pass; one that is gone
        meanwhile is forgotten, so its DID gets a rule of its own.
        """
        previous: Mapping[str, Mapping[str, str]] = work.old.get("unownedRules") or {}
        chosen = set(work.selected)
        for did, seen in previous.items():
            if did not in chosen or work.owned.by_did.get(did):
                continue
            try:
                rule = self.rucio.get_rule(seen["rule"])
            except RucioNotFoundError:
                continue
            if rule.expires_at is not None and rule.expires_at <= work.now:
                continue
            if not self._ours(rule.comment, work.tag):
                work.unowned[did] = _unowned(rule, work.tag)

    # -- creation -----------------------------------------------------------------------------

    def _lifetimes(self, work: _Pass, dids: Sequence[str]) -> dict[timedelta | None, list[str]]:
        """DIDs to place, grouped by the lifetime their rule gets; expired ones left out.

        Without ``lifetime`` every DID gets a rule for ever. With it, a DID never placed gets
        the whole lifetime, one placed before (a rule deleted behind Steward's back) what is
        left of it since its first placement, and one whose lifetime has run out none.
        """
        lifetime = work.spec.lifetime
        if lifetime is None:
            return {None: list(dids)}
        placed = self.ledger.first_placed(self.audit, work.ref)
        groups: dict[timedelta | None, list[str]] = {}
        for did in dids:
            first = placed.get(did)
            remaining = lifetime if first is None else first + lifetime - work.now
            if remaining <= _LIFETIME_TOLERANCE:
                work.expired.add(did)
                continue
            groups.setdefault(lifetime if first is None else remaining, []).append(did)
        return groups

    def _create_missing(self, work: _Pass) -> None:
        spec, expression = work.spec, work.expression
        missing = [
            did
            for did in work.selected
            if work.owned.current(did, expression, spec.copies) is None and did not in work.unowned
        ]
        if not missing:
            return
        # A bounded pass: a backfill of a hundred thousand DIDs must not hold one worker
        # thread (and one status write) for all of it. The DIDs left over stay missing, so
        # the selection's high-water mark does not move past them (`_selection`) and the
        # next pass, seconds later (`requeue_after`), takes the next share.
        work.deferred = max(0, len(missing) - self.max_rules_per_pass)
        missing = missing[: self.max_rules_per_pass]
        created: list[str] = []
        taken: list[str] = []
        for lifetime, dids in self._lifetimes(work, missing).items():
            for start in range(0, len(dids), self.batch_size):
                batch = dids[start : start + self.batch_size]
                done, back = self._create_batch(work, batch, lifetime)
                created += done
                taken += back
        self._report_creation(work, created, taken)

    def _create_batch(
        self, work: _Pass, batch: list[str], lifetime: timedelta | None
    ) -> tuple[list[str], list[str]]:
        """Create one batch of rules: intent, Rucio, then a row per rule; (created, taken)."""
        spec, ref, tag = work.spec, work.ref, work.tag
        plan = {"rse_expression": work.expression, "copies": spec.copies}
        lifetime_s = None if lifetime is None else int(lifetime.total_seconds())
        self._intent(ref, "rucio.rule.add", None, {**plan, "dids": batch, "lifetime": lifetime_s})
        try:
            added = self.rucio.add_rules(batch, _rule_spec(spec, tag, lifetime))
        except RucioError as error:
            self._failed(ref, "rucio.rule.add", None, error)
            raise
        records = [
            AuditRecord(
                resource=ref,
                action="rucio.rule.add",
                actor=self.actor,
                target=added.rule_ids[did],
                after={**plan, "did": did, "owner": tag},
            )
            for did in batch
            if did in added.created
        ]
        self.audit.record_many(records)
        EXTERNAL_ACTIONS.labels("ReplicationRule", "rucio.rule.add").inc(len(records))
        work.made.update((did, added.rule_ids[did]) for did in added.created)
        taken = []
        for did, rule in sorted(added.existing.items()):
            if self._ours(rule.comment, tag):
                self._take_back(work, rule, lifetime)
                work.made[did] = rule.id
                taken.append(did)
            else:
                work.unowned[did] = _unowned(rule, tag)
        return sorted(added.created), taken

    def _read_back(self, work: _Pass, taken: datetime, *, first_pass: bool) -> list[Rule]:
        """The resource's rules after this pass changed some: Rucio's answer, not a guess.

        A listing by owner tag, except on the first pass of a resource that names its DIDs
        and never changed its spec: then every rule carrying its tag is one this pass made
        or took back (a crashed earlier pass of the same spec asked for the same DIDs, so its
        rules came back as duplicates), their ids are known, and `RecentRules` finds them in
        a listing shared with other new resources. It answers only when it found every one
        of them; otherwise the tag is listed as before.
        """
        if (
            self.recent is not None
            and first_pass
            and work.spec.selector.dids is not None
            and work.ref.generation == 1
            and work.made
        ):
            found = self.recent.rules(work.made.values(), taken)
            RULE_READ_BACKS.labels("shared" if found is not None else "by-tag-after-shared").inc()
            if found is not None:
                return found
        else:
            RULE_READ_BACKS.labels("by-tag").inc()
        return self.rucio.list_rules(comment=work.tag)

    def _take_back(self, work: _Pass, rule: Rule, lifetime: timedelta | None) -> None:
        """Take over a rule this resource made: its tag back, its expiry as the spec says."""
        changes: dict[str, Any] = {}
        if rule.comment != work.tag:
            changes["comment"] = work.tag
        if lifetime is None and rule.expires_at is not None and rule.child_rule_id is None:
            changes["lifetime"] = None
        elif lifetime is not None:
            changes["lifetime"] = lifetime
        if changes:
            self.rucio.update_rule(rule.id, **changes)
        self._record(
            work.ref,
            "rucio.rule.adopt",
            rule.id,
            before={"comment": rule.comment, "expires_at": _iso(rule.expires_at)},
            after={
                "did": rule.did,
                "rse_expression": rule.rse_expression,
                "copies": rule.copies,
                "owner": work.tag,
            },
        )

    def _report_creation(self, work: _Pass, created: list[str], taken: list[str]) -> None:
        events = work.events
        if created:
            events.append(("Normal", "RulesCreated", f"created {len(created)} Rucio rules"))
        if taken:
            events.append(
                ("Normal", "RulesAdopted", f"took back {len(taken)} Rucio rules it had made")
            )
        previous = work.old.get("unownedRules") or {}
        new = {did: seen for did, seen in work.unowned.items() if did not in previous}
        for kind, reason in (("foreign", _FOREIGN_REASON), ("shared", _SHARED_REASON)):
            found = [seen for seen in new.values() if seen["kind"] == kind]
            if found:
                events.append(("Warning", reason, _unowned_message(kind, found)))

    # -- subscriptions ------------------------------------------------------------------------

    def _converge_subscription(self, work: _Pass, *, fresh: bool) -> None:
        """Keep the resource's subscription active exactly while the spec is subscribable.

        It is deactivated as soon as the resource switches to Observe, gets a window, an
        embargo or an exclusion, or stops selecting by DID-column metadata, and on finalize.
        A timer pass trusts the status (no call while nothing is active); a change, which may
        have made the spec unsubscribable, asks Rucio.
        """
        spec, ref = work.spec, work.ref
        name = subscription_name(self.cluster_id, ref.uid or "")
        if subscribable(spec):
            work.status["subscription"] = self._ensure_subscription(work, name)
            return
        known: Mapping[str, str] | None = work.old.get("subscription") or None
        quiet = known is None or known.get("state") == SUBSCRIPTION_INACTIVE
        if quiet and not (fresh and (known is not None or spec.selector.dids is None)):
            work.status["subscription"] = dict(known) if known else None
            return
        current = self.rucio.get_subscription(name)
        if current is None:
            work.status["subscription"] = None
            return
        if current.state != SUBSCRIPTION_INACTIVE and self._deactivate(ref, name):
            work.events.append(
                ("Normal", "Unsubscribed", f"subscription {name} no longer places new data")
            )
        work.status["subscription"] = {
            "name": name,
            "id": current.id,
            "state": SUBSCRIPTION_INACTIVE,
        }

    def _ensure_subscription(self, work: _Pass, name: str) -> dict[str, str]:
        """Place new matching data by a Rucio subscription (existing data: backfill)."""
        ref, tag, spec = work.ref, work.tag, work.spec
        wanted = SubscriptionSpec(
            name=name,
            filter=subscription_filter(spec),
            rules=[_rule_spec(spec, tag, spec.lifetime)],
            comments=tag,
        )
        current = self.rucio.get_subscription(name)
        if (
            current is not None
            and current.state != SUBSCRIPTION_INACTIVE
            and current.filter == dict(wanted.filter)
            and current.rules == [r.subscription_rule() for r in wanted.rules]
        ):
            return {"name": name, "id": current.id, "state": current.state}
        subscription_id = self.rucio.add_subscription(wanted)
        action = "rucio.subscription.add" if current is None else "rucio.subscription.update"
        self._record(ref, action, subscription_id, after=wanted.client_options())
        work.events.append(
            ("Normal", "Subscribed", f"subscription {name} places new matching data")
        )
        return {"name": name, "id": subscription_id, "state": "ACTIVE"}

    def _deactivate(self, ref: ResourceRef, name: str) -> bool:
        if not self.rucio.deactivate_subscription(name):
            return False
        self._record(ref, "rucio.subscription.deactivate", name, after={"state": "INACTIVE"})
        return True

    # -- existing rules -----------------------------------------------------------------------

    def _converge_existing(self, work: _Pass) -> None:
        spec, expression, ref, events = work.spec, work.expression, work.ref, work.events
        owned = work.owned
        placed = self.ledger.first_placed(self.audit, ref) if spec.lifetime is not None else {}
        changing: list[Rule] = []
        for did in work.selected:
            rule = owned.current(did, expression, spec.copies)
            if rule is None:
                continue
            if (rule.rse_expression, rule.copies) != (expression, spec.copies):
                changing.append(rule)
                continue
            priority = wanted_priority(work.catch_up, rule, spec.priority)
            changes = self._in_place_changes(rule, spec, work.now, placed.get(did), priority)
            if changes:
                changes = self._update_rule(work, rule, changes)
            if changes:
                work.touched = True
                drift = "lifetime" in changes and spec.lifetime is None
                catching_up = (
                    set(changes) == {"priority"}
                    and work.catch_up is not None
                    and spec.catch_up_priority() in {rule.priority, changes["priority"]}
                )
                message = "restored after a change behind Steward's back" if drift else ""
                self._record(
                    ref,
                    "rucio.rule.update",
                    rule.id,
                    before={**_rule_fields(rule), "priority": rule.priority},
                    after={k: str(v) for k, v in changes.items()},
                    message="catch-up archiving" if catching_up else message,
                )
                if not catching_up:
                    reason = "DriftRestored" if drift else "RuleUpdated"
                    events.append(
                        ("Normal", reason, f"{did}: updated {', '.join(sorted(changes))}")
                    )
        self._change(work, changing)

    def _change(self, work: _Pass, rules: Sequence[Rule]) -> None:
        """Change ``rules`` to the spec's copies and destination, behind the deletion gate.

        A change that only adds is made at once. One that may remove replicas from an RSE
        (`leaving_rses`) is judged by the gate first (`judge_change`), and only what it lets
        through is changed, after an intent naming the plan; the rest stays as it is
        (`_report_kept`) and is judged again next pass, so it is made once the protection
        ends. A crash anywhere repeats safely: a change already made has its rule at the
        target (nothing to change), one not yet made is judged again, and `change_rule`
        returns a replacement already heading to the target instead of making another.
        """
        spec, expression, ref = work.spec, work.expression, work.ref
        work.status["changeKept"] = None
        if not rules:
            return
        requester = f"{ref.kind}/{ref.namespace}/{ref.name}"
        verdict = self.judge_change(rules, expression, spec.copies, requester, work.tag)
        allowed = verdict.allowed()
        gated = [rule for rule in allowed if verdict.leaving[rule.id]]
        if gated and verdict.plan is not None:
            self._intent(
                ref,
                "rucio.rule.change",
                None,
                {
                    "plan": verdict.plan.hash,
                    "rse_expression": expression,
                    "copies": spec.copies,
                    "rules": [
                        {"id": r.id, "did": r.did, "leaving": sorted(verdict.leaving[r.id])}
                        for r in gated
                    ],
                },
            )
        for rule in allowed:
            try:
                new_id = self.rucio.change_rule(
                    rule.id, rse_expression=expression, copies=spec.copies
                )
            except RucioError as error:
                self._failed(ref, "rucio.rule.change", rule.id, error)
                raise
            self._record(
                ref,
                "rucio.rule.change",
                new_id,
                before={
                    "rule": rule.id,
                    "rse_expression": rule.rse_expression,
                    "copies": rule.copies,
                },
                after={"rse_expression": expression, "copies": spec.copies, "did": rule.did},
            )
            change = (
                f"{rule.did}: {rule.rse_expression} x{rule.copies} -> "
                f"{expression} x{spec.copies} (rule {new_id})"
            )
            work.events.append(("Normal", "RuleChanged", change))
        self._report_kept(work, verdict)

    def _report_kept(self, work: _Pass, verdict: ChangeVerdict) -> None:
        """Say which changes the gate keeps: status, Degraded, and once an Event and audit row.

        ``status.changeKept`` counts them and keeps a digest of what is kept and by what; the
        Event (reason ``ChangeProtected``, or ``DeletionFrozen`` for a freeze) and the audit
        record of the refusal (action ``rucio.rule.change``, result ``refused``) are written
        when the digest changes, not every pass; the Degraded condition says why every pass.
        """
        kept = verdict.kept()
        if not kept or verdict.plan is None:
            return
        spec, expression, ref = work.spec, work.expression, work.ref
        target = f"{expression} x{spec.copies}"
        digest = _digest(f"{rule.id} {target} {by} {why}" for rule, by, why in kept)
        work.status["changeKept"] = {"rules": len(kept), "digest": digest}
        counts = Counter(by for _, by, _ in kept)
        first, by, why = kept[0]
        message = (
            f"the deletion gate keeps {len(kept)} Rucio rules from changing to {target} "
            f"({', '.join(f'{k}={v}' for k, v in sorted(counts.items()))}); e.g. {first.did}: "
            f"{first.rse_expression} x{first.copies} -> {target} kept by {by}: {why}; "
            "they stay as they are until it lets them"
        )
        work.change_kept = message
        if (work.old.get("changeKept") or {}).get("digest") == digest:
            return  # kept as before: announced already (the condition still says why)
        frozen = verdict.plan.mode is not Mode.ACT
        work.events.append(("Warning", _FROZEN_REASON if frozen else _CHANGE_KEPT_REASON, message))
        self._note(
            ref,
            "rucio.rule.change",
            None,
            "refused",
            after={
                "plan": verdict.plan.hash,
                "mode": verdict.plan.mode.value,
                "rse_expression": expression,
                "copies": spec.copies,
                "rules": [
                    {
                        "id": rule.id,
                        "did": rule.did,
                        "rse_expression": rule.rse_expression,
                        "copies": rule.copies,
                        "leaving": sorted(verdict.leaving[rule.id]),
                        "keptBy": by,
                        "detail": why,
                    }
                    for rule, by, why in kept
                ],
            },
            message=message[:1000],
        )

    def _update_rule(self, work: _Pass, rule: Rule, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply in-place changes; return those made.

        Rucio refuses a new priority (``UnsupportedOperation``) when it cannot pass it on to
        transfers already handed to the transfer tool; the rule then keeps its priority (it is
        reported as not raised in ``status.catchUp.boosted``) and the other changes are made.
        """
        try:
            self.rucio.update_rule(rule.id, **changes)
        except RucioPermanentError as error:
            if "priority" not in changes or not refused_as_unsupported(error):
                raise
            work.unboosted.add(rule.id)
            rest = {k: v for k, v in changes.items() if k != "priority"}
            if rest:
                self.rucio.update_rule(rule.id, **rest)
            return rest
        return changes

    def _converge_share(self, work: _Pass) -> None:
        """Keep the activity's transfer limit into the destination at nominal or raised.

        Rucio's transfer limit of ``activity`` into ``destination`` is the activity's share
        there (its preparer holds requests beyond it as WAITING, its throttler releases them).
        Steward owns the limit a resource declares in ``catchUp.transfers``: nominal normally,
        up to twice that while catching up. Set only when it differs (a change behind
        Steward's back is put right), intent first.
        """
        plan = work.catch_up
        if plan is None or plan.transfers is None:
            return
        message = "catch-up archiving" if plan.active else "nominal share"
        self._set_share(work.ref, work.spec, plan.transfers, message)

    def _set_share(
        self, ref: ResourceRef, spec: ReplicationRuleSpec, wanted: int, message: str
    ) -> bool:
        """Set the activity's transfer limit into the destination unless it is ``wanted``.

        Audited intent first, then the result (or Rucio's refusal). True if it was changed.
        """
        expression, activity = canonical(spec.destination), spec.activity
        current = self.rucio.get_transfer_limit(expression, activity)
        before = current.max_transfers if current is not None else None
        if before == wanted:
            return False
        target = f"{activity}->{expression}"
        after = {"activity": activity, "rse_expression": expression, "max_transfers": wanted}
        self._intent(ref, "rucio.transferlimit.set", target, after)
        try:
            self.rucio.set_transfer_limit(expression, activity, wanted)
        except RucioError as error:
            self._failed(ref, "rucio.transferlimit.set", target, error)
            raise
        self._record(
            ref,
            "rucio.transferlimit.set",
            target,
            before={"max_transfers": before},
            after=after,
            message=message,
        )
        return True

    def _announce_catch_up(self, work: _Pass) -> None:
        """One Event when catch-up starts and one when it ends."""
        plan = work.catch_up
        if plan is None or not (plan.started or plan.ended):
            return
        share = f", transfer limit {plan.transfers}" if plan.transfers is not None else ""
        if plan.started:
            message = (
                f"{plan.backlog} rules not OK for longer than the catch-up threshold: "
                f"priority {plan.nominal_priority} -> {plan.priority}{share}"
            )
            work.events.append(("Normal", "CatchUpStarted", message))
        else:
            message = f"backlog drained: priority back to {plan.priority}{share}"
            work.events.append(("Normal", "CatchUpEnded", message))

    def _in_place_changes(
        self,
        rule: Rule,
        spec: ReplicationRuleSpec,
        now: datetime,
        first: datetime | None,
        priority: int,
    ) -> dict[str, Any]:
        """Fields Rucio can change in place that differ from the spec.

        With a lifetime, the rule expires ``lifetime`` after the DID's first placement
        (`PlacementLedger`), or after the rule's creation when Steward has no record of it.
        ``priority`` is the spec's, or the catch-up priority (`wanted_priority`).
        """
        changes: dict[str, Any] = {}
        if spec.lifetime is None:
            if rule.expires_at is not None and rule.child_rule_id is None:
                changes["lifetime"] = None
        else:
            expected = (first or rule.created_at or now) + spec.lifetime
            if rule.expires_at is None or abs(rule.expires_at - expected) > _LIFETIME_TOLERANCE:
                changes["lifetime"] = expected - now
        if rule.priority != priority:
            changes["priority"] = priority
        if (rule.activity or None) != spec.activity:
            changes["activity"] = spec.activity
        if rule.locked != spec.locked and rule.child_rule_id is None:
            changes["locked"] = spec.locked
        wanted_source = _source(spec)
        current_source = rule.source_replica_expression or None
        if current_source is not None:
            with contextlib.suppress(ValueError):  # unreadable: compare it as written
                current_source = canonical(current_source)
        if current_source != wanted_source:
            changes["source_replica_expression"] = wanted_source
        return changes

    def _gate_transfers(self, work: _Pass, *, allowed: bool) -> None:
        """Suspend this resource's rules outside the window or embargo; resume them in it.

        Use case 19: copying must not disturb prompt processing, so a rule is created only
        while transfers are allowed, and a rule still replicating when the window closes is
        SUSPENDED: Rucio's judge then queues no new transfer for it (the evaluator and the
        repairer skip suspended rules). Transfers already queued are left to finish: Rucio's
        only way to cancel them (``cancel_requests``) cancels the request of each file and
        marks STUCK the locks of *every* rule waiting for it, other accounts' included
        (``rucio.core.rule.update_rule``); a request is shared by all rules needing that file
        there, and Rucio has no per-rule cancel. Per-activity transfer limits (another
        candidate) need Rucio's preparer and throttler, leave queued transfers running too,
        and throttle every account using the activity. When the window reopens the rule is
        set to STUCK (this rule's own locks only), and judge-repairer queues what is missing,
        once a lock has been STUCK for two hours (Rucio's retry backoff). A SUSPENDED rule is
        resumed even if someone else suspended it: the declared state wins.
        """
        if work.spec.transfer_window is None and work.spec.not_before is None:
            return
        moving: Literal["SUSPENDED", "STUCK"] = "STUCK" if allowed else "SUSPENDED"
        wanted = {RuleState.SUSPENDED} if allowed else {RuleState.REPLICATING, RuleState.STUCK}
        changed = [r for r in work.owned.all() if r.state in wanted]
        if not changed:
            return
        action = "rucio.rule.suspend" if not allowed else "rucio.rule.resume"
        self._intent(work.ref, action, None, {"state": moving, "rules": [r.id for r in changed]})
        done = 0
        for rule in changed:
            try:
                self.rucio.update_rule(rule.id, state=moving)
            except RucioNotFoundError:
                continue  # gone since it was listed: nothing to pause
            except RucioError as error:
                self._failed(work.ref, action, rule.id, error)
                raise
            self._record(
                work.ref,
                action,
                rule.id,
                before={"state": rule.state.value},
                after={"state": moving, "did": rule.did},
            )
            done += 1
        reason = "TransfersPaused" if not allowed else "TransfersResumed"
        work.events.append(("Normal", reason, f"{done} rules set to {moving}"))

    # -- release ------------------------------------------------------------------------------

    def _release_deselected(self, work: _Pass, policy: DeletionPolicy) -> None:
        """Release the rules of DIDs no longer selected, behind the deselection brake.

        A metadata listing can come back short (a key renamed, a plugin changed, a listing cut
        off), so a DID missing from it is released only when the same set of DIDs is missing
        on two consecutive passes (``deselection`` in status remembers the set by digest).
        An explicit list is the spec itself and needs no second look. Then, if the release
        is larger than `ReleaseLimit` allows, it is held until `ANNOTATION_APPROVE_RELEASE`
        names its size.

        The rules are Rucio's answer now, never the shared snapshot's: the snapshot may still
        hold a rule removed behind Steward's back (`RuleSnapshot`), and counting it would
        make the release a smaller part of what the resource owns than it is. So a pass from
        the snapshot that finds rules to release lists the resource's own rules first (one
        call, on passes that release or wait to, only).
        """
        chosen = set(work.selected)
        work.status["deselection"] = None
        work.status["pendingRelease"] = 0
        work.status["releaseProtected"] = 0
        if work.from_snapshot and any(r.did not in chosen for r in work.owned.all()):
            work.owned = _Owned.of(self.rucio.list_rules(comment=work.tag))
            work.from_snapshot = False
        owned = work.owned.all()
        gone = [r for r in owned if r.did not in chosen]
        if not gone:
            return
        if work.spec.selector.dids is None:
            missing = {r.did for r in gone}
            seen = (work.old.get("deselection") or {}).get("digest")
            digest = _digest(missing)
            if seen != digest:
                work.status["deselection"] = {"dids": len(missing), "digest": digest}
                return
            work.status["deselection"] = {"dids": len(missing), "digest": digest}
        count = len(gone)
        if self.release_limit.holds(count, len(owned)):
            approval = (work.rule.metadata.annotations or {}).get(ANNOTATION_APPROVE_RELEASE)
            if approval != str(count):
                self._hold(work, count, len(owned), approval)
                return
            work.annotations[ANNOTATION_APPROVE_RELEASE] = None  # used once
        work.status["deselection"] = None
        events: list[tuple[str, str, str]] = []
        kept = self.release(gone, policy, work.ref, events, reason="deselected", tag=work.tag)
        work.status["releaseProtected"] = len(kept.rules)
        work.protected = kept.why
        if int(work.old.get("releaseProtected") or 0) == len(kept.rules):
            # Kept as before: announced already (the condition still says why).
            events = [e for e in events if e[1] not in {_PROTECTED_REASON, _FROZEN_REASON}]
        work.events.extend(events)

    def _hold(self, work: _Pass, count: int, owned: int, approval: str | None) -> None:
        work.status["pendingRelease"] = count
        if int(work.old.get("pendingRelease") or 0) == count:
            return  # already held and announced
        message = (
            f"{count} of {owned} Rucio rules would be released (their DIDs are no longer "
            f"selected); run kubectl annotate rr/{work.ref.name} -n {work.ref.namespace} "
            f"{ANNOTATION_APPROVE_RELEASE}={count} to go ahead"
        )
        if approval is not None:
            message += f" (the annotation names {approval})"
        work.events.append(("Warning", _HELD_REASON, message))

    def release(
        self,
        rules: Sequence[Rule],
        policy: DeletionPolicy,
        ref: ResourceRef,
        events: list[tuple[str, str, str]],
        *,
        reason: str,
        tag: str | None = None,
    ) -> Kept:
        """Give up ``rules``: delete them (Delete) or hand them over (Orphan). THE way out.

        Every rule Steward stops owning leaves through here: rules of deselected DIDs, a
        deleted resource's rules under either deletion policy. Delete goes through the
        facility's deletion gate (`steward.services.deletion`), like retention and OODS
        eviction: an intent a stopped operator left open is closed first, the gate's plan
        (`plan_release`) keeps every rule a protection covers and everything while a freeze
        covers it, and `DeletionGate.carry_out` records its intent, unlocks and deletes the
        rest (Rucio keeps a deleted rule up to an hour) and records the outcome. Each deleted
        rule is then marked `RELEASED_PREFIX`. Orphan removes nothing: it marks each rule
        `ORPHANED_PREFIX` and leaves it as it is. Do not delete or orphan a rule anywhere else.

        The release itself (rules, policy, reason) is audited as an intent before Rucio is
        asked, then each rule as it is done. A rule gone meanwhile is skipped. Returns the
        rules the gate kept (they stay owned) and why.
        """
        owner = tag or self.tag(ref)
        if policy is DeletionPolicy.DELETE:
            return self._delete(rules, ref, events, reason=reason, owner=owner)
        self._intent(
            ref,
            "rucio.rule.release",
            None,
            {"policy": policy.value, "reason": reason, "rules": [r.id for r in rules]},
        )
        done = 0
        for rule in rules:
            try:
                self.rucio.update_rule(rule.id, comment=ORPHANED_PREFIX + owner)
            except RucioNotFoundError:
                continue
            except RucioError as error:
                self._failed(ref, "rucio.rule.orphan", rule.id, error)
                raise
            self._record(
                ref, "rucio.rule.orphan", rule.id, before=_rule_fields(rule), message=reason
            )
            done += 1
        if done:
            events.append(("Normal", "RulesOrphaned", f"orphaned {done} Rucio rules"))
        return Kept()

    def _delete(
        self,
        rules: Sequence[Rule],
        ref: ResourceRef,
        events: list[tuple[str, str, str]],
        *,
        reason: str,
        owner: str,
    ) -> Kept:
        """Delete ``rules`` through the deletion gate; return what it kept."""
        gate = self.gate or DeletionGate(self.rucio, self.audit, actor=self.actor, clock=self.clock)
        recovered = gate.recover(ref)
        if recovered is not None:
            message = (
                f"release {recovered.plan} was interrupted: {len(recovered.carried_out)} rules "
                f"had gone, {len(recovered.abandoned)} are judged again"
            )
            events.append(("Warning", "IntentRecovered", message))
        requester = f"{ref.kind}/{ref.namespace}/{ref.name}"
        plan = self.plan_release(rules, requester, owner, reason=reason)
        if plan.mode is not Mode.ACT:
            message = f"{len(rules)} Rucio rules kept: {plan.reason}"
            events.append(("Warning", _FROZEN_REASON, message))
            return Kept(tuple(r.id for r in rules), message)
        kept = Kept()
        if plan.saved:
            counts = ", ".join(f"{name}={count}" for name, count in plan.protected().items())
            first = plan.saved[0]
            message = (
                f"{len(plan.saved)} of {len(rules)} Rucio rules kept by the deletion gate "
                f"({counts}); e.g. {first.candidate.did}: {first.detail}"
            )
            events.append(("Warning", _PROTECTED_REASON, message))
            kept = Kept(tuple(saved.candidate.key for saved in plan.saved), message)
        if not plan.removals:
            return kept
        self._intent(
            ref,
            "rucio.rule.release",
            None,
            {
                "policy": DeletionPolicy.DELETE.value,
                "reason": reason,
                "rules": [c.key for c in plan.removals],
                "plan": plan.hash,
            },
        )
        carried = gate.carry_out(plan, ref)
        by_id = {rule.id: rule for rule in rules}
        for rule_id in (*carried.removed, *carried.gone):
            try:
                self.rucio.update_rule(rule_id, comment=RELEASED_PREFIX + owner)
            except RucioNotFoundError:
                continue
            except RucioError as error:
                self._failed(ref, "rucio.rule.delete", rule_id, error)
                raise
        for rule_id in carried.removed:
            self._record(
                ref,
                "rucio.rule.delete",
                rule_id,
                before=_rule_fields(by_id[rule_id]),
                message=reason,
            )
        if carried.removed:
            events.append(("Normal", "RulesDeleted", f"deleted {len(carried.removed)} Rucio rules"))
        return kept

    def finalize(
        self,
        ref: ResourceRef,
        spec: ReplicationRuleSpec | None,
        status: Mapping[str, Any] | None = None,
        *,
        raw_spec: Mapping[str, Any] | None = None,
    ) -> list[tuple[str, str, str]]:
        """Carry out the deletion policy when the resource is deleted; return the Events.

        With a valid ``spec``, its policy applies (the default as decided in ``status``).
        When the spec no longer validates (``spec`` None), the last one acted on decides,
        through what its passes kept in ``status`` (``managementPolicy``, ``deletionPolicy``),
        and the invalid ``raw_spec`` may only make it safer: Delete only when both say Delete.
        Without any record, Orphan. The subscription is deactivated in every case.
        """
        known = status or {}
        events: list[tuple[str, str, str]] = []
        name = subscription_name(self.cluster_id, ref.uid or "")
        current = self.rucio.get_subscription(name)
        if current is not None and current.state != SUBSCRIPTION_INACTIVE:
            self._deactivate(ref, name)
            events.append(("Normal", "Unsubscribed", f"subscription {name} deactivated"))
        if spec is not None:
            management = spec.management_policy
            policy = self.deletion_policy(spec, known)[0]
        else:
            management = ManagementPolicy(known.get("managementPolicy") or "Manage")
            policy = _safer(known.get("deletionPolicy"), (raw_spec or {}).get("deletionPolicy"))
        if management is ManagementPolicy.OBSERVE:
            return events
        if spec is not None:
            self._restore_share(ref, spec, known.get("catchUp"), events)
        owned = self.rucio.list_rules(comment=self.tag(ref))
        if owned:
            reason = "resource deleted" + ("" if spec is not None else " (spec invalid)")
            kept = self.release(owned, policy, ref, events, reason=reason)
            if kept.rules:
                msg = (
                    f"{kept.why}; the resource stays until they may go (or until its "
                    "deletionPolicy is Orphan, which keeps the data)"
                )
                raise ReleaseRefusedError(msg)
        return events

    def _restore_share(
        self,
        ref: ResourceRef,
        spec: ReplicationRuleSpec,
        known: Mapping[str, Any] | None,
        events: list[tuple[str, str, str]],
    ) -> None:
        """Put a raised transfer limit back to nominal when the resource goes mid-catch-up.

        The limit is left at nominal, not removed: it is the share the facility declared for
        the activity, which other data of the activity may rely on.
        """
        catch_up = spec.catch_up
        if catch_up is None or catch_up.transfers is None or not (known or {}).get("active"):
            return
        message = "resource deleted while catching up: nominal share"
        if self._set_share(ref, spec, catch_up.transfers, message):
            events.append(
                ("Normal", "CatchUpEnded", f"transfer limit back to {catch_up.transfers}")
            )

    # -- publishing ---------------------------------------------------------------------------

    def _publish(self, work: _Pass, already: int) -> None:
        """Publish each dataset whose custodial copy is OK, and none before (004 sweeps).

        Publishing closes the dataset and attaches it to the published container: the
        container is the published set, so a dataset is visible to users exactly when its
        backup exists. Nothing is listed while every OK dataset is already published.
        """
        spec, expression = work.spec, work.expression
        assert spec.publish_to is not None  # noqa: S101 - the model requires it with publish
        backed_up = sorted(
            rule.did
            for did in work.selected
            if (rule := work.owned.current(did, expression, spec.copies)) is not None
            and rule.state is RuleState.OK
            and (rule.rse_expression, rule.copies) == (expression, spec.copies)
        )
        if len(backed_up) <= already and work.published is None:
            work.published = already
            return
        self.rucio.add_container(spec.publish_to)
        published = set(self.rucio.list_content(spec.publish_to))
        new = [did for did in backed_up if did not in published]
        if new:
            self._intent(work.ref, "rucio.did.publish", spec.publish_to, {"dids": new})
            try:
                for did in new:
                    self.rucio.close_collection(did)
                self.rucio.attach(spec.publish_to, new)
            except RucioError as error:
                self._failed(work.ref, "rucio.did.publish", spec.publish_to, error)
                raise
            self.audit.record_many(
                [
                    AuditRecord(
                        resource=work.ref,
                        action="rucio.did.publish",
                        actor=self.actor,
                        target=did,
                        after={"container": spec.publish_to, "closed": True},
                    )
                    for did in new
                ]
            )
            work.events.append(
                ("Normal", "Published", f"published {len(new)} datasets to {spec.publish_to}")
            )
        work.published = len(published | set(new))

    # -- status -------------------------------------------------------------------------------

    def _status(self, work: _Pass, gate_reason: str) -> dict[str, Any]:
        """The whole status: every field this kind writes, so none can go stale."""
        selected, owned, spec = work.selected, work.owned, work.spec
        expression, now = work.expression, work.now
        in_charge = [
            rule
            for did in selected
            if (rule := owned.current(did, expression, spec.copies)) is not None
        ]
        counts = Counter(rule.state.value for rule in in_charge)
        done = sum(
            1
            for r in in_charge
            if r.state is RuleState.OK and (r.rse_expression, r.copies) == (expression, spec.copies)
        )
        wanted = len(selected) - len(work.expired - {r.did for r in in_charge})
        missing = wanted - len(in_charge)
        stuck = counts.get(RuleState.STUCK.value, 0)
        kept = int((work.status.get("changeKept") or {}).get("rules") or 0)
        ready = done >= wanted
        observe = spec.management_policy is ManagementPolicy.OBSERVE
        if ready:
            reason, message = "AllRulesOK", f"{done} of {wanted} DIDs placed"
        elif missing and gate_reason:
            reason, message = "WaitingForTransferWindow", gate_reason
        elif missing and observe:
            reason, message = "Observing", f"{missing} selected DIDs have no rule (Observe)"
        elif work.deferred:
            reason = _BEHIND_REASON
            message = (
                f"{done} of {wanted} DIDs placed; rules of {work.deferred} wait for the next "
                f"passes (at most {self.max_rules_per_pass} created a pass)"
            )
        elif work.change_kept and done + kept >= wanted:
            reason, message = _CHANGE_KEPT_REASON, work.change_kept
        elif stuck:
            reason, message = "RulesStuck", f"{stuck} rules STUCK"
        else:
            reason, message = "Replicating", f"{done} of {wanted} DIDs placed"
        if work.expired:
            message += f"; {len(work.expired)} copies ended their lifetime"
        generation = work.ref.generation
        conditions = work.old.get("conditions")
        conditions = set_condition(
            conditions,
            condition(
                READY, status=ready, reason=reason, message=message, generation=generation, now=now
            ),
        )
        # A change the gate keeps waits for a protection to end: nothing is under way.
        progressing = not ready and not observe and reason != _CHANGE_KEPT_REASON
        conditions = set_condition(
            conditions,
            condition(
                PROGRESSING,
                status=progressing,
                reason=reason if progressing else "Converged",
                message=message if progressing else "",
                generation=generation,
                now=now,
            ),
        )
        degraded = self._degraded(work, stuck)
        conditions = set_condition(
            conditions,
            condition(
                DEGRADED,
                status=degraded[0] != "Healthy",
                reason=degraded[0],
                message=degraded[1],
                generation=generation,
                now=now,
            ),
        )
        conditions, catch_up = self._catch_up_status(work, conditions)
        kinds = Counter(seen["kind"] for seen in work.unowned.values())
        return {
            "observedGeneration": generation,
            "ownerTag": work.tag,
            "ruleIds": sorted(rule.id for rule in in_charge)[:STATUS_SAMPLE],
            "ruleCount": len(in_charge),
            "selected": len(selected),
            "expired": len(work.expired),
            "deferred": work.deferred,
            "counts": {state.value: counts.get(state.value, 0) for state in RuleState},
            "bytes": sum(rule.bytes or 0 for rule in in_charge),
            "published": work.published or 0,
            "foreign": kinds.get("foreign", 0),
            "shared": kinds.get("shared", 0),
            "unownedRules": {
                did: dict(seen) for did, seen in sorted(work.unowned.items())[:STATUS_SAMPLE]
            },
            "pendingRelease": 0,
            "releaseProtected": 0,
            "changeKept": None,
            "deselection": None,
            "subscription": None,
            "catchUp": catch_up,
            "selection": None,
            **work.status,
            "lastSyncTime": now.isoformat().replace("+00:00", "Z"),
            "conditions": conditions,
        }

    def _catch_up_status(
        self, work: _Pass, conditions: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Status ``catchUp`` and the ``CatchingUp`` condition (only with ``spec.catchUp``)."""
        plan, spec = work.catch_up, work.spec
        if spec.catch_up is None:
            return [c for c in conditions if c.get("type") != CATCHING_UP], None
        if plan is None:  # Observe: the backlog is reported, nothing is raised
            backlog = len(backlogged(work.owned.all(), spec, work.now))
            status: dict[str, Any] = {"active": False, "backlog": backlog, "boosted": 0}
            reason, message = "Observing", f"{backlog} rules in the backlog (Observe)"
        else:
            boosted = sum(
                1
                for rule in work.owned.all()
                if plan.active
                and rule.priority == plan.priority
                and rule.id not in work.unboosted
                and rule.state is not RuleState.OK
            )
            status = plan.status(boosted)
            share = f", transfer limit {plan.transfers}" if plan.transfers is not None else ""
            if plan.active:
                reason = "BacklogDraining"
                after = format_duration(spec.catch_up.after)
                message = (
                    f"{plan.backlog} rules not OK for longer than {after}: "
                    f"priority {plan.priority} (nominal {plan.nominal_priority}){share}"
                )
                if work.unboosted:
                    message += f"; Rucio kept the priority of {len(work.unboosted)} rules"
            else:
                reason = "Nominal"
                message = f"{plan.backlog} rules in the backlog; priority {plan.priority}{share}"
        updated = set_condition(
            conditions,
            condition(
                CATCHING_UP,
                status=bool(status["active"]),
                reason=reason,
                message=message,
                generation=work.ref.generation,
                now=work.now,
            ),
        )
        return updated, status

    def _degraded(self, work: _Pass, stuck: int) -> tuple[str, str]:
        held = int(work.status.get("pendingRelease") or 0)
        if held:
            message = (
                f"{held} Rucio rules of deselected DIDs wait for an acknowledgement: kubectl "
                f"annotate rr/{work.ref.name} -n {work.ref.namespace} "
                f"{ANNOTATION_APPROVE_RELEASE}={held}"
            )
            return _HELD_REASON, message
        if work.protected or work.change_kept:
            reason = _PROTECTED_REASON if work.protected else _CHANGE_KEPT_REASON
            return reason, "; ".join(m for m in (work.protected, work.change_kept) if m)
        foreign = [seen for seen in work.unowned.values() if seen["kind"] == "foreign"]
        shared = [seen for seen in work.unowned.values() if seen["kind"] == "shared"]
        if shared:
            return _SHARED_REASON, _unowned_message("shared", shared)
        if foreign:
            return _FOREIGN_REASON, _unowned_message("foreign", foreign)
        if stuck:
            return "RulesStuck", f"{stuck} rules STUCK"
        return "Healthy", ""

    # -- audit --------------------------------------------------------------------------------

    def _intent(self, ref: ResourceRef, action: str, target: str | None, after: Any) -> None:  # noqa: ANN401 - any JSON
        """Record what is about to be asked of Rucio, before it is asked."""
        self._note(ref, action, target, "intent", after=after)

    def _failed(
        self, ref: ResourceRef, action: str, target: str | None, error: BaseException
    ) -> None:
        """Record that Rucio refused (or could not be reached for) an intended action."""
        self._note(ref, action, target, "failure", message=str(error)[:1000])

    def _note(
        self,
        ref: ResourceRef,
        action: str,
        target: str | None,
        result: str,
        *,
        before: Any = None,  # noqa: ANN401 - any JSON
        after: Any = None,  # noqa: ANN401 - any JSON
        message: str = "",
    ) -> None:
        self.audit.record(
            AuditRecord(
                resource=ref,
                action=action,
                actor=self.actor,
                result=result,
                target=target,
                before=before,
                after=after,
                message=message,
            )
        )

    def _record(
        self,
        ref: ResourceRef,
        action: str,
        target: str | None,
        *,
        before: Any = None,  # noqa: ANN401 - any JSON
        after: Any = None,  # noqa: ANN401 - any JSON
        message: str = "",
    ) -> None:
        """Record one action done in Rucio (and count it)."""
        self._note(ref, action, target, "success", before=before, after=after, message=message)
        EXTERNAL_ACTIONS.labels("ReplicationRule", action).inc()


def _safer(recorded: object, declared: object) -> DeletionPolicy:
    """Delete only when the last policy acted on and the (invalid) spec both say Delete."""
    delete = DeletionPolicy.DELETE.value
    if recorded == delete and declared in {delete, None}:
        return DeletionPolicy.DELETE
    return DeletionPolicy.ORPHAN


def _unowned(rule: Rule, tag: str) -> dict[str, str]:
    """How a rule this resource must leave alone is remembered (status ``unownedRules``)."""
    comment = rule.comment or ""
    well_formed = len(comment) == TAG_LENGTH and comment.startswith(TAG_PREFIX)
    legacy = re.fullmatch(r"steward:[^/\s]+/[^/\s]+", comment) is not None
    kind = "shared" if (well_formed or legacy) and comment != tag else "foreign"
    return {"rule": rule.id, "owner": comment, "kind": kind}


def _unowned_message(kind: str, found: Sequence[Mapping[str, str]]) -> str:
    if kind == "shared":
        owners = ", ".join(sorted({seen["owner"] for seen in found}))
        return (
            f"{len(found)} DIDs already have this rule, owned by another Steward resource "
            f"({owners}; kubectl get rr -A -o custom-columns=NAME:.metadata.name,"
            "TAG:.status.ownerTag shows which); it is left to its owner"
        )
    rules = ", ".join(sorted(seen["rule"] for seen in found)[:5])
    return (
        f"{len(found)} DIDs already have this rule, not made by this resource (rules {rules}"
        f"{'...' if len(found) > 5 else ''}): reported, never changed or released"  # noqa: PLR2004
    )


def _retagged(rule: Rule, tag: str) -> Rule:
    return replace(rule, comment=tag)


def _time(value: object) -> datetime | None:
    """A time status keeps (RFC 3339), or None when absent or unreadable (then: list all)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return _aware(parsed)


def _stamp(value: datetime | None) -> str | None:
    """A time as status writes it (RFC 3339, UTC, ``Z``)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _rule_fields(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "did": rule.did,
        "rse_expression": rule.rse_expression,
        "copies": rule.copies,
        "state": rule.state.value,
        "expires_at": _iso(rule.expires_at),
    }
