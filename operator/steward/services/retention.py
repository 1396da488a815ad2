"""RetentionPolicy reconciliation: plan first, then expire or delete through the deletion gate.

Steward keeps expiry, holds and approvals itself and drives Rucio only through rule
``lifetime``, ``locked`` and rule deletion: Rucio's own lifetime model (``eol_at``, atropos)
works only under the ATLAS policy, and its ``list_exceptions`` client call is broken. Each
cycle:

1. an intent a stopped operator left open is closed (`DeletionGate.recover`);
2. the plan is computed (`preview_plan`): the rules on the selected DIDs whose RSEs are all
   within ``spec.rses``, those past ``lifetime`` (counted from the rule's creation, when the
   data was placed) or ``maxAge`` (from the DID's creation) become candidates, and the
   deletion gate applies the protections, the freeze and the limits;
3. the plan goes into status every cycle, and unless it is a dry run, blocked or frozen, the
   gate carries it out: ``Expire`` sets each rule's lifetime to end now (judge-cleaner removes
   the rule, the reaper the replicas), ``Delete`` deletes the rule.

LDM-230 5.1.2.2.4 (managed lifetime of data), LDM-592 SCIVAL1 (scratch deleted only by its
owner or with permission), COMM3 (value-added repositories), DRP29 (a file another rule
references stays: Rucio's locks) and DRP30 (forced deletion names who approved it), LDM-230
3.1.3.4.2 (failed-campaign outputs kept until the review is done).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from steward.models.retention import (
    DataClass,
    LockMode,
    RetentionAction,
    RetentionLock,
    RetentionPlan,
    RetentionPolicy,
    RetentionPolicySpec,
    RetentionPolicyStatus,
)
from steward.services import selection
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.conditions import DEGRADED, PROGRESSING, READY, condition, set_condition
from steward.services.deletion import (
    PLAN_SHOWN,
    SHOWING,
    Candidate,
    Carried,
    DeletionGate,
    DeletionPlan,
    DeletionRequest,
    Limits,
    Mode,
    Operation,
    Protections,
    plan_deletion,
    shown_first,
)
from steward.services.protections import (
    ClusterFacts,
    ExpressionCache,
    data_owner,
    effective_locks,
    gather_placement,
    protections_of,
    with_sizes,
)
from steward.services.site import Outcome
from steward.storage.rucio import RucioStorage, Rule

__all__ = [
    "RetentionService",
    "locks_in_force",
    "plan_status",
    "preview_plan",
    "preview_request",
    "remembered_locks",
    "with_own",
]

_SOFT_DELETE = timedelta(hours=1, minutes=5)
"""A rule expiring this soon is already going (Rucio's deletion only expires it)."""

_OPERATIONS = {RetentionAction.EXPIRE: Operation.EXPIRE, RetentionAction.DELETE: Operation.DELETE}


def _requester(ref: ResourceRef) -> str:
    return f"{ref.kind}/{ref.namespace}/{ref.name}"


def _selected(rucio: RucioStorage, spec: RetentionPolicySpec) -> list[str]:
    return selection.select(rucio, spec.selector)


def _rules_on(rucio: RucioStorage, dids: Collection[str]) -> Iterator[Rule]:
    """Every rule of any account on ``dids``, streamed: one listing per scope."""
    wanted = dids if isinstance(dids, set | frozenset | dict) else set(dids)
    for scope in sorted({did.partition(":")[0] for did in wanted}):
        for rule in rucio.iter_rules(account="*", scope=scope):
            if rule.did in wanted:
                yield rule


def _candidate(
    rule: Rule, did: str, rses: frozenset[str], born: datetime | None = None
) -> Candidate:
    """A retention candidate with only what the gate and the audit trail need.

    A plan may hold a million of them: the rule's creation time is not kept (the gate does
    not read it) and ``did`` is the selection's own string, not a copy.
    """
    return Candidate(
        key=rule.id,
        did=did,
        bytes=rule.bytes or 0,
        rses=rses,
        reason="Age",
        owner=data_owner(rule.did),
        tag=rule.comment,
        locked=rule.locked,
        created_at=born,
    )


@dataclass
class _Survey:
    """The rules a policy covers, judged by age as Rucio streams them; only the due are kept."""

    spec: RetentionPolicySpec
    now: datetime
    candidates: list[Candidate] = field(default_factory=list)
    scope_bytes: int = 0
    unsized: list[tuple[Rule, str, frozenset[str]]] = field(default_factory=list)
    """Rules whose DID's size Rucio has not recorded (open datasets): looked up after."""
    unborn: list[tuple[Rule, str, frozenset[str]]] = field(default_factory=list)
    """Rules (``maxAge``) that are younger than the age: their DID's creation decides."""

    def take(self, rule: Rule, did: str, rses: frozenset[str], *, sized: bool = False) -> None:
        """Count one covered rule, and keep it if it is due (or may be, once looked up)."""
        if not rule.bytes and not sized:
            self.unsized.append((rule, did, rses))
            return
        self.scope_bytes += rule.bytes or 0
        spec = self.spec
        if spec.lifetime is not None:
            if rule.created_at is not None and rule.created_at + spec.lifetime <= self.now:
                self.candidates.append(_candidate(rule, did, rses))
            return
        assert spec.max_age is not None  # noqa: S101 - the model requires one of the two
        # A DID is never younger than a rule on it: an old enough rule makes its DID due.
        if rule.created_at is not None and rule.created_at + spec.max_age <= self.now:
            self.candidates.append(_candidate(rule, did, rses))
        else:
            self.unborn.append((rule, did, rses))

    def finish(self, rucio: RucioStorage) -> None:
        """Look up the sizes and creation times the streamed rules did not carry."""
        unsized, self.unsized = self.unsized, []
        sized = with_sizes(rucio, [rule for rule, _, _ in unsized])
        for rule, (_, did, rses) in zip(sized, unsized, strict=True):
            self.take(rule, did, rses, sized=True)
        if not self.unborn or self.spec.max_age is None:
            return
        metadata = rucio.dids_metadata({did for _, did, _ in self.unborn})
        for rule, did, rses in self.unborn:
            born = (metadata.get(did) or {}).get("created_at")
            if born is not None and born + self.spec.max_age <= self.now:
                self.candidates.append(_candidate(rule, did, rses, born))
        self.unborn = []


def preview_plan(
    rucio: RucioStorage,
    policy: RetentionPolicy,
    protections: Protections,
    *,
    now: datetime,
    requester: str | None = None,
) -> DeletionPlan:
    """Compute a policy's deletion plan from its spec and Rucio's state; writes nothing.

    This is what each cycle of the operator acts on, and what ``steward plan`` shows for a
    changed policy: `preview_request` judged by the gate under ``protections``.
    """
    request = preview_request(rucio, policy, now=now, requester=requester)
    return plan_deletion(request, protections, now=now)


def preview_request(
    rucio: RucioStorage, policy: RetentionPolicy, *, now: datetime, requester: str | None = None
) -> DeletionRequest:
    """What a policy's cycle asks the gate: its due rules, their placement and its limits.

    Built once, the request can be judged under two sets of protections (``steward plan``
    compares the cluster's with those the plan leaves). Rules already expiring within
    Rucio's soft-deletion hour are neither candidates nor part of the scope (they are going
    already). Rules are streamed and only the due ones kept, so a plan over a million rules
    fits in a few hundred megabytes.
    """
    spec = policy.spec
    rses_of = ExpressionCache(rucio)
    where = rses_of(spec.rses) if spec.rses else None
    survey = _Survey(spec, now)
    selected = {did: did for did in _selected(rucio, spec)}  # membership, and one string each
    for rule in _rules_on(rucio, selected):
        if rule.expires_at is not None and rule.expires_at <= now + _SOFT_DELETE:
            continue
        rses = rses_of(rule.rse_expression)
        if rses and (where is None or rses <= where):
            survey.take(rule, selected[rule.did], rses)
    del selected  # the candidates keep the DID strings they need
    survey.finish(rucio)
    candidates = survey.candidates
    name = requester or f"RetentionPolicy/{policy.metadata.namespace}/{policy.metadata.name}"
    awaiting = (
        spec.campaign
        if spec.data_class is DataClass.FAILED_CAMPAIGN_OUTPUTS and not spec.review_done
        else None
    )
    return DeletionRequest(
        requester=name,
        operation=_OPERATIONS[spec.action],
        candidates=candidates,
        placement=gather_placement(rucio, candidates, lambda dids: _rules_on(rucio, dids), rses_of),
        owner=spec.owner,
        approval=spec.approval,
        awaiting_review=awaiting,
        limits=Limits(
            max_bytes=spec.max_delete_bytes,
            max_fraction=spec.max_delete_fraction,
            scope_bytes=survey.scope_bytes,
        ),
        dry_run=spec.dry_run,
    )


def plan_status(plan: DeletionPlan, candidates: int, now: datetime) -> dict[str, Any]:
    """The ``status.plan`` of a policy, with the field names of the CRD (RetentionPlan)."""
    protected = plan.protected()
    model = RetentionPlan(
        computed_at=now,
        hash=plan.hash,
        candidates=candidates,
        would_expire=plan.dids,
        rules=plan.count,
        bytes=plan.bytes,
        scope_bytes=plan.scope_bytes,
        bytes_by_rse=plan.bytes_by_rse(),
        bytes_by_site=plan.bytes_by_site(),
        sample=plan.sample(),
        protected=protected,
        protected_bytes=plan.protected_bytes(),
        protected_total=sum(protected.values()),
    )
    return model.model_dump(mode="json", by_alias=True)


def remembered_locks(status: Mapping[str, Any] | None) -> list[RetentionLock]:
    """The Compliance locks a policy's status remembers."""
    return [
        RetentionLock.model_validate(lock) for lock in (status or {}).get("complianceLocks") or []
    ]


def locks_in_force(
    policy: RetentionPolicy, status: Mapping[str, Any] | None, now: datetime
) -> list[str]:
    """Compliance locks of a policy still in force: while any is, the policy cannot go.

    Deleting the policy would drop its locks from every plan; S3 refuses to delete a bucket
    holding locked objects for the same reason.
    """
    return sorted(
        f"{lock.name} (until {_time(lock.until)})"
        for lock in effective_locks(policy, remembered_locks(status))
        if lock.mode is LockMode.COMPLIANCE and lock.until > now
    )


def with_own(
    facts: ClusterFacts, policy: RetentionPolicy, locks: list[dict[str, Any]]
) -> ClusterFacts:
    """The facts with this policy as reconciled now (its holds and locks count at once).

    The operator's index may not have caught up with a change the reconcile is about; the
    policy's own holds and locks must protect from its first cycle on.
    """
    name, namespace = policy.metadata.name, policy.metadata.namespace
    others = [
        p for p in facts.policies if (p.metadata.name, p.metadata.namespace) != (name, namespace)
    ]
    status = RetentionPolicyStatus(
        compliance_locks=[RetentionLock.model_validate(lock) for lock in locks]
    )
    return replace(facts, policies=[*others, policy.model_copy(update={"status": status})])


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class RetentionService:
    """Reconciles RetentionPolicy resources: plan, show, and act through the gate."""

    rucio: RucioStorage
    audit: AuditService
    gate: DeletionGate
    actor: str = "steward-operator"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def reconcile(
        self,
        policy: RetentionPolicy,
        ref: ResourceRef,
        facts: ClusterFacts,
        old_status: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Plan, write the plan into status, and carry it out unless it may not act.

        Raises
        ------
        TransientError
            Rucio is unreachable; nothing was decided, the caller retries with backoff.
        """
        now = self.clock()
        old = dict(old_status or {})
        events: list[tuple[str, str, str]] = []
        recovered = self.gate.recover(ref)
        if recovered is not None:
            message = (
                f"plan {recovered.plan} was interrupted: {len(recovered.carried_out)} rules "
                f"had gone, {len(recovered.abandoned)} are planned again"
            )
            events.append(("Warning", "IntentRecovered", message))
        locks, shortened = self._remember_locks(policy, ref, old, now)
        protections = protections_of(with_own(facts, policy, locks), self.rucio, now=now)
        plan = preview_plan(self.rucio, policy, protections, now=now, requester=_requester(ref))
        candidates = len(plan.removals) + len(plan.saved)
        carried = Carried()
        acting = plan.mode is Mode.ACT and bool(plan.removals)
        approval = policy.spec.approval
        approved = approval is not None and approval.plan_hash == plan.hash
        showing = acting and not shown_first(old, ref.generation, approved=approved)
        if showing:
            events.append(("Normal", PLAN_SHOWN, f"{SHOWING}: {plan.summary()}"))
        elif acting:
            carried = self.gate.carry_out(plan, ref)
            verb = "Expired" if plan.operation is Operation.EXPIRE else "Deleted"
            events.append(
                ("Normal", verb, f"{verb.lower()} {len(carried.removed)} rules: {plan.summary()}")
            )
        elif plan.mode in {Mode.BLOCKED, Mode.FROZEN} and (
            old.get("mode") != plan.mode.value or (old.get("plan") or {}).get("hash") != plan.hash
        ):
            reason = "PlanBlocked" if plan.mode is Mode.BLOCKED else "DeletionFrozen"
            events.append(("Warning", reason, plan.reason))
        shown = plan_status(plan, candidates, now)
        previous = dict(old.get("plan") or {})
        if (
            previous.pop("computedAt", None)
            and {k: v for k, v in shown.items() if k != "computedAt"} == previous
        ):
            shown["computedAt"] = old["plan"]["computedAt"]  # unchanged: no status write
        status: dict[str, Any] = {
            "observedGeneration": ref.generation,
            "mode": plan.mode.value,
            "plan": shown,
            "removed": len(carried.removed),
            "complianceLocks": locks,
            "lastSyncTime": _time(now),
            "conditions": _conditions(
                plan, carried, shortened, old.get("conditions"), ref, now, showing=showing
            ),
        }
        last_run = _time(now) if carried.removed else old.get("lastRunTime")
        if last_run is not None:
            status["lastRunTime"] = last_run
        return Outcome(status, events)

    def _remember_locks(
        self,
        policy: RetentionPolicy,
        ref: ResourceRef,
        old: Mapping[str, Any],
        now: datetime,
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Compliance locks to remember in status, and those the spec shortened or dropped.

        The remembered list is `effective_locks` (longest ``until``, every DID ever named)
        minus locks that have ended. A change of it is written to the audit trail.
        """
        merged = [
            lock
            for lock in effective_locks(policy, remembered_locks(old))
            if lock.mode is LockMode.COMPLIANCE and lock.until > now
        ]
        declared = {lock.name: lock for lock in policy.spec.locks}
        shortened = sorted(
            lock.name
            for lock in merged
            if lock.name not in declared
            or declared[lock.name].mode is not LockMode.COMPLIANCE
            or declared[lock.name].until < lock.until
            or not set(lock.dids) <= set(declared[lock.name].dids)
        )
        remembered = [
            lock.model_dump(mode="json", by_alias=True, exclude_defaults=True) for lock in merged
        ]
        if remembered != (old.get("complianceLocks") or []):
            self.audit.record(
                AuditRecord(
                    resource=ref,
                    action="retention.lock.compliance",
                    actor=self.actor,
                    before=old.get("complianceLocks") or [],
                    after=remembered,
                    message="Compliance locks in force (they can only grow)",
                )
            )
        return remembered, shortened


def _conditions(  # noqa: PLR0917 - one status, computed from what the reconcile found
    plan: DeletionPlan,
    carried: Carried,
    shortened: Iterable[str],
    old: list[dict[str, Any]] | None,
    ref: ResourceRef,
    now: datetime,
    *,
    showing: bool,
) -> list[dict[str, Any]]:
    """Ready, Progressing and Degraded of a policy after one cycle."""
    summary = plan.summary()
    if showing:
        ready = (True, PLAN_SHOWN, f"{SHOWING}: {summary}")
    elif plan.mode is Mode.DRY_RUN:
        ready = (True, "PlanComputed", f"dry run: {summary}")
    elif plan.mode is Mode.BLOCKED:
        ready = (False, plan.blocked_reason, plan.reason)
    elif plan.mode is Mode.FROZEN:
        ready = (False, "DeletionFrozen", plan.reason)
    elif carried.removed:
        verb = "Expired" if plan.operation is Operation.EXPIRE else "Deleted"
        ready = (True, verb, f"{len(carried.removed)} rules; {summary}")
    else:
        ready = (True, "NothingDue", summary)
    generation = ref.generation
    conditions = set_condition(
        old,
        condition(
            READY,
            status=ready[0],
            reason=ready[1],
            message=ready[2],
            generation=generation,
            now=now,
        ),
    )
    conditions = set_condition(
        conditions,
        condition(
            PROGRESSING,
            status=showing,
            reason=PLAN_SHOWN if showing else "Converged",
            message=SHOWING if showing else "",
            generation=generation,
            now=now,
        ),
    )
    kept = sorted(shortened)
    degraded = (plan.mode is Mode.BLOCKED, plan.blocked_reason or "Healthy", plan.reason)
    if kept:
        message = (
            f"Compliance locks {', '.join(kept)} were shortened or removed in the spec; they "
            "stay in force as they were"
        )
        degraded = (True, "ComplianceLockShortened", message)
    return set_condition(
        conditions,
        condition(
            DEGRADED,
            status=degraded[0],
            reason=degraded[1],
            message=degraded[2],
            generation=generation,
            now=now,
        ),
    )
