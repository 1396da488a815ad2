"""OODSCache reconciliation: the Base cache of recent raw data, realised with Rucio rules.

LDM-230 2.6 and the tech note on Science Pipelines in observatory operations: the OODS keeps
an updating window of recently acquired data ("last week's raw data") plus data Observatory
Operations names (current master calibrations), exported read-only in a predictable tree.
ctrl_oods cleans it today by age alone, with no dry run, capacity trigger, in-use check or
metrics, and deletes files before their registry entries. Here the cache is Rucio rules at the
cache RSE, all carrying the cache's owner tag:

- new data: a Rucio subscription creates a rule with lifetime = window for each new DID of the
  cache's scope, data types and instruments; existing DIDs still in the window are backfilled
  with the rest of their window as lifetime;
- pins: the DID's rule has no lifetime (one rule per DID and RSE: Rucio refuses a second), and
  gets back the rest of its window when the pin ends;
- protections Rucio must honour on its own (a legal hold, a lock, a campaign reading the data)
  are mirrored as ``locked`` on the rule: judge-cleaner never removes a locked rule, expired or
  not, so the window's lifetime cannot remove held data between two cycles;
- eviction: above ``highWatermark`` the oldest unpinned data goes first, down to
  ``lowWatermark`` and no further (hysteresis, as XRootD's cache and kubelet's image GC), by
  shortening lifetimes through the deletion gate; data past the window that Rucio has not
  removed (a lifetime changed by hand, a lock just lifted) goes the same way;
- at ``floorWatermark`` the cache refuses new placements (cachefilesd's third level): the
  subscription excludes every name and nothing is backfilled, with a condition saying so;
- the reaper deletes replicas by the RSE's usage source; without one it silently deletes only
  obsolete replicas, so a cache RSE without its usage source raises a condition and an Event.

Fill is what this cache's rules hold (the DIDs' bytes), not the storage's own usage report.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from steward.exceptions import RucioPermanentError
from steward.models.oods import OODSCache, OODSCacheSpec
from steward.observability import EXTERNAL_ACTIONS
from steward.services import selection
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.conditions import DEGRADED, PROGRESSING, READY, condition, set_condition
from steward.services.deletion import (
    PLAN_SHOWN,
    SHOWING,
    Candidate,
    DeletionGate,
    DeletionPlan,
    DeletionRequest,
    Mode,
    Operation,
    Protection,
    Protections,
    human_bytes,
    plan_deletion,
    shown_first,
)
from steward.services.ownership import owner_tag, subscription_name
from steward.services.protections import ClusterFacts, candidate_of, protections_of, with_sizes
from steward.services.site import Outcome
from steward.storage.rucio import RucioStorage, Rule, RuleSpec, RuleState, SubscriptionSpec

__all__ = [
    "PLACEMENTS_REFUSED",
    "USAGE_SOURCE_MISSING",
    "CacheView",
    "OODSService",
    "day_obs",
    "export_path",
    "preview_plan",
]

PLACEMENTS_REFUSED: Final = "PlacementsRefused"
"""Condition: the cache is at its floor and refuses new data."""
USAGE_SOURCE_MISSING: Final = "UsageSourceMissing"
"""Condition: the cache RSE has no usage source, so the reaper cannot free space by need."""

_EXPORT_SAMPLE: Final = 10
_EXPORT_DATASETS: Final = 3
_LIFETIME_QUANTUM: Final = timedelta(minutes=15)
"""Backfill lifetimes are rounded up to this, so a few calls place a night's data."""
_MIRRORED: Final = frozenset(
    {
        Protection.LEGAL_HOLD,
        Protection.COMPLIANCE_LOCK,
        Protection.GOVERNANCE_LOCK,
        Protection.CAMPAIGN_INPUT,
        Protection.FAILED_CAMPAIGN_REVIEW,
    }
)
"""Protections mirrored into Rucio as ``locked`` on the cache's rules."""
_DAY_OBS_OFFSET: Final = timedelta(hours=12)
"""Rubin's observing day: the date in UTC-12h, so a night's data shares one ``day_obs``."""


