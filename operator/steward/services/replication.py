"""ReplicationRule reconciliation: one Rucio rule per selected DID, owned, converged, reported.

Ownership lives in Rucio itself: every rule Steward creates carries the owner tag
``steward:<namespace>/<name>`` in its comment, and one bulk listing by comment returns every
rule of a resource. Nothing depends on having written status before a crash, so a reconcile
killed at any line is repeated safely: a rule created just before the kill is listed (or,
through ``DuplicateRule``, adopted) on the next run, never created twice.

Changes of copies or destination go through Rucio's move/reduce or a child rule
(`RucioStorage.change_rule`), so there is never a moment with fewer copies than declared.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from steward.exceptions import RucioError
from steward.models.common import DIDType
from steward.models.replication import (
    WEEKDAYS,
    DeletionPolicy,
    ManagementPolicy,
    ReplicationRule,
    ReplicationRuleSpec,
    TransferWindow,
)
from steward.models.rse_expression import canonical
from steward.observability import EXTERNAL_ACTIONS
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.conditions import DEGRADED, PROGRESSING, READY, condition, set_condition
from steward.services.site import Outcome
from steward.storage.rucio import RucioStorage, Rule, RuleSpec, RuleState, SubscriptionSpec

__all__ = [
    "ReplicationService",
    "RucioView",
    "owner_tag",
    "transfer_gate",
]

_LIFETIME_TOLERANCE = timedelta(minutes=5)
"""Expiry differences smaller than this are not drift (clock skew, time to apply)."""

ORPHANED_PREFIX = "orphaned-by-steward:"
"""Comment prefix of rules released by Orphan: no longer listed as owned, still findable."""


_DID_TYPES: dict[DIDType, Literal["dataset", "container", "file"]] = {
    DIDType.DATASET: "dataset",
    DIDType.CONTAINER: "container",
    DIDType.FILE: "file",
}


TAG_PREFIX = "steward:"


def owner_tag(namespace: str, name: str) -> str:
    """Comment Steward writes on every rule of one ReplicationRule resource."""
    return f"{TAG_PREFIX}{namespace}/{name}"


def subscription_name(namespace: str, name: str) -> str:
    """Name of the Rucio subscription placing new data for one resource."""
    return f"steward-{namespace}-{name}"


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


def _subscribable(spec: ReplicationRuleSpec) -> bool:
    """Whether a Rucio subscription may place new data for this spec.

    A subscription creates rules whenever data arrives: it cannot honour a transfer window,
    an embargo or metadata exclusions, so those specs rely on the operator's own selection.
    """
    return (
        spec.selector.match is not None
        and spec.transfer_window is None
        and spec.not_before is None
        and not spec.selector.exclude
    )


def _rule_spec(spec: ReplicationRuleSpec, tag: str) -> RuleSpec:
    return RuleSpec(
        rse_expression=spec.destination,
        copies=spec.copies,
        lifetime=spec.lifetime,
        grouping=spec.grouping.value,
        priority=spec.priority,
        activity=spec.activity,
        source_replica_expression=spec.source_preference,
        comment=tag,
        locked=spec.locked,
    )


@dataclass
class _Pass:
    """Everything one reconcile of one resource works on."""

    spec: ReplicationRuleSpec
    ref: ResourceRef
    tag: str
    expression: str
    selected: list[str]
    owned: _Owned
    now: datetime
    events: list[tuple[str, str, str]] = field(default_factory=list)
    shared: dict[str, str] = field(default_factory=dict)
    """DIDs whose identical rule another resource owns, with that owner."""
    published: int | None = None
    """Datasets in the published container (``publish: true`` only)."""


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


class RuleSnapshot:
    """Every rule of Steward's account, listed once per interval and shared by all resources.

    Timers of a thousand resources would otherwise list Rucio a thousand times per interval;
    with the snapshot, a steady state costs one bulk listing per interval for all of them
    (Rucio has no watch, so someone must poll; one bulk call is the cheapest poll).
    """

    def __init__(
        self,
        rucio: RucioStorage,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rucio = rucio
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()
        self._taken: float | None = None
        self._by_tag: dict[str, list[Rule]] = {}

    def rules(self, tag: str) -> list[Rule]:
        """Rules carrying ``tag``, from a listing at most ``max_age`` seconds old."""
        with self._lock:
            now = self._clock()
            if self._taken is None or now - self._taken > self._max_age:
                grouped: dict[str, list[Rule]] = {}
                for rule in self._rucio.list_rules():
                    grouped.setdefault(rule.comment or "", []).append(rule)
                self._by_tag, self._taken = grouped, now
            return list(self._by_tag.get(tag, []))

    def put(self, tag: str, rules: Sequence[Rule]) -> None:
        """Record what a reconcile just listed for ``tag`` (fresher than the snapshot)."""
        with self._lock:
            self._by_tag[tag] = list(rules)


@dataclass
class RucioView:
    """What a ReplicationRule means in Rucio, read-only: selection and deletion policy."""

    rucio: RucioStorage
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    # -- selection ----------------------------------------------------------------------------

    def select(self, spec: ReplicationRuleSpec) -> list[str]:
        """DIDs the resource selects now (explicit list, or the metadata filter's matches)."""
        selector = spec.selector
        if selector.dids is not None:
            return sorted(dict.fromkeys(selector.dids))
        assert selector.scope is not None  # noqa: S101 - the model requires it with match
        return self.rucio.list_dids(
            selector.scope,
            selector.match,
            exclude=selector.exclude,
            did_type=_DID_TYPES[selector.did_type],
        )

    def is_custodial(self, expression: str) -> bool:
        """Whether every RSE the expression selects is custodial (tape archive)."""
        matched = set(self.rucio.list_rses(expression))
        try:
            custodial = set(self.rucio.list_rses("custodial"))
        except RucioError:
            return False
        return bool(matched) and matched <= custodial

    def deletion_policy(self, spec: ReplicationRuleSpec) -> DeletionPolicy:
        """The declared policy, or Orphan for custodial destinations and Delete otherwise."""
        if spec.deletion_policy is not None:
            return spec.deletion_policy
        return (
            DeletionPolicy.ORPHAN if self.is_custodial(spec.destination) else DeletionPolicy.DELETE
        )


@dataclass(kw_only=True)
class ReplicationService(RucioView):
    """Reconciles ReplicationRule resources against Rucio."""

    audit: AuditService
    snapshot: RuleSnapshot | None = None
    actor: str = "steward-operator"

    # -- reconcile ----------------------------------------------------------------------------

    def reconcile(
        self,
        rule: ReplicationRule,
        ref: ResourceRef,
        old_status: dict[str, Any] | None = None,
        *,
        fresh: bool = True,
        first_pass: bool = False,
    ) -> Outcome:
        """Converge Rucio on the resource and return its status.

        ``fresh`` lists the resource's rules now (a change event); otherwise the shared
        snapshot is used (a timer tick), and Rucio is called only if something must change.
        ``first_pass`` says the resource was never reconciled (its status has no
        ``observedGeneration``): a managed one then skips that listing, as it can only own
        rules that a crashed first pass created, and creating those again meets Rucio's
        DuplicateRule, which `RucioStorage.add_rules` turns into adoption.
        That saves one of its three Rucio calls when a thousand resources arrive at once.

        Raises
        ------
        TransientError
            Rucio is unreachable; the caller marks Degraded and retries with backoff.
        PermanentError
            Rucio refuses the spec (unknown DID, quota); the caller marks Degraded.
        """
        assert ref.namespace is not None  # noqa: S101 - ReplicationRule is namespaced
        spec = rule.spec
        tag = owner_tag(ref.namespace, ref.name)
        if first_pass and spec.management_policy is ManagementPolicy.MANAGE:
            listed: list[Rule] = []
        elif fresh or self.snapshot is None:
            listed = self.rucio.list_rules(comment=tag)
        else:
            listed = self.snapshot.rules(tag)
        work = _Pass(
            spec=spec,
            ref=ref,
            tag=tag,
            expression=canonical(spec.destination),
            selected=self.select(spec),
            owned=_Owned.of(listed),
            now=self.clock(),
        )
        allowed, gate_reason, gate_edge = transfer_gate(spec, work.now)
        if spec.management_policy is ManagementPolicy.MANAGE:
            if _subscribable(spec):
                self._ensure_subscription(rule, work)
            if allowed:
                self._create_missing(work)
            self._converge_existing(work)
            self._gate_transfers(work, allowed=allowed)
            self._release_deselected(work)
            if work.events:
                work.owned = _Owned.of(self.rucio.list_rules(comment=tag))
            if spec.publish:
                self._publish(work, (old_status or {}).get("published", 0))
        if self.snapshot is not None and (work.events or fresh):
            self.snapshot.put(tag, work.owned.all())
        return Outcome(
            self._status(work, old_status, gate_reason),
            work.events,
            (gate_edge - work.now).total_seconds() + 1 if gate_edge is not None else None,
        )

    def _ensure_subscription(self, rule: ReplicationRule, work: _Pass) -> None:
        """Place new matching data by a Rucio subscription (existing data: backfill)."""
        selector = rule.spec.selector
        ref, tag, events = work.ref, work.tag, work.events
        assert ref.namespace is not None  # noqa: S101
        assert selector.match is not None  # noqa: S101
        name = subscription_name(ref.namespace, ref.name)
        wanted = SubscriptionSpec(
            name=name,
            filter={
                "scope": [selector.scope],
                "did_type": [selector.did_type.value],
                **selector.match,
            },
            rules=[_rule_spec(rule.spec, tag)],
            comments=tag,
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
        self._record(ref, action, subscription_id, after=wanted.client_options())
        events.append(("Normal", "Subscribed", f"subscription {name} places new matching data"))

    def _create_missing(self, work: _Pass) -> None:
        spec, expression, ref, tag, events = (
            work.spec,
            work.expression,
            work.ref,
            work.tag,
            work.events,
        )
        selected, owned = work.selected, work.owned
        missing = [did for did in selected if owned.current(did, expression, spec.copies) is None]
        if not missing:
            return
        added = self.rucio.add_rules(missing, _rule_spec(spec, tag))
        adopted = []
        for did in sorted(added.adopted):
            rule = self.rucio.get_rule(added.rule_ids[did])
            owner = rule.comment or ""
            if owner.startswith(TAG_PREFIX) and owner != tag:
                # Rucio keeps one rule per (DID, account, expression, copies): another
                # resource already owns it. Taking it over would let that resource's
                # deletion remove data this one still needs (DRP29), so it is reported.
                work.shared[did] = owner.removeprefix(TAG_PREFIX)
                continue
            # A rule created by hand, or by us before a crash, is tagged, so ownership is
            # recorded in Rucio too and found by listing.
            self.rucio.update_rule(rule.id, comment=tag)
            adopted.append(did)
        after = {"rse_expression": expression, "copies": spec.copies}
        self.audit.record_many(
            [
                AuditRecord(
                    resource=ref,
                    action="rucio.rule.add" if did in added.created else "rucio.rule.adopt",
                    actor=self.actor,
                    target=rule_id,
                    after={**after, "did": did},
                )
                for did, rule_id in added.rule_ids.items()
                if did not in work.shared
            ]
        )
        EXTERNAL_ACTIONS.labels("ReplicationRule", "rucio.rule.add").inc(len(added.created))
        if added.created:
            events.append(("Normal", "RulesCreated", f"created {len(added.created)} Rucio rules"))
        if adopted:
            events.append(
                ("Normal", "RulesAdopted", f"adopted {len(adopted)} existing Rucio rules")
            )
        if work.shared:
            owners = ", ".join(sorted(set(work.shared.values())))
            events.append(
                (
                    "Warning",
                    "SharedRule",
                    f"{len(work.shared)} DIDs already have this rule, owned by {owners}",
                )
            )

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
        for did in new:
            self.rucio.close_collection(did)
        if new:
            self.rucio.attach(spec.publish_to, new)
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

    def _gate_transfers(self, work: _Pass, *, allowed: bool) -> None:
        """Suspend transfers outside the window or embargo; resume them when it opens.

        Use case 19: copying must not disturb prompt processing, so no transfer starts outside
        the window. A rule is created only while transfers are allowed. When the window
        closes, a rule still replicating is SUSPENDED with ``cancel_requests``: SUSPENDED alone
        only stops Rucio's judge, the conveyor would still submit the requests already queued.
        Cancelling leaves the unfinished locks STUCK. When the window reopens the rule is set
        to STUCK, and judge-repairer queues those transfers again, once a lock has been STUCK
        for two hours (Rucio's retry backoff, ``__is_retry_required`` in
        rucio.core.rule_grouping): a window that reopens sooner resumes that much later. A
        SUSPENDED rule is resumed even if someone else suspended it: the declared state wins.
        """
        if work.spec.transfer_window is None and work.spec.not_before is None:
            return
        moving: Literal["SUSPENDED", "STUCK"] = "STUCK" if allowed else "SUSPENDED"
        wanted = {RuleState.SUSPENDED} if allowed else {RuleState.REPLICATING, RuleState.STUCK}
        changed = [r for r in work.owned.all() if r.state in wanted]
        for rule in changed:
            self.rucio.update_rule(rule.id, state=moving, cancel_requests=not allowed)
        if changed:
            action = "rucio.rule.suspend" if not allowed else "rucio.rule.resume"
            self.audit.record_many(
                [
                    AuditRecord(
                        resource=work.ref,
                        action=action,
                        actor=self.actor,
                        target=rule.id,
                        before={"state": rule.state.value},
                        after={"state": moving},
                    )
                    for rule in changed
                ]
            )
            reason = "TransfersPaused" if not allowed else "TransfersResumed"
            work.events.append(("Normal", reason, f"{len(changed)} rules set to {moving}"))

    def _converge_existing(self, work: _Pass) -> None:
        spec, expression, ref, events, now = (
            work.spec,
            work.expression,
            work.ref,
            work.events,
            work.now,
        )
        owned = work.owned
        for did in work.selected:
            rule = owned.current(did, expression, spec.copies)
            if rule is None:
                continue
            if (rule.rse_expression, rule.copies) != (expression, spec.copies):
                new_id = self.rucio.change_rule(
                    rule.id, rse_expression=expression, copies=spec.copies
                )
                self._record(
                    ref,
                    "rucio.rule.change",
                    new_id,
                    before={
                        "rule": rule.id,
                        "rse_expression": rule.rse_expression,
                        "copies": rule.copies,
                    },
                    after={"rse_expression": expression, "copies": spec.copies},
                )
                change = (
                    f"{did}: {rule.rse_expression} x{rule.copies} -> "
                    f"{expression} x{spec.copies} (rule {new_id})"
                )
                events.append(("Normal", "RuleChanged", change))
                continue
            changes = self._in_place_changes(rule, spec, now)
            if changes:
                self.rucio.update_rule(rule.id, **changes)
                drift = "lifetime" in changes and spec.lifetime is None
                self._record(
                    ref,
                    "rucio.rule.update",
                    rule.id,
                    before=_rule_fields(rule),
                    after={k: str(v) for k, v in changes.items()},
                    message="restored after a change behind Steward's back" if drift else "",
                )
                reason = "DriftRestored" if drift else "RuleUpdated"
                events.append(("Normal", reason, f"{did}: updated {', '.join(sorted(changes))}"))

    def _in_place_changes(
        self, rule: Rule, spec: ReplicationRuleSpec, now: datetime
    ) -> dict[str, Any]:
        """Fields Rucio can change in place that differ from the spec."""
        changes: dict[str, Any] = {}
        if spec.lifetime is None:
            if rule.expires_at is not None and rule.child_rule_id is None:
                changes["lifetime"] = None
        else:
            created = rule.created_at or now
            expected = created + spec.lifetime
            if rule.expires_at is None or abs(rule.expires_at - expected) > _LIFETIME_TOLERANCE:
                changes["lifetime"] = expected - now
        if rule.priority != spec.priority:
            changes["priority"] = spec.priority
        if (rule.activity or None) != spec.activity:
            changes["activity"] = spec.activity
        if rule.locked != spec.locked and rule.child_rule_id is None:
            changes["locked"] = spec.locked
        wanted_source = canonical(spec.source_preference) if spec.source_preference else None
        if (rule.source_replica_expression or None) != wanted_source:
            changes["source_replica_expression"] = wanted_source
        return changes

    def _release_deselected(self, work: _Pass) -> None:
        chosen = set(work.selected)
        owned, spec, ref, events = work.owned, work.spec, work.ref, work.events
        # A deleted rule stays listed until judge-cleaner removes it (Rucio's deletion is
        # soft): one that already expires was released before and is not deleted again.
        now = self.clock()
        gone = [r for r in owned.all() if r.did not in chosen and not _being_deleted(r, now)]
        if gone:
            self.release(gone, self.deletion_policy(spec), ref, events)

    def release(
        self,
        rules: Sequence[Rule],
        policy: DeletionPolicy,
        ref: ResourceRef,
        events: list[tuple[str, str, str]],
    ) -> None:
        """Delete ``rules`` (Delete) or hand them over untagged (Orphan); both audited."""
        for rule in rules:
            if policy is DeletionPolicy.DELETE:
                self.rucio.delete_rule(rule.id, unlock=True)
                self._record(ref, "rucio.rule.delete", rule.id, before=_rule_fields(rule))
            else:
                self.rucio.update_rule(rule.id, comment=ORPHANED_PREFIX + (rule.comment or ""))
                self._record(ref, "rucio.rule.orphan", rule.id, before=_rule_fields(rule))
        verb = "deleted" if policy is DeletionPolicy.DELETE else "orphaned"
        events.append(("Normal", f"Rules{verb.capitalize()}", f"{verb} {len(rules)} Rucio rules"))

    def finalize(self, rule: ReplicationRule, ref: ResourceRef) -> list[tuple[str, str, str]]:
        """Carry out ``deletionPolicy`` when the resource is deleted; return the Events."""
        assert ref.namespace is not None  # noqa: S101
        events: list[tuple[str, str, str]] = []
        if rule.spec.management_policy is ManagementPolicy.OBSERVE:
            return events
        now = self.clock()
        owned = [
            rule
            for rule in self.rucio.list_rules(comment=owner_tag(ref.namespace, ref.name))
            if not _being_deleted(rule, now)
        ]
        if owned:
            self.release(owned, self.deletion_policy(rule.spec), ref, events)
        return events

    # -- status -------------------------------------------------------------------------------

    def _status(
        self, work: _Pass, old_status: dict[str, Any] | None, gate_reason: str
    ) -> dict[str, Any]:
        selected, owned, spec = work.selected, work.owned, work.spec
        expression, ref, now = work.expression, work.ref, work.now
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
        missing = len(selected) - len(in_charge)
        stuck = counts.get(RuleState.STUCK.value, 0)
        shared = work.shared
        ready = done == len(selected)
        observe = spec.management_policy is ManagementPolicy.OBSERVE
        if ready:
            reason, message = "AllRulesOK", f"{done} of {len(selected)} DIDs placed"
        elif missing and gate_reason:
            reason, message = "WaitingForTransferWindow", gate_reason
        elif missing and observe:
            reason, message = "Observing", f"{missing} selected DIDs have no rule (Observe)"
        elif stuck:
            reason, message = "RulesStuck", f"{stuck} rules STUCK"
        else:
            reason, message = "Replicating", f"{done} of {len(selected)} DIDs placed"
        generation = ref.generation
        conditions = (old_status or {}).get("conditions")
        conditions = set_condition(
            conditions,
            condition(
                READY, status=ready, reason=reason, message=message, generation=generation, now=now
            ),
        )
        progressing = not ready and not observe
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
        if shared:
            owners = ", ".join(sorted(set(shared.values())))
            degraded = ("SharedRule", f"{len(shared)} DIDs share one Rucio rule with {owners}")
        elif stuck:
            degraded = ("RulesStuck", f"{stuck} rules STUCK")
        else:
            degraded = ("Healthy", "")
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
        return {
            "observedGeneration": generation,
            "ruleIds": sorted(rule.id for rule in in_charge),
            "selected": len(selected),
            "counts": {state.value: counts.get(state.value, 0) for state in RuleState},
            "bytes": sum(rule.bytes or 0 for rule in in_charge),
            "published": work.published or 0,
            "lastSyncTime": now.isoformat().replace("+00:00", "Z"),
            "conditions": conditions,
        }

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
        EXTERNAL_ACTIONS.labels("ReplicationRule", action).inc()


_SOFT_DELETE = timedelta(hours=1, minutes=5)
"""Rucio's delete sets expires_at to at most now + 1 hour; judge-cleaner removes it later."""


def _being_deleted(rule: Rule, now: datetime) -> bool:
    """Whether ``rule`` was deleted already (it expires within Rucio's soft-delete hour)."""
    return rule.expires_at is not None and rule.expires_at <= now + _SOFT_DELETE


def _rule_fields(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "did": rule.did,
        "rse_expression": rule.rse_expression,
        "copies": rule.copies,
        "state": rule.state.value,
        "expires_at": rule.expires_at.isoformat() if rule.expires_at else None,
    }
