"""What a plan means in Rucio, or a plain statement that Rucio was not consulted.

``steward plan`` diffs documents against the cluster; for the kinds that act on Rucio it also
asks Rucio what applying would do: rules created, moved, reduced or released, with files and
bytes per RSE, and the bytes that become deletable (ReplicationRules place and release data; a
Campaign stages its inputs when it starts and lets those rules expire when it ends).
Deletable counts only replicas that no other rule locks (DRP29: removing one reference never deletes
what another still holds; in Rucio a replica with a lock left is never reaped). When Rucio is not
configured or does not answer, the plan says so in one line (and in JSON) instead of passing a
Kubernetes-only diff off as complete; ``--require-rucio`` turns that into an error for a policy
repository's CI.

Counting what becomes deletable is exact but costs Rucio calls: the locks of each released
rule, the rules on each of their files, and the locks of those other rules. Beyond
`MAX_EXACT_FILES` files a plan says it did not count rather than guess.

Every kind that removes data shows the deletion gate's plan (`steward.services.deletion`):
what a ReplicationRule's Delete policy, a ReplicationRule's reduce or move (which rules the
gate lets change), a RetentionPolicy's next cycle or an OODSCache's eviction would remove,
after the protections the operator applies (holds, locks, pins, campaigns, the last custodial
copy, freezes), with the plan's hash when it would stop (Blocked: an approval must name that
hash). The protections are those the whole plan leaves
(`steward.services.protection_changes.planned_facts`): the desired documents of the policies,
caches, Sites and Campaigns the plan changes, without those it deletes, and the cluster's for
the rest; so a hold released by one change no longer keeps what another change removes. A
change that takes a protection away also shows what the RetentionPolicies the plan leaves
alone would then remove of the DIDs it stops protecting (`RetentionPreview.exposed`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

from steward.exceptions import RucioError, RucioNotFoundError
from steward.models.campaign import Campaign, CampaignSpec, DesiredState
from steward.models.common import format_duration
from steward.models.oods import OODSCache
from steward.models.replication import DeletionPolicy, ManagementPolicy, ReplicationRule
from steward.models.retention import RetentionPolicy
from steward.models.rse_expression import canonical
from steward.models.site import Site
from steward.services import oods, retention
from steward.services.campaign.base import disk_rse
from steward.services.campaign.data import (
    RELEASE_LIFETIME,
    STAGING_ACTIVITY,
    coverage,
    plan_staging_release,
    staging_dids,
)
from steward.services.deletion import Candidate, DeletionPlan, Mode, Operation, plan_deletion
from steward.services.gitops import Action, Change, Consequences
from steward.services.protection_changes import SAMPLE, PlannedChange, planned_facts
from steward.services.protections import ClusterFacts, protections_of
from steward.services.replication import ChangeVerdict, RucioView, _Owned
from steward.storage.kubernetes import KubeResources
from steward.storage.rucio import RucioStorage, Rule

__all__ = [
    "MAX_EXACT_FILES",
    "CampaignPreview",
    "OODSPreview",
    "Preview",
    "ReplicationPreview",
    "RetentionPreview",
    "RucioImpact",
    "RucioPlanner",
    "RucioStatus",
    "Volume",
    "deletion_impact",
    "site_disk_rse",
]

MAX_EXACT_FILES: Final = 10_000
"""Files beyond which deletable bytes are not counted (about three Rucio calls per file)."""

ImpactAction = Literal["create", "add-copies", "move", "reduce", "delete", "expire", "orphan"]


@dataclass(frozen=True)
class Volume:
    """Files and bytes."""

    files: int = 0
    bytes: int = 0

    def __add__(self, other: Volume) -> Volume:
        return Volume(self.files + other.files, self.bytes + other.bytes)

    def __str__(self) -> str:
        return f"{self.files} files, {human_bytes(self.bytes)}"


def human_bytes(count: int) -> str:
    """Bytes in decimal units, as Rucio and storage systems count them."""
    for unit, size in (("PB", 10**15), ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} bytes"


def _per_rse(volumes: Mapping[str, Volume]) -> str:
    return "; ".join(f"{rse}: {volumes[rse]}" for rse in sorted(volumes))


@dataclass
class RucioImpact:
    """One thing applying would make Rucio do to a resource's rules."""

    action: ImpactAction
    rules: int
    destination: str | None = None
    """The RSE expression and copies data goes to (create, add-copies, move, reduce)."""
    place: dict[str, Volume] = field(default_factory=dict)
    """Data to be placed, per RSE (or per set of candidate RSEs when Rucio chooses)."""
    release: dict[str, Volume] = field(default_factory=dict)
    """Replicas these rules stop locking, per RSE."""
    deletable: dict[str, Volume] | None = field(default_factory=dict)
    """Of those, replicas no other rule locks: Rucio may delete them. None: not counted."""
    note: str = ""
    gate: dict[str, Any] | None = None
    """The deletion gate's plan (hash, mode, why it stops, what each protection kept)."""

    def line(self) -> str:
        """One line for people."""
        verbs = {
            "create": "create",
            "add-copies": "add copies with",
            "move": "move",
            "reduce": "reduce",
            "delete": "delete",
            "expire": "expire (lifetime ends now)",
            "orphan": "orphan (keep, no longer managed)",
        }
        text = f"Rucio: {verbs[self.action]} {self.rules} rules"
        if self.destination:
            text += f" to {self.destination}"
        parts = []
        if self.place:
            parts.append(f"place {_per_rse(self.place)}")
        if self.release:
            parts.append(f"release {_per_rse(self.release)}")
        if self.deletable is None:
            parts.append("deletable bytes not counted")
        elif self.release:
            deletable = _per_rse(self.deletable) if self.deletable else "nothing"
            parts.append(f"becomes deletable (no other rule locks it): {deletable}")
        if self.note:
            parts.append(self.note)
        return text + (": " + ". ".join(parts) if parts else "")

    def to_json(self) -> dict[str, Any]:
        """For ``--format json``: exact numbers."""

        def volumes(values: Mapping[str, Volume] | None) -> dict[str, Any] | None:
            if values is None:
                return None
            return {rse: {"files": v.files, "bytes": v.bytes} for rse, v in values.items()}

        return {
            "action": self.action,
            "rules": self.rules,
            "destination": self.destination,
            "place": volumes(self.place),
            "release": volumes(self.release),
            "deletable": volumes(self.deletable),
            "note": self.note,
            "gate": self.gate,
        }