def day_obs(moment: datetime) -> str:
    """The observing day of a moment, ``YYYYMMDD`` (the date twelve hours earlier, in UTC)."""
    return (moment.astimezone(UTC) - _DAY_OBS_OFFSET).strftime("%Y%m%d")


def export_path(
    spec: OODSCacheSpec, file_did: str, dataset_meta: Mapping[str, Any]
) -> tuple[str, list[str]]:
    """Where a file appears in the export, and the layout keys its dataset lacks.

    ``name`` is the file's name; ``day_obs`` falls back to the observing day of the dataset's
    creation; every other key comes from the dataset's metadata. With a key missing the path
    is empty: a guessed path would put the file where nobody looks.
    """
    assert spec.export is not None  # noqa: S101 - callers check
    values: dict[str, Any] = {k: v for k, v in dataset_meta.items() if v is not None}
    values["name"] = file_did.partition(":")[2]
    created = dataset_meta.get("created_at")
    if "day_obs" not in values and isinstance(created, datetime):
        values["day_obs"] = day_obs(created)
    keys = [key for _, key, _, _ in string.Formatter().parse(spec.export.layout) if key]
    missing = sorted({key for key in keys if key not in values})
    if missing:
        return "", missing
    relative = spec.export.layout.format_map(values)
    return f"{spec.export.root.rstrip('/')}/{relative}", []


def _anchored(values: Iterable[str]) -> list[str]:
    """Regexes matching exactly these values (the transmogrifier uses ``re.match``)."""
    return [f"^{re.escape(value)}$" for value in values]


def _quantized(lifetime: timedelta) -> timedelta:
    """A backfill lifetime rounded up to `_LIFETIME_QUANTUM`.

    DIDs created within one quantum share a lifetime, so one Rucio call places them all.
    """
    quanta = -(-lifetime // _LIFETIME_QUANTUM)
    return max(quanta, 1) * _LIFETIME_QUANTUM


def _expiring(rule: Rule, now: datetime) -> bool:
    """Whether the rule has expired (the gate expired it, or its window ended).

    Unlike elsewhere, a rule expiring within Rucio's soft-deletion hour still counts: the
    cache's rules all expire at their window's end, and the last hour of the window is in it.
    """
    return rule.expires_at is not None and rule.expires_at <= now


@dataclass
class CacheView:
    """What one cycle knows about a cache: its rules, its selection, its pins. Reads only."""

    spec: OODSCacheSpec
    now: datetime
    live: list[Rule]
    """This cache's rules that are not expiring, one per DID."""
    created: dict[str, datetime]
    """Creation time of each DID the cycle looked at (live, pinned, in the window)."""
    sizes: dict[str, int]
    """Bytes of each DID the cycle looked at."""
    pinned: set[str]
    """DIDs pinned now."""
    missing_pins: list[str]
    """Pinned DIDs Rucio does not know."""
    in_window: list[str]
    """Selected DIDs created within the window, newest first."""
    selection_refused: str = ""
    """Why Rucio refused to select the cache's data (no custom metadata), or empty."""

    @property
    def capacity(self) -> int:
        """The cache's capacity in bytes."""
        return self.spec.capacity

    def held_bytes(self, rules: Iterable[Rule]) -> int:
        """Bytes of the DIDs of ``rules``."""
        return sum(rule.bytes or self.sizes.get(rule.did, 0) for rule in rules)

    def age(self, rule: Rule) -> datetime:
        """When the rule's data was created (the rule's own creation if unknown)."""
        return self.created.get(rule.did) or rule.created_at or self.now


def read_cache(rucio: RucioStorage, spec: OODSCacheSpec, tag: str, now: datetime) -> CacheView:
    """List the cache's rules, its pins and the DIDs in its window (three kinds of listing)."""
    rules = with_sizes(rucio, [r for r in rucio.list_rules(comment=tag) if not _expiring(r, now)])
    live: dict[str, Rule] = {}
    for rule in sorted(rules, key=lambda r: r.id):
        live.setdefault(rule.did, rule)
    pinned_wanted: set[str] = set()
    for pin in spec.pins:
        if pin.until is not None and pin.until <= now:
            continue
        pinned_wanted.update(selection.select(rucio, pin.selector))
    refused = ""
    try:
        selected = _select(rucio, spec, now - spec.window)
    except RucioPermanentError as error:
        if "InvalidMetadata" not in str(error):
            raise
        # A Rucio without custom metadata (SQLite) refuses the instrument key: pins and what
        # the cache holds still converge, and status says why nothing new is selected.
        selected = set()
        refused = (
            f"Rucio refuses to select by instrument ({error}); custom DID metadata needs "
            "Rucio's JSON metadata plugin (PostgreSQL, Oracle or MySQL)"
        )
    metadata = rucio.dids_metadata({*live, *pinned_wanted, *selected})
    created = {did: meta["created_at"] for did, meta in metadata.items() if meta.get("created_at")}
    sizes = {did: int(meta.get("bytes") or 0) for did, meta in metadata.items()}
    start = now - spec.window
    in_window = sorted(
        (did for did in selected if did in created and created[did] >= start),
        key=lambda did: (created[did], did),
        reverse=True,
    )
    looked_at = {*in_window, *pinned_wanted}
    sizes.update(rucio.resolved_bytes(did for did in looked_at if did in sizes and not sizes[did]))
    return CacheView(
        spec=spec,
        now=now,
        live=list(live.values()),
        created=created,
        sizes=sizes,
        pinned={did for did in pinned_wanted if did in metadata},
        missing_pins=sorted(did for did in pinned_wanted if did not in metadata),
        in_window=in_window,
        selection_refused=refused,
    )


def _select(rucio: RucioStorage, spec: OODSCacheSpec, since: datetime) -> set[str]:
    """DIDs of the cache's scope and data types, from its instruments, created since ``since``.

    Rucio's ``created_after`` filter keeps the listing (and the metadata looked up for it)
    to one window of data rather than every DID of the scope.
    """
    everything = "*" in spec.instruments
    created = {"created_after": since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")}
    selected: set[str] = set()
    for data_type in spec.data_types:
        if everything:
            selected.update(rucio.list_dids(spec.scope, {"datatype": data_type, **created}))
            continue
        for instrument in spec.instruments:
            match = {"datatype": data_type, "instrument": instrument, **created}
            selected.update(rucio.list_dids(spec.scope, match))
    return selected - set(spec.exclude)


@dataclass(frozen=True)
class _Decision:
    """What a cycle decided about eviction."""

    plan: DeletionPlan
    survey: DeletionPlan
    """The gate's verdict on every unpinned rule (what each protection saves)."""
    evicting: bool
    target: int
    """Bytes the cache should hold after the cycle."""


def _decide(
    view: CacheView,
    request_for: Callable[[Sequence[Candidate]], DeletionRequest],
    protections: Protections,
    *,
    was_evicting: bool,
) -> _Decision:
    """Window expiry and watermark eviction, oldest unpinned first, through the gate."""
    spec, now = view.spec, view.now
    start = now - spec.window
    unpinned = sorted(
        (rule for rule in view.live if rule.did not in view.pinned),
        key=lambda r: (view.age(r), r.id),
    )
    rses = frozenset({spec.rse})
    past = [
        candidate_of(rule, rses, "Window", created_at=view.age(rule))
        for rule in unpinned
        if view.age(rule) < start
    ]
    others = [
        candidate_of(rule, rses, "Capacity", created_at=view.age(rule))
        for rule in unpinned
        if view.age(rule) >= start
    ]
    survey = plan_deletion(request_for([*past, *others]), protections, now=now)
    allowed = {c.key for c in survey.removals}
    held = view.held_bytes(view.live)
    after_window = held - sum(c.bytes for c in past if c.key in allowed)
    high = spec.high_watermark * view.capacity
    low = spec.low_watermark * view.capacity
    evicting = after_window > high or (was_evicting and after_window > low)
    chosen: list[Candidate] = []
    remaining = after_window
    if evicting:
        for candidate in others:
            if remaining <= low:
                break
            if candidate.key in allowed:
                chosen.append(candidate)
                remaining -= candidate.bytes
    plan = plan_deletion(request_for([*past, *chosen]), protections, now=now)
    return _Decision(plan, survey, evicting and remaining > low, int(remaining))


def preview_plan(
    rucio: RucioStorage,
    cache: OODSCache,
    protections: Protections,
    *,
    cluster_id: str,
    now: datetime,
    was_evicting: bool = False,
) -> DeletionPlan:
    """Compute what a cache's next cycle would evict or expire; writes nothing.

    ``steward plan`` shows it for a changed OODSCache (a smaller capacity, a shorter window).
    A cache not yet created in the cluster (no UID) owns no rules, so its plan is empty.
    """
    uid = cache.metadata.uid
    if not uid:
        return plan_deletion(
            DeletionRequest(_requester(cache), Operation.EXPIRE, ()), protections, now=now
        )
    tag = owner_tag(cluster_id, uid)
    view = read_cache(rucio, cache.spec, tag, now)
    return _decide(
        view,
        lambda candidates: DeletionRequest(
            _requester(cache), Operation.EXPIRE, candidates, own_tags=frozenset({tag})
        ),
        protections,
        was_evicting=was_evicting,
    ).plan


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _progress(work: _Cycle, *, waiting: int) -> str:
    """The reason of the cache's Progressing condition."""
    if work.showing:
        return PLAN_SHOWN
    return "Placing" if waiting or work.placed else "Converged"


def _requester(cache: OODSCache) -> str:
    return f"OODSCache/{cache.metadata.namespace}/{cache.metadata.name}"


@dataclass
class _Cycle:
    """Work of one reconcile: what was read, decided and done, and what to report."""

    cache: OODSCache
    ref: ResourceRef
    tag: str
    view: CacheView
    protections: Protections
    events: list[tuple[str, str, str]] = field(default_factory=list)
    placed: int = 0
    showing: bool = False
    """The eviction plan is shown this pass, carried out from the next (`shown_first`)."""


@dataclass
class OODSService:
    """Reconciles OODSCache resources against Rucio."""

    rucio: RucioStorage
    audit: AuditService
    gate: DeletionGate
    cluster_id: str
    actor: str = "steward-operator"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def reconcile(
        self,
        cache: OODSCache,
        ref: ResourceRef,
        facts: ClusterFacts,
        old_status: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Converge the cache's rules, evict if above the high watermark; return its status.

        Raises
        ------
        TransientError
            Rucio is unreachable: nothing is decided, the caller retries with backoff.
        PermanentError
            Rucio refuses the cache's selection (e.g. the ``instrument`` key on a Rucio
            without custom metadata) or its RSE.
        """
        assert ref.uid is not None  # noqa: S101 - resources from the API server have one
        now = self.clock()
        old = dict(old_status or {})
        tag = owner_tag(self.cluster_id, ref.uid)
        spec = cache.spec
        protections = protections_of(facts, self.rucio, now=now)
        work = _Cycle(cache, ref, tag, read_cache(self.rucio, spec, tag, now), protections)
        recovered = self.gate.recover(ref)
        if recovered is not None:
            message = (
                f"eviction {recovered.plan} was interrupted; {len(recovered.abandoned)} rules "
                "are judged again"
            )
            work.events.append(("Warning", "IntentRecovered", message))
        decision = _decide(
            work.view,
            lambda candidates: DeletionRequest(
                _requester(cache), Operation.EXPIRE, candidates, own_tags=frozenset({tag})
            ),
            protections,
            was_evicting=bool(old.get("evicting")),
        )
        evicted = self._evict(work, decision.plan, old)
        kept = [rule for rule in work.view.live if rule.id not in evicted]
        held = work.view.held_bytes(kept)
        refused = held >= spec.floor_watermark * spec.capacity
        self._ensure_subscription(work, refused=refused)
        self._converge_rules(work, kept, held, refused=refused)
        if work.placed:
            listed = self.rucio.list_rules(comment=tag)
            kept = with_sizes(self.rucio, [r for r in listed if not _expiring(r, now)])
        self._mirror_locks(work, kept)
        usage = self._usage_source_missing(spec.rse)
        return Outcome(
            self._status(work, decision, kept, evicted, old, refused=refused, usage=usage),
            work.events,
        )

    def finalize(self, cache: OODSCache, ref: ResourceRef) -> list[tuple[str, str, str]]:
        """Let a deleted cache go: stop placing, and give pinned data a window's lifetime.

        Nothing is removed at once: rules with a lifetime keep it, pinned ones get one
        window, so Rucio removes the cache's content as the window would have. Rules locked
        for a protection stay locked (judge-cleaner keeps them) until someone unlocks them.
        """
        assert ref.uid is not None  # noqa: S101
        now = self.clock()
        tag = owner_tag(self.cluster_id, ref.uid)
        name = subscription_name(self.cluster_id, ref.uid)
        events: list[tuple[str, str, str]] = []
        current = self.rucio.get_subscription(name)
        if current is not None and current.filter.get("excluded_pattern") != ".*":
            stopped = SubscriptionSpec(
                name=name,
                filter={**current.filter, "excluded_pattern": ".*"},
                rules=[
                    RuleSpec(rse_expression=cache.spec.rse, lifetime=cache.spec.window, comment=tag)
                ],
                comments=tag,
            )
            self._record(ref, "rucio.subscription.update", self.rucio.add_subscription(stopped))
            events.append(("Normal", "SubscriptionStopped", f"subscription {name} places nothing"))
        pinned = [
            rule
            for rule in self.rucio.list_rules(comment=tag)
            if rule.expires_at is None and not _expiring(rule, now)
        ]
        for rule in pinned:
            self.rucio.update_rule(rule.id, lifetime=cache.spec.window)
            self._record(
                ref,
                "rucio.rule.update",
                rule.id,
                after={"lifetime": int(cache.spec.window.total_seconds())},
                message="cache deleted: pinned data expires after one window",
            )
        if pinned:
            events.append(
                ("Normal", "PinsReleased", f"{len(pinned)} pinned rules expire after one window")
            )
        return events

    # -- writes -------------------------------------------------------------------------------

    def _evict(self, work: _Cycle, plan: DeletionPlan, old: Mapping[str, Any]) -> set[str]:
        """Carry the plan out through the gate; return the ids of the rules it expired.

        A new or changed cache only shows its plan on its first pass (`shown_first`).
        """
        if plan.mode is not Mode.ACT or not plan.removals:
            if plan.mode is Mode.FROZEN and plan.removals:
                work.events.append(("Warning", "DeletionFrozen", plan.reason))
            return set()
        if not shown_first(old, work.ref.generation):
            work.showing = True
            work.events.append(("Normal", PLAN_SHOWN, f"eviction {SHOWING}: {plan.summary()}"))
            return set()
        carried = self.gate.carry_out(plan, work.ref)
        reasons = {c.reason for c in plan.removals}
        verb = "Evicted" if "Capacity" in reasons else "WindowExpired"
        message = (
            f"expired {len(carried.removed)} rules of {plan.dids} DIDs "
            f"({human_bytes(plan.bytes)}), oldest first"
        )
        work.events.append(("Normal", verb, message))
        return {c.key for c in plan.removals}

    def _ensure_subscription(self, work: _Cycle, *, refused: bool) -> None:
        """New data of the scope, data types and instruments: a rule with lifetime = window.

        At the floor the filter excludes every name (``excluded_pattern: .*``), so new DIDs
        are passed over, not placed; the backfill places those still in the window once the
        cache is below its floor again. Declared exclusions are an ``excluded_pattern`` too.
        """
        spec = work.cache.spec
        assert work.ref.uid is not None  # noqa: S101
        name = subscription_name(self.cluster_id, work.ref.uid)
        scope_filter: dict[str, Any] = {
            "scope": [f"^{re.escape(spec.scope)}$"],
            "did_type": ["DATASET"],
            "datatype": _anchored(spec.data_types),
        }
        if "*" not in spec.instruments:
            scope_filter["instrument"] = _anchored(spec.instruments)
        excluded = [
            did.partition(":")[2] for did in spec.exclude if did.startswith(spec.scope + ":")
        ]
        if refused:
            scope_filter["excluded_pattern"] = ".*"
        elif excluded:
            scope_filter["excluded_pattern"] = "^(" + "|".join(map(re.escape, excluded)) + ")$"
        wanted = SubscriptionSpec(
            name=name,
            filter=scope_filter,
            rules=[RuleSpec(rse_expression=spec.rse, lifetime=spec.window, comment=work.tag)],
            comments=work.tag,
        )
        current = self.rucio.get_subscription(name)
        if (
            current is not None
            and current.filter == dict(wanted.filter)
            and current.rules == [r.subscription_rule() for r in wanted.rules]
        ):
            return
        subscription_id = self.rucio.add_subscription(wanted)
        action = "rucio.subscription.add" if current is None else "rucio.subscription.update"
        self._record(work.ref, action, subscription_id, after=wanted.client_options())
        if refused:
            work.events.append(
                ("Warning", PLACEMENTS_REFUSED, "new data is not placed: the cache is at its floor")
            )

    def _converge_rules(
        self, work: _Cycle, kept: Sequence[Rule], held_bytes: int, *, refused: bool
    ) -> None:
        """Converge the rules the cache keeps, and backfill the window.

        Pins lose their lifetime, the rest keep their window; DIDs in the window (and pinned
        ones) without a rule are placed, newest first, while the fill stays below the floor.
        """
        view, spec = work.view, work.cache.spec
        by_did = {rule.did: rule for rule in kept}
        self._lifetimes(work, kept)
        if refused:
            return
        floor = spec.floor_watermark * spec.capacity
        room = floor - held_bytes
        placing: list[tuple[str, timedelta | None]] = []
        for did in sorted(view.pinned - set(by_did)):
            placing.append((did, None))
            room -= view.sizes.get(did, 0)
        for did in view.in_window:
            if did in by_did or did in view.pinned:
                continue
            size = view.sizes.get(did, 0)
            if size > room:
                continue
            placing.append((did, _quantized(view.created[did] + spec.window - view.now)))
            room -= size
        lifetimes = {lifetime for _, lifetime in placing}
        for lifetime in sorted(lifetimes, key=lambda x: timedelta.max if x is None else x):
            dids = [did for did, wanted in placing if wanted == lifetime]
            added = self.rucio.add_rules(
                dids, RuleSpec(rse_expression=spec.rse, lifetime=lifetime, comment=work.tag)
            )
            self._record_many(work.ref, "rucio.rule.add", added.rule_ids, lifetime)
            work.placed += len(added.created)
        if work.placed:
            work.events.append(("Normal", "Placed", f"placed {work.placed} DIDs in the cache"))

    def _lifetimes(self, work: _Cycle, kept: Sequence[Rule]) -> None:
        """Pinned rules lose their lifetime; an unpinned rule without one gets its window's rest.

        A lifetime already set is left alone (the subscription or the backfill set it): data
        kept past its window by a lifetime changed by hand is expired by the gate instead.
        """
        view, spec = work.view, work.cache.spec
        for rule in kept:
            wanted: timedelta | None
            if rule.did in view.pinned:
                if rule.expires_at is None:
                    continue
                wanted = None
            else:
                if rule.expires_at is not None:
                    continue
                wanted = view.age(rule) + spec.window - view.now
                if wanted <= timedelta(0):
                    continue  # past the window: the gate decides (see _decide)
                wanted = _quantized(wanted)
            self.rucio.update_rule(rule.id, lifetime=wanted)
            self._record(
                work.ref,
                "rucio.rule.update",
                rule.id,
                before={"expires_at": rule.expires_at.isoformat() if rule.expires_at else None},
                after={"lifetime": None if wanted is None else int(wanted.total_seconds())},
                message="pinned" if wanted is None else "unpinned: the rest of its window",
            )

    def _mirror_locks(self, work: _Cycle, kept: Sequence[Rule]) -> None:
        """Lock the rules of data a hold, a lock or a running campaign protects; unlock others.

        judge-cleaner never removes a locked rule, so the window's lifetime cannot remove
        protected data between two cycles, nor while the operator is down.
        """
        protected = self._protected(work, kept)
        for rule in kept:
            wanted = rule.did in protected
            if rule.locked == wanted:
                continue
            self.rucio.update_rule(rule.id, locked=wanted)
            self._record(
                work.ref,
                "rucio.rule.lock" if wanted else "rucio.rule.unlock",
                rule.id,
                after={"locked": wanted},
                message=protected.get(rule.did, "protection lifted"),
            )

    def _protected(self, work: _Cycle, kept: Sequence[Rule]) -> dict[str, str]:
        """DIDs among ``kept`` whose removal a protection stops now, with the protection."""
        protections, now = work.protections, work.view.now
        rses = frozenset({work.cache.spec.rse})
        probe = [candidate_of(rule, rses, "Window") for rule in kept]
        survey = plan_deletion(
            DeletionRequest(
                _requester(work.cache),
                Operation.EXPIRE,
                probe,
                own_tags=frozenset({work.tag}),
                dry_run=True,
            ),
            Protections(
                legal_holds=protections.legal_holds,
                compliance_locks=protections.compliance_locks,
                governance_locks=protections.governance_locks,
                campaigns=protections.campaigns,
            ),
            now=now,
        )
        return {
            s.candidate.did: f"{s.protection.value}: {s.detail}"
            for s in survey.saved
            if s.protection in _MIRRORED
        }

    def _usage_source_missing(self, rse: str) -> str:
        """Why the reaper cannot free space at the cache by need, or empty.

        The reaper reads the RSE's used space from the usage source its attribute
        ``source_for_used_space`` names (``storage`` by default); without that source it
        deletes only obsolete replicas, silently, however full the cache is.
        """
        source = str(self.rucio.rse_attributes(rse).get("source_for_used_space") or "storage")
        if source in self.rucio.rse_usage(rse):
            return ""
        return (
            f"RSE {rse} has no usage from source {source!r}: Rucio's reaper then deletes only "
            "obsolete replicas, whatever the fill (set_rse_usage from a storage probe)"
        )

    def _status(
        self,
        work: _Cycle,
        decision: _Decision,
        kept: Sequence[Rule],
        evicted: set[str],
        old: Mapping[str, Any],
        *,
        refused: bool,
        usage: str,
    ) -> dict[str, Any]:
        """The cache's status after one cycle, and the Events of changed conditions."""
        view, spec, plan = work.view, work.cache.spec, decision.plan
        held = view.held_bytes(kept)
        unpinned = [rule for rule in kept if rule.did not in view.pinned]
        oldest = min((view.age(rule) for rule in unpinned), default=None)
        acted = bool(evicted)
        status: dict[str, Any] = {
            "observedGeneration": work.ref.generation,
            "files": sum(r.locks_ok + r.locks_replicating + r.locks_stuck for r in kept),
            "bytes": held,
            "capacity": spec.capacity,
            "fill": round(held / spec.capacity, 6) if spec.capacity else 0.0,
            "oldestItem": _time(oldest) if oldest else None,
            "pinned": sum(1 for rule in kept if rule.did in view.pinned),
            "evicting": decision.evicting,
            "placements": "Refused" if refused else "Open",
            "evictedLastCycle": plan.dids if acted else 0,
            "reclaimedBytes": plan.bytes if acted else 0,
            "protected": decision.survey.protected(),
            "exportSample": self._export_sample(spec, kept),
            "lastSyncTime": _time(view.now),
            "conditions": self._conditions(work, kept, old, refused=refused, usage=usage),
        }
        last = _time(view.now) if acted else old.get("lastEvictionTime")
        if last is not None:
            status["lastEvictionTime"] = last
        return {key: value for key, value in status.items() if value is not None}

    def _export_sample(self, spec: OODSCacheSpec, kept: Sequence[Rule]) -> list[dict[str, Any]]:
        """Where some of the cached files appear in the export (a few datasets' files)."""
        if spec.export is None or not kept:
            return []
        datasets = sorted({rule.did for rule in kept})[:_EXPORT_DATASETS]
        metadata = self.rucio.dids_metadata(datasets, custom=True)
        sample: list[dict[str, Any]] = []
        for dataset in datasets:
            for file in sorted(self.rucio.list_files(dataset), key=lambda file: file.did):
                path, missing = export_path(spec, file.did, metadata.get(dataset, {}))
                entry: dict[str, Any] = {"did": file.did, "path": path}
                if missing:
                    entry["missing"] = missing
                sample.append(entry)
                if len(sample) >= _EXPORT_SAMPLE:
                    return sample
        return sample

    def _conditions(
        self,
        work: _Cycle,
        kept: Sequence[Rule],
        old: Mapping[str, Any],
        *,
        refused: bool,
        usage: str,
    ) -> list[dict[str, Any]]:
        now, generation = work.view.now, work.ref.generation
        previous = old.get("conditions")
        stuck = sum(1 for rule in kept if rule.state is RuleState.STUCK)
        waiting = sum(1 for rule in kept if rule.state is not RuleState.OK)
        missing = work.view.missing_pins
        if stuck:
            ready = (False, "RulesStuck", f"{stuck} rules STUCK")
        elif waiting:
            ready = (False, "Placing", f"{waiting} of {len(kept)} DIDs not yet in the cache")
        else:
            ready = (True, "Cached", f"{len(kept)} DIDs in the cache")
        flags = [
            (READY, *ready),
            (
                PROGRESSING,
                bool(waiting) or work.placed > 0 or work.showing,
                _progress(work, waiting=waiting),
                f"eviction {SHOWING}" if work.showing else "",
            ),
            (
                PLACEMENTS_REFUSED,
                refused,
                "AtFloor" if refused else "BelowFloor",
                "the fill is at floorWatermark: new data is not placed" if refused else "",
            ),
            (
                USAGE_SOURCE_MISSING,
                bool(usage),
                "NoUsageSource" if usage else "UsageSourcePresent",
                usage,
            ),
        ]
        if refused:
            degraded = (True, "PlacementsRefused", "the cache is at its floor")
        elif work.view.selection_refused:
            degraded = (True, "SelectionRefused", work.view.selection_refused)
        elif usage:
            degraded = (True, "UsageSourceMissing", usage)
        elif missing:
            degraded = (True, "PinsMissing", f"pinned DIDs unknown to Rucio: {', '.join(missing)}")
        else:
            degraded = (False, "Healthy", "")
        flags.append((DEGRADED, *degraded))
        conditions = previous
        for type_, status, reason, message in flags:
            before = next((c for c in previous or [] if c.get("type") == type_), None)
            if status and type_ == USAGE_SOURCE_MISSING and (before or {}).get("status") != "True":
                work.events.append(("Warning", USAGE_SOURCE_MISSING, message))
            conditions = set_condition(
                conditions,
                condition(
                    type_,
                    status=status,
                    reason=reason,
                    message=message,
                    generation=generation,
                    now=now,
                ),
            )
        return conditions or []

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
        self.audit.record(
            AuditRecord(
                resource=ref,
                action=action,
                actor=self.actor,
                target=target,
                before=before,
                after=after,
                message=message,
            )
        )
        EXTERNAL_ACTIONS.labels("OODSCache", action).inc()

    def _record_many(
        self, ref: ResourceRef, action: str, rule_ids: Mapping[str, str], lifetime: timedelta | None
    ) -> None:
        self.audit.record_many(
            [
                AuditRecord(
                    resource=ref,
                    action=action,
                    actor=self.actor,
                    target=rule_id,
                    after={
                        "did": did,
                        "lifetime": None if lifetime is None else int(lifetime.total_seconds()),
                    },
                )
                for did, rule_id in rule_ids.items()
            ]
        )
        EXTERNAL_ACTIONS.labels("OODSCache", action).inc(len(rule_ids))