class _Locks:
    """Which replicas rules lock, read from Rucio as needed and remembered for one plan."""

    def __init__(self, rucio: RucioStorage) -> None:
        self._rucio = rucio
        self._sizes: dict[str, dict[str, int]] = {}
        self._rule_locks: dict[str, set[tuple[str, str]]] = {}
        self._file_rules: dict[str, list[Rule]] = {}
        self.files_seen = 0

    def sizes(self, did: str) -> dict[str, int]:
        """File DID -> bytes, for the files of ``did``."""
        if did not in self._sizes:
            self._sizes[did] = {f.did: f.bytes for f in self._rucio.list_files(did)}
        return self._sizes[did]

    def volume(self, did: str) -> Volume:
        """Files and bytes of ``did``."""
        sizes = self.sizes(did)
        return Volume(len(sizes), sum(sizes.values()))

    def held(self, rule_id: str) -> set[tuple[str, str]]:
        """(file, RSE) pairs one rule locks."""
        if rule_id not in self._rule_locks:
            locks = self._rucio.list_rule_locks(rule_id)
            self._rule_locks[rule_id] = {(lock.did, lock.rse) for lock in locks}
        return self._rule_locks[rule_id]

    def held_by_others(self, file: str, rse: str, leaving: set[str]) -> bool:
        """Whether a rule not in ``leaving`` locks ``file`` on ``rse``."""
        if file not in self._file_rules:
            self._file_rules[file] = self._rucio.list_file_rules(file)
        return any(
            (file, rse) in self.held(rule.id)
            for rule in self._file_rules[file]
            if rule.id not in leaving
        )

    def release(
        self, rules: Iterable[tuple[str, str]], leaving: set[str], staying: set[str]
    ) -> tuple[dict[str, Volume], dict[str, Volume] | None]:
        """What releasing ``rules`` (rule id, DID) unlocks per RSE, and what becomes deletable.

        ``staying`` RSEs keep their replicas anyway (the new destination of a move).
        """
        released: dict[str, Volume] = {}
        deletable: dict[str, Volume] | None = {}
        for rule_id, did in rules:
            sizes = self.sizes(did)
            for file, rse in sorted(self.held(rule_id)):
                one = Volume(1, sizes.get(file, 0))
                released[rse] = released.get(rse, Volume()) + one
                if deletable is None or rse in staying:
                    continue
                self.files_seen += 1
                if self.files_seen > MAX_EXACT_FILES:
                    deletable = None
                    continue
                if not self.held_by_others(file, rse, leaving):
                    deletable[rse] = deletable.get(rse, Volume()) + one
        return released, deletable


def _pairs(rules: Iterable[Rule]) -> list[tuple[str, str]]:
    return [(rule.id, rule.did) for rule in rules]


def deletion_impact(plan: DeletionPlan, locks: _Locks, note: str = "") -> RucioImpact:
    """What the deletion gate's ``plan`` removes: rules, files and bytes per RSE, deletable.

    Only the plan's removals count (what the protections kept stays), and of their replicas
    only those no other rule locks become deletable. The note says what the gate kept and,
    when the plan would not act (Blocked, Frozen, DryRun), why and under which hash.
    """
    removals = plan.removals
    released, deletable = locks.release(
        [(c.key, c.did) for c in removals], {c.key for c in removals}, set()
    )
    parts = [note] if note else []
    protected = plan.protected()
    if protected:
        kept = ", ".join(f"{name}={count}" for name, count in protected.items())
        parts.append(f"kept by the deletion gate: {kept}")
    if plan.mode is not Mode.ACT and (removals or plan.reason):
        parts.append(
            f"plan {plan.hash} is {plan.mode.value}" + (f": {plan.reason}" if plan.reason else "")
        )
    return RucioImpact(
        "expire" if plan.operation is Operation.EXPIRE else "delete",
        plan.count,
        release=released,
        deletable=deletable,
        note="; ".join(parts),
        gate={
            "requester": plan.requester,
            "hash": plan.hash,
            "mode": plan.mode.value,
            "reason": plan.reason,
            "bytes": plan.bytes,
            "protected": protected,
        },
    )


class Preview(Protocol):
    """The Rucio consequences of one kind's changes; never writes."""

    def consequences(
        self, tag: str | None, desired: dict[str, Any] | None, live: dict[str, Any] | None
    ) -> list[RucioImpact]:
        """What applying ``desired`` over ``live`` (None: deletion) would do in Rucio.

        ``tag`` is the owner tag of the live resource's rules (None for a new resource).
        """
        ...


def _model_body(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """The desired document with the live object's metadata (its UID) and without status."""
    metadata = {**(desired.get("metadata") or {}), **((live or {}).get("metadata") or {})}
    return {**{k: v for k, v in desired.items() if k != "status"}, "metadata": metadata}


@dataclass
class RetentionPreview:
    """A RetentionPolicy's next cycle, as the operator would plan it; never writes."""

    rucio: RucioStorage
    facts: ClusterFacts = field(default_factory=ClusterFacts)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def consequences(
        self, tag: str | None, desired: dict[str, Any] | None, live: dict[str, Any] | None
    ) -> list[RucioImpact]:
        """The rules the policy ``desired`` would expire or delete, after the protections.

        The policy's own holds and locks count as the operator counts them (its remembered
        Compliance locks from the live status included). A deleted policy removes nothing.
        """
        del tag
        if desired is None:
            return []
        policy = RetentionPolicy.model_validate(_model_body(desired, live))
        now = self.clock()
        locks = ((live or {}).get("status") or {}).get("complianceLocks") or []
        facts = retention.with_own(self.facts, policy, list(locks))
        plan = retention.preview_plan(
            self.rucio, policy, protections_of(facts, self.rucio, now=now), now=now
        )
        if not plan.removals and not plan.saved:
            return []
        return [deletion_impact(plan, _Locks(self.rucio))]

    def exposed(
        self,
        live: ClusterFacts,
        dids: Collection[str],
        changed: Collection[tuple[str | None, str]],
        by: str,
    ) -> list[RucioImpact]:
        """What policies the plan does not change would remove of ``dids`` because of it.

        ``dids`` lose a protection in this plan (``by`` names the change taking it away).
        Every other policy in the facts the plan leaves is surveyed once and judged twice:
        by the cluster's protections (``live``) and by the plan's (this preview's facts); the
        rules on ``dids`` only the second removes are what the plan exposes. ``changed``
        holds the (namespace, name) of the policies the plan creates, changes or deletes:
        their own previews show them. A policy with an explicit DID list is surveyed only if
        it lists one of ``dids`` (one with a filter, by metadata or name pattern, always).
        """
        now = self.clock()
        wanted = frozenset(dids)
        before = protections_of(live, self.rucio, now=now)
        after = protections_of(self.facts, self.rucio, now=now)
        impacts = []
        for policy in self.facts.policies:
            named = policy.spec.selector.dids
            if (policy.metadata.namespace, policy.metadata.name) in changed or (
                named is not None and wanted.isdisjoint(named)
            ):
                continue
            request = retention.preview_request(self.rucio, policy, now=now)
            kept = {c.key for c in plan_deletion(request, before, now=now).removals}
            plan = plan_deletion(request, after, now=now)
            exposed = [c for c in plan.removals if c.key not in kept and c.did in wanted]
            if exposed:
                impacts.append(self._exposure(plan, exposed, by))
        return impacts

    def _exposure(self, plan: DeletionPlan, exposed: list[Candidate], by: str) -> RucioImpact:
        """The removals of another policy's next cycle that ``by`` no longer prevents."""
        released, deletable = _Locks(self.rucio).release(
            [(c.key, c.did) for c in exposed], {c.key for c in exposed}, set()
        )
        names = sorted({c.did for c in exposed})
        verb = "expire" if plan.operation is Operation.EXPIRE else "delete"
        shown = ", ".join(names[:SAMPLE]) + (" ..." if len(names) > SAMPLE else "")
        note = (
            f"then {plan.requester}, which this plan does not change, would {verb} them at "
            f"its next cycle: {by} no longer protects {shown}"
        )
        if plan.mode is not Mode.ACT:
            note += f"; its plan {plan.hash} is {plan.mode.value}" + (
                f": {plan.reason}" if plan.reason else ""
            )
        return RucioImpact(
            "expire" if plan.operation is Operation.EXPIRE else "delete",
            len(exposed),
            release=released,
            deletable=deletable,
            note=note,
            gate={
                "requester": plan.requester,
                "hash": plan.hash,
                "mode": plan.mode.value,
                "reason": plan.reason,
                "bytes": sum(c.bytes for c in exposed),
                "exposed_by": by,
                "dids": names,
            },
        )


@dataclass
class OODSPreview:
    """An OODSCache's next eviction and window expiry; never writes."""

    rucio: RucioStorage
    cluster_id: str
    facts: ClusterFacts = field(default_factory=ClusterFacts)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def consequences(
        self, tag: str | None, desired: dict[str, Any] | None, live: dict[str, Any] | None
    ) -> list[RucioImpact]:
        """The rules the cache ``desired`` would expire (window, watermarks), after the gate.

        A new cache (no UID) owns no rules; a deleted one keeps its rules until their window
        ends (its pins get the window's lifetime).
        """
        del tag
        if desired is None:
            return []
        cache = OODSCache.model_validate(_model_body(desired, live))
        now = self.clock()
        plan = oods.preview_plan(
            self.rucio,
            cache,
            protections_of(self.facts, self.rucio, now=now),
            cluster_id=self.cluster_id,
            now=now,
            was_evicting=bool(((live or {}).get("status") or {}).get("evicting")),
        )
        if not plan.removals and not plan.saved:
            return []
        return [deletion_impact(plan, _Locks(self.rucio))]


def _destination(
    rucio: RucioStorage, expression: str, copies: int, volume: Volume
) -> dict[str, Volume]:
    """Where ``copies`` of ``volume`` land: per RSE, or per candidate set when Rucio chooses."""
    rses = sorted(rucio.list_rses(expression))
    if len(rses) == copies:
        return dict.fromkeys(rses, volume)
    where = f"{copies} of {', '.join(rses)}" if rses else f"{expression} (no RSE matches)"
    return {where: Volume(volume.files * copies, volume.bytes * copies)}


def _volume_of(dids: Iterable[str], locks: _Locks) -> tuple[Volume, str]:
    """Files and bytes of ``dids``, and a note naming those Rucio does not know."""
    volume, absent = Volume(), []
    for did in dids:
        try:
            volume += locks.volume(did)
        except RucioNotFoundError:
            absent.append(did)
    if not absent:
        return volume, ""
    shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")  # noqa: PLR2004
    return volume, f"{len(absent)} of them name DIDs Rucio does not know ({shown}): refused"


@dataclass
class ReplicationPreview(RucioView):
    """Rucio consequences of a planned ReplicationRule change; never writes."""

    def consequences(
        self, tag: str | None, desired: dict[str, Any] | None, live: dict[str, Any] | None
    ) -> list[RucioImpact]:
        """What applying ``desired`` over ``live`` (None: deletion) would do in Rucio.

        ``tag`` is the owner tag of the live resource's rules (None for a new resource,
        which owns none): the caller knows how tags are made from the live object.
        """
        # A released rule is re-tagged (``deleted-by-steward:``/``orphaned-by-steward:``) when it
        # is released, so listing by the exact tag returns only what the resource still owns.
        owned = self.rucio.list_rules(comment=tag) if tag else []
        status = (live or {}).get("status")
        locks = _Locks(self.rucio)
        metadata = (desired or live or {}).get("metadata") or {}
        requester = f"ReplicationRule/{metadata.get('namespace')}/{metadata.get('name')}"
        if desired is None:
            return self._deletion(live, owned, locks, requester, tag or "")
        spec = ReplicationRule.model_validate(desired).spec
        if spec.management_policy is ManagementPolicy.OBSERVE:
            return []
        selected = self.select(spec)
        expression = canonical(spec.destination)
        current = _Owned.of(owned)
        impacts: list[RucioImpact] = []
        missing = [d for d in selected if current.current(d, expression, spec.copies) is None]
        if missing:
            volume, note = _volume_of(missing, locks)
            impacts.append(
                RucioImpact(
                    "create",
                    len(missing),
                    f"{expression} x{spec.copies}",
                    place=_destination(self.rucio, expression, spec.copies, volume),
                    note=note,
                )
            )
        changing = [
            r
            for d in selected
            if (r := current.current(d, expression, spec.copies)) is not None
            and (r.rse_expression, r.copies) != (expression, spec.copies)
        ]
        impacts.extend(
            self._changes(changing, expression, spec.copies, locks, requester, tag or "")
        )
        chosen = set(selected)
        released = [r for r in owned if r.did not in chosen]
        if released:
            policy = self.deletion_policy(spec, status)[0]
            impacts.append(
                self._release(released, policy, locks, "of deselected DIDs", requester, tag or "")
            )
        return impacts

    def _deletion(
        self,
        live: dict[str, Any] | None,
        owned: list[Rule],
        locks: _Locks,
        requester: str,
        tag: str,
    ) -> list[RucioImpact]:
        spec = ReplicationRule.model_validate(live).spec if live else None
        if spec is None or spec.management_policy is ManagementPolicy.OBSERVE or not owned:
            return []
        policy = self.deletion_policy(spec, (live or {}).get("status"))[0]
        return [self._release(owned, policy, locks, "", requester, tag)]

    def _release(  # noqa: PLR0917 - one release, as the operator would make it
        self,
        rules: list[Rule],
        policy: DeletionPolicy,
        locks: _Locks,
        note: str,
        requester: str,
        tag: str,
    ) -> RucioImpact:
        """A release as `ReplicationService.release` makes it: Delete through the gate."""
        if policy is not DeletionPolicy.DELETE:
            return RucioImpact("orphan", len(rules), note=note)
        plan = self.plan_release(rules, requester, tag, reason=note or "resource deleted")
        return deletion_impact(plan, locks, note)

    def _changes(  # noqa: PLR0917 - one change, as the operator would judge it
        self,
        rules: list[Rule],
        expression: str,
        copies: int,
        locks: _Locks,
        requester: str,
        tag: str,
    ) -> list[RucioImpact]:
        """Rules whose expression or copies change: reduce, add copies, or move.

        A reduce or a move that may remove replicas from an RSE is judged by the deletion
        gate as the operator judges it (`RucioView.judge_change`): the rules it keeps stay as
        they are and are left out of the numbers, and the note says what keeps them.
        """
        verdict = self.judge_change(rules, expression, copies, requester, tag) if rules else None
        kept = {rule.id: (by, why) for rule, by, why in verdict.kept()} if verdict else {}
        reduce = [r for r in rules if r.rse_expression == expression and copies < r.copies]
        grow = [r for r in rules if r.rse_expression == expression and copies > r.copies]
        move = [r for r in rules if r.rse_expression != expression]
        impacts = []
        target = f"{expression} x{copies}"
        if reduce:
            changed = [r for r in reduce if r.id not in kept]
            released, deletable = locks.release(_pairs(changed), {r.id for r in changed}, set())
            impacts.append(
                _gated(
                    RucioImpact(
                        "reduce",
                        len(changed),
                        target,
                        release=released,
                        deletable=deletable,
                        note=(
                            "Rucio removes the surplus copies and chooses which: the numbers "
                            "are every RSE that holds one, an upper bound"
                        ),
                    ),
                    verdict,
                    reduce,
                    kept,
                )
            )
        if grow:
            extra = sum((locks.volume(r.did) for r in grow), Volume())
            impacts.append(
                RucioImpact(
                    "add-copies", len(grow), target, place={expression: extra}, note="no copy lost"
                )
            )
        if move:
            changed = [r for r in move if r.id not in kept]
            volume = sum((locks.volume(r.did) for r in changed), Volume())
            staying = set(self.rucio.list_rses(expression))
            released, deletable = locks.release(_pairs(changed), {r.id for r in changed}, staying)
            impacts.append(
                _gated(
                    RucioImpact(
                        "move",
                        len(changed),
                        target,
                        place=_destination(self.rucio, expression, copies, volume)
                        if changed
                        else {},
                        release=released,
                        deletable=deletable,
                        note="the old copies are released once the new ones are OK",
                    ),
                    verdict,
                    move,
                    kept,
                )
            )
        return impacts


def _gated(
    impact: RucioImpact,
    verdict: ChangeVerdict | None,
    group: list[Rule],
    kept: Mapping[str, tuple[str, str]],
) -> RucioImpact:
    """``impact`` with the deletion gate's verdict on its ``group`` of changed rules.

    Changes that only add are not judged (no ``gate``). Otherwise the note says what the
    gate keeps (per protection, or the plan's mode for a freeze) with one example, and
    ``gate`` carries the plan's hash, mode and reason and the kept counts, as for a release.
    """
    plan = verdict.plan if verdict is not None else None
    judged = [r for r in group if verdict is not None and verdict.leaving[r.id]]
    if plan is None or not judged:
        return impact
    mine = [(r, *kept[r.id]) for r in group if r.id in kept]
    counts: dict[str, int] = {}
    for _, by, _ in mine:
        counts[by] = counts.get(by, 0) + 1
    parts = [impact.note] if impact.note else []
    if mine:
        first, by, why = mine[0]
        listed = ", ".join(f"{name}={count}" for name, count in sorted(counts.items()))
        parts.append(
            f"kept by the deletion gate: {listed} ({len(mine)} rules stay as they are; e.g. "
            f"{first.did}: {by}: {why})"
        )
    else:
        parts.append(f"allowed by the deletion gate (plan {plan.hash})")
    impact.note = "; ".join(parts)
    impact.gate = {
        "requester": plan.requester,
        "hash": plan.hash,
        "mode": plan.mode.value,
        "reason": plan.reason,
        "bytes": sum(c.bytes for c in plan.removals if c.key in {r.id for r in judged}),
        "protected": counts,
        "allowed": len(judged) - len(mine),
    }
    return impact


def site_disk_rse(resources: KubeResources, name: str) -> str | None:
    """The first DISK RSE of the Site ``name`` in the cluster; None if absent or it has none."""
    body = next((b for b in resources.list("Site") if b["metadata"]["name"] == name), None)
    if body is None:
        return None
    return disk_rse(Site.model_validate({k: v for k, v in body.items() if k != "status"}))


_ENDING: Final = frozenset({DesiredState.TERMINATED, DesiredState.CLOSED_OUT})
"""Desired states in which a campaign releases its staging rules."""


@dataclass
class CampaignPreview:
    """Rucio consequences of a planned Campaign change: its staging rules; never writes.

    Mirrors `steward.services.campaign`: a new campaign enumerates its coverage and, with
    ``inputs.prestage``, creates one rule per input DID to ``inputs.destination`` or its Site's
    first DISK RSE (activity Staging, ``inputs.lifetime``) before its first step starts. A running
    campaign's coverage was enumerated into the ledger when it started and is never enumerated
    again, so changing it stages nothing new. Deleting, terminating or closing out a campaign
    gives its staging rules `RELEASE_LIFETIME` through the deletion gate
    (`plan_staging_release`, as the operator plans it): what a protection or a freeze keeps is
    shown as kept, Rucio's judge removes the rest and the replicas no other rule locks may be
    deleted. Outputs are registered (and archived) as
    invocations write them, so no plan can count them.
    """

    rucio: RucioStorage
    site_disk: Callable[[str], str | None]
    """A Site's first DISK RSE by name (`site_disk_rse`); None when the cluster has none."""
    facts: ClusterFacts = field(default_factory=ClusterFacts)
    """What the deletion gate judges the release of the staging rules against."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def consequences(
        self, tag: str | None, desired: dict[str, Any] | None, live: dict[str, Any] | None
    ) -> list[RucioImpact]:
        """What applying ``desired`` over ``live`` (None: deletion) would do in Rucio.

        ``tag`` is the owner tag of the live campaign's rules (None for a new campaign).
        """
        if desired is None:
            return self._release(tag, live, "when the campaign's last pods are recorded")
        spec = Campaign.model_validate(desired).spec
        if live is None:
            return self._stage(spec)
        before = Campaign.model_validate(live).spec.desired_state
        if spec.desired_state not in _ENDING or before in _ENDING:
            return []
        when = (
            "at closeout, once every invocation finished"
            if spec.desired_state is DesiredState.CLOSED_OUT
            else "when its running work is deleted"
        )
        return self._release(tag, live, when)

    def _stage(self, spec: CampaignSpec) -> list[RucioImpact]:
        """The staging rules a new campaign creates."""
        if not spec.inputs.prestage or spec.desired_state is DesiredState.TERMINATED:
            return []
        dids = sorted(staging_dids(coverage(self.rucio, spec)))
        if not dids:
            return []
        lifetime = format_duration(spec.inputs.lifetime)
        staging = f"Staging inputs (activity {STAGING_ACTIVITY}, lifetime {lifetime})"
        destination = spec.inputs.destination or self.site_disk(spec.site)
        if destination is None:
            note = f"Site {spec.site} is not in the cluster or has no DISK RSE: destination unknown"
            return [RucioImpact("create", len(dids), note=f"{staging}; {note}")]
        expression = canonical(destination)
        if len(dids) > MAX_EXACT_FILES:
            note = f"{staging}; files and bytes not counted for more than {MAX_EXACT_FILES} DIDs"
            return [RucioImpact("create", len(dids), f"{expression} x1", note=note)]
        volume, absent = _volume_of(dids, _Locks(self.rucio))
        return [
            RucioImpact(
                "create",
                len(dids),
                f"{expression} x1",
                place=_destination(self.rucio, expression, 1, volume),
                note="; ".join(n for n in (staging, absent) if n),
            )
        ]

    def _release(
        self, tag: str | None, live: dict[str, Any] | None, when: str
    ) -> list[RucioImpact]:
        """The deletion gate's verdict on expiring the live campaign's staging rules."""
        now = self.clock()
        soon = now + RELEASE_LIFETIME
        rules = [
            rule
            for rule in (self.rucio.list_rules(comment=tag) if tag else [])
            if rule.activity == STAGING_ACTIVITY
            and (rule.expires_at is None or rule.expires_at > soon)
        ]
        if not rules or tag is None:
            return []
        metadata = (live or {}).get("metadata") or {}
        plan = plan_staging_release(
            self.rucio,
            rules,
            requester=f"Campaign/{metadata.get('namespace')}/{metadata.get('name')}",
            uid=str(metadata.get("uid") or ""),
            tag=tag,
            facts=self.facts,
            now=now,
        )
        note = (
            f"Staging rules; their lifetime becomes {format_duration(RELEASE_LIFETIME)} {when}, "
            "then Rucio's judge removes them"
        )
        return [deletion_impact(plan, _Locks(self.rucio), note)]


@dataclass
class RucioStatus:
    """Whether Rucio was consulted for this plan, and if not, why."""

    consulted: bool
    reason: str

    def line(self) -> str:
        """The plan's one line about Rucio."""
        if self.consulted:
            return f"Rucio: consulted ({self.reason})"
        return f"Rucio: NOT consulted: {self.reason}; the plan shows the Kubernetes side only"

    def to_json(self) -> dict[str, Any]:
        """For ``--format json``."""
        return {"consulted": self.consulted, "reason": self.reason}


@dataclass
class RucioPlanner:
    """The Rucio side of a plan, for every kind that acts on Rucio.

    ``tag_of`` gives the owner tag of a change's live resource (the rules it owns in Rucio);
    the composition root decides how tags are made.
    """

    status: RucioStatus
    previews: Callable[[ClusterFacts], Mapping[str, Preview]] = field(default=lambda _facts: {})
    """The preview of each kind that acts on Rucio (ReplicationRule, RetentionPolicy,
    OODSCache, Campaign staging), judging deletions against the facts given; a kind without
    one shows no Rucio side."""
    tag_of: Callable[[Change], str | None] = field(default=lambda _change: None)
    facts: ClusterFacts = field(default_factory=ClusterFacts)
    """The protections in the cluster now; each plan's previews get them as the plan leaves
    them (`planned_facts`)."""
    _judged: Sequence[Change] | None = field(default=None, init=False, repr=False)
    _previews: Mapping[str, Preview] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def unavailable(cls, reason: str) -> RucioPlanner:
        """A planner that says Rucio was not consulted, and why."""
        return cls(RucioStatus(consulted=False, reason=reason))

    def previews_for(self, plan: Sequence[Change]) -> Mapping[str, Preview]:
        """The previews, judging against the facts ``plan`` leaves (built once per plan).

        Changes the API server refuses are left out: apply makes none of them.
        """
        if plan is not self._judged:
            changes = [
                PlannedChange(c.key.kind, None if c.action is Action.PRUNE else c.desired, c.live)
                for c in plan
                if c.action is not Action.UNCHANGED and not c.refused
            ]
            self._previews = self.previews(planned_facts(self.facts, changes))
            self._judged = plan
        return self._previews

    def estimate(self, change: Change, plan: Sequence[Change] = ()) -> Consequences:
        """The Rucio consequences of one change of ``plan`` (an estimator for `GitOpsService`).

        ``plan`` is every change apply would make with it; its protections count as the
        whole plan leaves them.
        """
        previews = self.previews_for(plan or (change,))
        preview = previews.get(change.key.kind)
        desired = None if change.action is Action.PRUNE else change.desired
        try:
            impacts = (
                preview.consequences(
                    self.tag_of(change) if change.live else None, desired, change.live
                )
                if preview is not None
                else []
            )
            retention_preview = previews.get("RetentionPolicy")
            if change.lost_protections and isinstance(retention_preview, RetentionPreview):
                dids = {did for lost in change.lost_protections for did in lost["dids"]}
                changed = {
                    (c.key.namespace, c.key.name)
                    for c in plan
                    if c.key.kind == "RetentionPolicy" and c.action is not Action.UNCHANGED
                }
                impacts += retention_preview.exposed(self.facts, dids, changed, str(change.key))
        except RucioError as error:
            self.status = RucioStatus(
                consulted=False, reason=f"Rucio failed while planning {change.key}: {error}"
            )
            return Consequences([f"Rucio: not consulted for this change: {error}"])
        return Consequences(
            [impact.line() for impact in impacts], [impact.to_json() for impact in impacts]
        )
