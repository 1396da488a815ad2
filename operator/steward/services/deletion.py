"""The deletion gate: the one place that decides which Rucio rules Steward may remove.

Every path that removes data goes through here: a RetentionPolicy (expire or delete), OODS
eviction and window expiry, a ReplicationRule's ``Delete`` policy and campaign termination.
Each proposes *candidates* (rules it would remove, and why); `plan_deletion` applies the
protections and returns a `DeletionPlan`; `DeletionGate.carry_out` records the intent in the
audit trail, asks Rucio, and records the outcome. Nothing else in Steward removes a rule.

Protections, in this precedence (the first that applies is the one reported as having saved
a rule; design.md, and the retention anchors of S3 Object Lock):

1. ``LegalHold``: a DID listed in any RetentionPolicy's ``holds``; no period, nothing bypasses
   it; only removing the hold releases the data.
2. ``ComplianceLock``: until its date, nobody shortens it, no approval passes it.
3. ``GovernanceLock``: until its date, unless the requester's approval (naming who and why)
   lists ``GovernanceLock`` in ``bypass``; every such bypass is written to the audit trail.
4. ``Pin``: pinned data (an OODSCache pin), until the pin's ``until``.
5. The guarantees that are never bypassed either (design.md guarantee 2):
   ``CampaignInput`` (input of a Campaign that is not finished: an automatic lease),
   ``FailedCampaignReview`` (output of a failed campaign before its review is marked done,
   LDM-230 3.1.3.4.2), ``Owner`` (another developer's scratch data, SCIVAL1: passed only by
   an approval listing ``Owner``), ``OtherResource`` (a rule another Steward resource owns:
   its own deletion policy decides, and Rucio keeps files another rule references, DRP29),
   and ``LastCustodialReplica`` (checked over the whole plan: at least one rule keeping a
   custodial copy of each DID stays).

Age and capacity only *propose* candidates; they never override a protection. Above them, a
plan as a whole stops:

- ``DryRun``: the requester only computes and shows the plan;
- ``Frozen``: a Site's ``deletionFreeze`` covers an RSE the plan touches, or the operator
  runs with ``STEWARD_DELETION_FREEZE`` (Velero's read-only location);
- ``Blocked``: the plan is above ``maxDeleteBytes`` or ``maxDeleteFraction`` and no approval
  names its hash (so an approval cannot be reused for a larger plan).

The gate fails safe: facts it lacks count against deletion. A candidate on a custodial RSE
whose DID has no known other custodial rule is kept; a campaign with no status yet is not
finished; a Rucio error raises and postpones, it never decides.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

from steward.exceptions import RucioNotFoundError, StewardError
from steward.models.retention import (
    Approval,
    Bypass,
)
from steward.observability import EXTERNAL_ACTIONS, get_logger
from steward.services.audit import AuditRecord, AuditService, ResourceRef
from steward.services.ownership import TAG_PREFIX
from steward.storage.audit import AuditFilter
from steward.storage.rucio import UNSET, RucioStorage

__all__ = [
    "ABANDONED",
    "DONE",
    "INTENT",
    "PLAN_SHOWN",
    "PRECEDENCE",
    "SHOWING",
    "CampaignFacts",
    "Candidate",
    "Carried",
    "DeletionGate",
    "DeletionPlan",
    "DeletionRequest",
    "GateRefusedError",
    "Limits",
    "Mode",
    "NoCampaigns",
    "Operation",
    "PinFact",
    "Placement",
    "Protection",
    "Protections",
    "Recovery",
    "Saved",
    "human_bytes",
    "plan_deletion",
    "plan_hash",
    "shown_first",
]

_LOG = get_logger(__name__)

INTENT: Final = "deletion.intent"
"""Audit action written before Rucio is asked to remove a batch of rules."""
DONE: Final = "deletion.done"
"""Audit action written after Rucio answered for that batch (result says how it went)."""
ABANDONED: Final = "deletion.abandoned"
"""Audit action closing an intent found open after a restart, for the rules not removed."""

PLAN_SHOWN: Final = "PlanShown"
"""Reason (condition, Event) of a pass showing a plan it may not carry out yet (`shown_first`)."""
SHOWING: Final = "shown first, carried out from the next pass"

SAMPLE_SIZE: Final = 10
"""DIDs named in a plan's sample (status, ``steward plan``)."""
HASH_CHARS: Final = 16
"""Hex digits of a plan hash (64 bits: no two plans of one policy collide by accident)."""
BATCH: Final = 500
"""Rules per intent: a crash leaves at most one batch to resolve."""
_SOFT_DELETE: Final = timedelta(hours=1, minutes=5)
"""Rucio's deletion only expires a rule within the hour; such a rule is already going."""


class Operation(StrEnum):
    """How a plan removes its rules: the two verbs Steward uses on Rucio for this."""

    EXPIRE = "Expire"
    """Set the rule's lifetime to end now (or after the request's ``grace``); judge-cleaner
    removes it then, the reaper the files."""

    DELETE = "Delete"
    """Delete the rule (Rucio expires it within the hour, then the same)."""


class Protection(StrEnum):
    """Why the gate kept a rule."""

    LEGAL_HOLD = "LegalHold"
    COMPLIANCE_LOCK = "ComplianceLock"
    GOVERNANCE_LOCK = "GovernanceLock"
    PIN = "Pin"
    CAMPAIGN_INPUT = "CampaignInput"
    FAILED_CAMPAIGN_REVIEW = "FailedCampaignReview"
    OWNER = "Owner"
    OTHER_RESOURCE = "OtherResource"
    LAST_CUSTODIAL_REPLICA = "LastCustodialReplica"


PRECEDENCE: Final = tuple(Protection)
"""The order protections are checked in; the first that applies saves the rule."""


class Mode(StrEnum):
    """What happens to a plan as a whole."""

    ACT = "Acting"
    DRY_RUN = "DryRun"
    BLOCKED = "Blocked"
    FROZEN = "Frozen"


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A rule a requester would remove, with what the gate needs to judge it."""

    key: str
    """The Rucio rule id."""
    did: str
    """``scope:name`` the rule is on."""
    bytes: int
    """Size of the DID."""
    rses: frozenset[str]
    """RSEs the rule's expression covers (where its replicas may be)."""
    reason: str
    """Why it is proposed (``Age``, ``Window``, ``Capacity``, ``Released``, ...)."""
    owner: str | None = None
    """The developer whose scratch data this is (SCIVAL1), or None."""
    tag: str | None = None
    """The rule's comment: a Steward owner tag says which resource owns it."""
    locked: bool = False
    """Whether Rucio has the rule locked (it must be unlocked to go)."""
    created_at: datetime | None = None
    """When the data or the rule was created, for ordering and for the audit trail."""


@dataclass(frozen=True, slots=True)
class PinFact:
    """One pin of a DID: where (None: anywhere) and until when (None: until removed)."""

    rses: frozenset[str] | None
    until: datetime | None
    by: str


class CampaignFacts(Protocol):
    """The two questions the gate asks about campaigns.

    `steward.services.protections.CampaignObjects` answers them from the Campaign resources
    and, in the operator, from the campaign ledger as well. Both answer in bulk: a plan may
    hold a million rules.
    """

    def inputs_in_use(self, dids: Collection[str]) -> Mapping[str, str]:
        """Those of ``dids`` that a Campaign not yet finished reads, with its name."""
        ...

    def outputs_awaiting_review(self, dids: Collection[str]) -> Mapping[str, str]:
        """Those of ``dids`` written by a failed Campaign whose review is not marked done."""
        ...


class NoCampaigns:
    """Campaign facts of a facility without campaigns (tests of other protections, previews)."""

    def inputs_in_use(self, dids: Collection[str]) -> Mapping[str, str]:
        """No DID is in use."""
        del dids
        return {}

    def outputs_awaiting_review(self, dids: Collection[str]) -> Mapping[str, str]:
        """No DID awaits a review."""
        del dids
        return {}


@dataclass(frozen=True)
class Protections:
    """Facility-wide facts: holds, locks, pins, freezes, campaigns. The same for every path."""

    legal_holds: Mapping[str, str] = field(default_factory=dict)
    """DID -> who holds it (``RetentionPolicy/ns/name``)."""
    compliance_locks: Mapping[str, datetime] = field(default_factory=dict)
    """DID -> until (the longest of every Compliance lock on it)."""
    governance_locks: Mapping[str, datetime] = field(default_factory=dict)
    """DID -> until (the longest of every Governance lock on it)."""
    pins: Mapping[str, tuple[PinFact, ...]] = field(default_factory=dict)
    """DID -> its pins."""
    frozen_rses: Mapping[str, str] = field(default_factory=dict)
    """RSE -> why deletion is frozen there (a Site's ``deletionFreeze``)."""
    freeze_all: str | None = None
    """Why all deletion is frozen (the operator's ``STEWARD_DELETION_FREEZE``), or None."""
    site_of: Mapping[str, str] = field(default_factory=dict)
    """RSE -> site, for a plan's bytes per site."""
    campaigns: CampaignFacts = field(default_factory=NoCampaigns)
    """Campaign inputs in use and failed outputs awaiting review."""


@dataclass(frozen=True)
class Placement:
    """What Rucio says about where copies are, for the candidates of one request."""

    custodial_rses: frozenset[str] = frozenset()
    """RSEs holding custodial copies (type TAPE, or attribute ``custodial``)."""
    keepers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """DID -> ids of OK rules keeping a custodial copy of it (every RSE of the rule custodial)."""


@dataclass(frozen=True)
class Limits:
    """How much one plan may remove before it needs an approval naming its hash."""

    max_bytes: int | None = None
    max_fraction: float | None = None
    scope_bytes: int = 0
    """Bytes of everything the requester selects (what the fraction is of)."""


@dataclass(frozen=True)
class DeletionRequest:
    """What one requester asks the gate to remove, and on whose authority."""

    requester: str
    """``Kind/namespace/name`` of the resource asking (messages and the audit trail)."""
    operation: Operation
    candidates: Sequence[Candidate]
    placement: Placement = field(default_factory=Placement)
    own_tags: frozenset[str] = frozenset()
    """Owner tags of rules the requester owns; rules tagged by another resource are kept."""
    owner: str | None = None
    """The developer the requester acts for (a Scratch policy's ``owner``)."""
    approval: Approval | None = None
    """The requester's approval: its ``bypass`` and its ``planHash``."""
    awaiting_review: str | None = None
    """A failed campaign whose outputs these all are and whose review is not done."""
    limits: Limits = field(default_factory=Limits)
    dry_run: bool = False
    grace: timedelta = timedelta(0)
    """With `Operation.EXPIRE`: the lifetime the rules get instead of ending now. A
    campaign's staging rules keep the staged inputs a day after it closes (a rerun or an
    after-burner finds them); the protections are judged now, when the lifetime is set."""


# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Saved:
    """A candidate the gate kept, and which protection kept it."""

    candidate: Candidate
    protection: Protection
    detail: str


@dataclass(frozen=True)
class DeletionPlan:
    """What a request would remove, what the protections saved, and whether it may act."""

    requester: str
    operation: Operation
    removals: tuple[Candidate, ...]
    """Rules to remove, sorted by rule id."""
    saved: tuple[Saved, ...]
    hash: str
    mode: Mode
    reason: str = ""
    """Why the plan does not act (Blocked, Frozen); empty when it acts or is a dry run."""
    blocked_reason: str = ""
    """Machine-readable cause of a block: ``MaxDeleteBytesExceeded`` or
    ``MaxDeleteFractionExceeded``."""
    bypassed: tuple[tuple[str, Bypass], ...] = ()
    """(rule id, bypass) for every removal an approval let through."""
    scope_bytes: int = 0
    site_of: Mapping[str, str] = field(default_factory=dict)
    grace: timedelta = timedelta(0)
    """The request's ``grace``: the lifetime `Operation.EXPIRE` gives the rules."""

    @property
    def count(self) -> int:
        """Rules to remove."""
        return len(self.removals)

    @property
    def bytes(self) -> int:
        """Bytes that become deletable."""
        return sum(c.bytes for c in self.removals)

    @property
    def dids(self) -> int:
        """Distinct DIDs whose rules go."""
        return len({c.did for c in self.removals})

    def bytes_by_rse(self) -> dict[str, int]:
        """Bytes per RSE (a rule covering several RSEs counts at each)."""
        totals: Counter[str] = Counter()
        for candidate in self.removals:
            for rse in candidate.rses:
                totals[rse] += candidate.bytes
        return dict(sorted(totals.items()))

    def bytes_by_site(self) -> dict[str, int]:
        """Bytes per site (a rule covering several sites counts at each)."""
        totals: Counter[str] = Counter()
        for candidate in self.removals:
            for site in {self.site_of.get(rse, "unknown") for rse in candidate.rses}:
                totals[site] += candidate.bytes
        return dict(sorted(totals.items()))

    def sample(self, size: int = SAMPLE_SIZE) -> list[str]:
        """The first DIDs (sorted) that would go."""
        return sorted({c.did for c in self.removals})[:size]

    def protected(self) -> dict[str, int]:
        """Rules saved, per protection, in precedence order."""
        counts = Counter(s.protection for s in self.saved)
        return {p.value: counts[p] for p in PRECEDENCE if counts[p]}

    def protected_bytes(self) -> dict[str, int]:
        """Bytes saved, per protection, in precedence order."""
        totals: Counter[Protection] = Counter()
        for saved in self.saved:
            totals[saved.protection] += saved.candidate.bytes
        return {p.value: totals[p] for p in PRECEDENCE if totals[p]}

    def summary(self) -> str:
        """One line for people: what goes, how much, what was saved."""
        verb = "expire" if self.operation is Operation.EXPIRE else "delete"
        text = f"would {verb} {self.count} rules of {self.dids} DIDs ({human_bytes(self.bytes)})"
        if self.grace:
            text += f" after {self.grace}"
        protected = self.protected()
        if protected:
            text += "; protected: " + ", ".join(f"{k}={v}" for k, v in protected.items())
        return text

    def lines(self) -> list[str]:
        """What ``steward plan`` shows for this plan."""
        lines = [f"deletion plan {self.hash} ({self.mode.value}): {self.summary()}"]
        if self.reason:
            lines.append(f"not acting: {self.reason}")
        by_site = self.bytes_by_site()
        if by_site:
            lines.append(
                "bytes per site: " + ", ".join(f"{k}={human_bytes(v)}" for k, v in by_site.items())
            )
        sample = self.sample()
        if sample:
            more = f" (and {self.dids - len(sample)} more)" if self.dids > len(sample) else ""
            lines.append("e.g. " + ", ".join(sample) + more)
        return lines


def human_bytes(count: int) -> str:
    """Bytes in binary units with one decimal, as the Argo CD health checks print them."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":  # noqa: PLR2004 - binary units
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover - the loop returns


def plan_hash(
    operation: Operation, removals: Iterable[Candidate], *, presorted: bool = False
) -> str:
    """Stable hash of what a plan removes and how: rule ids, DIDs and bytes, sorted.

    It does not depend on when the plan was computed, on the approval, or on the order the
    candidates came in, so the same removals hash the same from one cycle to the next and an
    approval naming it stays valid exactly as long as the plan does not change.
    """
    ordered = removals if presorted else sorted(removals, key=lambda c: c.key)
    digest = hashlib.sha256(operation.value.encode())
    for candidate in ordered:
        digest.update(f"\n{candidate.key} {candidate.did} {candidate.bytes}".encode())
    return digest.hexdigest()[:HASH_CHARS]


def shown_first(
    old_status: Mapping[str, Any], generation: int | None, *, approved: bool = False
) -> bool:
    """Whether this pass may carry a plan out: an earlier one showed it, or it is approved.

    A new or changed RetentionPolicy or OODSCache only shows its plan on its first pass over
    a generation (its status then records the generation as observed) and acts from the
    next: protections applied beside it (a hold in another policy, a Site's freeze, a pin)
    reach the operator's indexes through watches of their own, in no order with this one,
    and one pass later they are in force; ``steward apply`` of a whole directory creates
    both at once. ``approved``: the resource's approval names this plan's hash, so whoever
    wrote it saw this very plan (in status, or from ``steward plan``), and it acts at once.
    """
    return approved or (
        "observedGeneration" in old_status and old_status["observedGeneration"] == generation
    )


@dataclass
class _Judge:
    """The per-rule protections, checked in `PRECEDENCE` order for one request."""

    request: DeletionRequest
    protections: Protections
    in_use: Mapping[str, str]
    reviewing: Mapping[str, str]
    now: datetime
    _flagged: set[str] = field(init=False, default_factory=set)
    """DIDs some protection names: the others skip the per-rule checks."""

    @property
    def _bypass(self) -> frozenset[Bypass]:
        approval = self.request.approval
        return frozenset(approval.bypass) if approval is not None else frozenset()

    def legal_hold(self, candidate: Candidate) -> str | Bypass | None:
        holder = self.protections.legal_holds.get(candidate.did)
        return None if holder is None else f"held by {holder}"

    def compliance_lock(self, candidate: Candidate) -> str | Bypass | None:
        until = self.protections.compliance_locks.get(candidate.did)
        return f"until {until.isoformat()}" if until is not None and until > self.now else None

    def governance_lock(self, candidate: Candidate) -> str | Bypass | None:
        until = self.protections.governance_locks.get(candidate.did)
        if until is None or until <= self.now:
            return None
        if Bypass.GOVERNANCE_LOCK in self._bypass:
            return Bypass.GOVERNANCE_LOCK
        return f"until {until.isoformat()}"

    def pin(self, candidate: Candidate) -> str | Bypass | None:
        for pin in self.protections.pins.get(candidate.did, ()):
            if (pin.until is None or pin.until > self.now) and (
                pin.rses is None or pin.rses & candidate.rses
            ):
                return f"pinned by {pin.by}"
        return None

    def campaign_input(self, candidate: Candidate) -> str | Bypass | None:
        campaign = self.in_use.get(candidate.did)
        return None if campaign is None else f"input of Campaign {campaign}"

    def failed_campaign_review(self, candidate: Candidate) -> str | Bypass | None:
        campaign = self.request.awaiting_review or self.reviewing.get(candidate.did)
        return None if campaign is None else f"review of Campaign {campaign} not done"

    def owner(self, candidate: Candidate) -> str | Bypass | None:
        if candidate.owner is None or candidate.owner == self.request.owner:
            return None
        if Bypass.OWNER in self._bypass:
            return Bypass.OWNER
        return f"scratch data of {candidate.owner}"

    def other_resource(self, candidate: Candidate) -> str | Bypass | None:
        tag = candidate.tag or ""
        if tag.startswith(TAG_PREFIX) and tag not in self.request.own_tags:
            return f"rule owned by {tag}"
        return None

    def __post_init__(self) -> None:
        protections = self.protections
        self._flagged = (
            protections.legal_holds.keys()
            | protections.compliance_locks.keys()
            | protections.governance_locks.keys()
            | protections.pins.keys()
            | self.in_use.keys()
            | self.reviewing.keys()
        )

    def _untouched(self, candidate: Candidate) -> bool:
        """Whether no protection can apply (most rules of a large plan): checked at once."""
        request = self.request
        tag = candidate.tag
        return (
            candidate.did not in self._flagged
            and request.awaiting_review is None
            and (candidate.owner is None or candidate.owner == request.owner)
            and (tag is None or not tag.startswith(TAG_PREFIX) or tag in request.own_tags)
        )

    def verdict(self, candidate: Candidate) -> Saved | list[Bypass]:
        """The protection that keeps ``candidate``, or the bypasses it needed to pass."""
        used: list[Bypass] = []
        if self._untouched(candidate):
            return used
        for protection, check in _CHECKS:
            result = check(self, candidate)
            if isinstance(result, Bypass):
                used.append(result)
            elif result is not None:
                return Saved(candidate, protection, result)
        return used


_CHECKS: Final[
    tuple[tuple[Protection, Callable[[_Judge, Candidate], str | Bypass | None]], ...]
] = (
    (Protection.LEGAL_HOLD, _Judge.legal_hold),
    (Protection.COMPLIANCE_LOCK, _Judge.compliance_lock),
    (Protection.GOVERNANCE_LOCK, _Judge.governance_lock),
    (Protection.PIN, _Judge.pin),
    (Protection.CAMPAIGN_INPUT, _Judge.campaign_input),
    (Protection.FAILED_CAMPAIGN_REVIEW, _Judge.failed_campaign_review),
    (Protection.OWNER, _Judge.owner),
    (Protection.OTHER_RESOURCE, _Judge.other_resource),
)
"""Per-rule checks in `PRECEDENCE` order (the last custodial replica is judged per plan)."""


def _custodial(
    survivors: list[Candidate], placement: Placement
) -> tuple[list[Candidate], list[Saved]]:
    """Keep, for each DID, at least one rule holding a custodial copy.

    A candidate whose RSEs include a custodial one "touches" the DID's custodial copies. If
    removing every touching candidate of a DID would leave none of its known custodial
    rules (``placement.keepers`` plus touching candidates that are wholly custodial), the
    first such keeper (by rule id) stays; if no keeper is known at all, every touching
    candidate stays, since the gate cannot tell where the custodial copy is.
    """
    custodial = placement.custodial_rses
    touching: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in survivors:
        if candidate.rses & custodial:
            touching[candidate.did].append(candidate)
    if not touching:
        return survivors, []
    kept: set[str] = set()
    saved: list[Saved] = []
    for did, group in touching.items():
        group.sort(key=lambda c: c.key)
        wholly = [c for c in group if c.rses <= custodial]
        keepers = set(placement.keepers.get(did, frozenset())) | {c.key for c in wholly}
        removed = {c.key for c in group}
        if keepers - removed:
            continue
        stay = [wholly[0]] if wholly else group
        for candidate in stay:
            kept.add(candidate.key)
            saved.append(Saved(candidate, Protection.LAST_CUSTODIAL_REPLICA, "last custodial copy"))
    return [c for c in survivors if c.key not in kept], saved


def plan_deletion(
    request: DeletionRequest, protections: Protections, *, now: datetime
) -> DeletionPlan:
    """Apply the protections to a request's candidates and decide the plan's mode.

    Pure: reads only its arguments (the campaign facts answer from memory or their own
    source), so ``steward plan``, a dry run and an acting run compute the same plan from the
    same facts. Duplicate candidates (the same rule proposed twice) count once.
    """
    # Sorted once (removals come out in rule-id order) and deduplicated in place: a million
    # candidates need no dictionary on the side.
    unique = sorted(request.candidates, key=lambda c: c.key)
    unique = [c for i, c in enumerate(unique) if i == 0 or unique[i - 1].key != c.key]
    dids = {c.did for c in unique}
    judge = _Judge(
        request,
        protections,
        protections.campaigns.inputs_in_use(dids) if dids else {},
        protections.campaigns.outputs_awaiting_review(dids) if dids else {},
        now,
    )
    saved: list[Saved] = []
    survivors: list[Candidate] = []
    bypassed: list[tuple[str, Bypass]] = []
    for candidate in unique:
        verdict = judge.verdict(candidate)
        if isinstance(verdict, Saved):
            saved.append(verdict)
            continue
        bypassed.extend((candidate.key, used) for used in verdict)
        survivors.append(candidate)
    survivors, custodial_saved = _custodial(survivors, request.placement)
    saved.extend(custodial_saved)
    del unique, dids
    removals = tuple(survivors)  # still in rule-id order
    del survivors
    digest = plan_hash(request.operation, removals, presorted=True)
    gone = {key for key, _ in bypassed} & {c.key for c in removals} if bypassed else set()
    mode, reason, blocked = _mode(request, protections, removals, digest)
    return DeletionPlan(
        requester=request.requester,
        operation=request.operation,
        removals=removals,
        saved=tuple(sorted(saved, key=lambda s: s.candidate.key)),
        hash=digest,
        mode=mode,
        reason=reason,
        blocked_reason=blocked,
        bypassed=tuple((key, b) for key, b in bypassed if key in gone),
        scope_bytes=request.limits.scope_bytes,
        site_of=protections.site_of,
        grace=request.grace if request.operation is Operation.EXPIRE else timedelta(0),
    )


def _mode(
    request: DeletionRequest,
    protections: Protections,
    removals: Sequence[Candidate],
    digest: str,
) -> tuple[Mode, str, str]:
    """The plan's mode, why it does not act, and the cause of a block."""
    if request.dry_run:
        return Mode.DRY_RUN, "", ""
    if not removals:
        return Mode.ACT, "", ""
    frozen = _frozen(protections, removals)
    if frozen:
        return Mode.FROZEN, frozen, ""
    cause, why = _over_limit(request.limits, sum(c.bytes for c in removals))
    approval = request.approval
    if not cause or (approval is not None and approval.plan_hash == digest):
        return Mode.ACT, "", ""
    named = (
        f"; the approval names plan {approval.plan_hash}, not this one"
        if approval is not None and approval.plan_hash
        else ""
    )
    return (
        Mode.BLOCKED,
        f"{why}; approve plan {digest} (spec.approval.planHash) to carry it out{named}",
        cause,
    )


def _frozen(protections: Protections, removals: Sequence[Candidate]) -> str:
    """Why a freeze stops these removals, or empty."""
    if protections.freeze_all is not None:
        return f"deletion is frozen: {protections.freeze_all}"
    frozen = sorted({rse for c in removals for rse in c.rses if rse in protections.frozen_rses})
    if not frozen:
        return ""
    why = "; ".join(sorted({protections.frozen_rses[rse] for rse in frozen}))
    return f"deletion is frozen at {', '.join(frozen)}: {why}"


def _over_limit(limits: Limits, total: int) -> tuple[str, str]:
    """The limit ``total`` bytes exceed (cause, explanation), or empty strings."""
    if limits.max_bytes is not None and total > limits.max_bytes:
        return "MaxDeleteBytesExceeded", (
            f"the plan makes {human_bytes(total)} deletable, above maxDeleteBytes "
            f"{human_bytes(limits.max_bytes)}"
        )
    if (
        limits.max_fraction is not None
        and limits.scope_bytes > 0
        and total > limits.max_fraction * limits.scope_bytes
    ):
        return "MaxDeleteFractionExceeded", (
            f"the plan makes {total / limits.scope_bytes:.0%} of the selected bytes deletable, "
            f"above maxDeleteFraction {limits.max_fraction:.0%}"
        )
    return "", ""


# --- carrying a plan out ------------------------------------------------------------------------


@dataclass(frozen=True)
class Carried:
    """What `DeletionGate.carry_out` did."""

    removed: tuple[str, ...] = ()
    """Rule ids Rucio accepted to remove."""
    gone: tuple[str, ...] = ()
    """Rule ids that were gone already."""


@dataclass(frozen=True)
class Recovery:
    """How an intent left open by a stopped operator was closed."""

    plan: str
    carried_out: tuple[str, ...]
    abandoned: tuple[str, ...]


class GateRefusedError(StewardError):
    """A plan that may not act was handed to `DeletionGate.carry_out`."""


def _chunks(items: Sequence[Candidate], size: int) -> Iterator[Sequence[Candidate]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _rule_record(candidate: Candidate) -> dict[str, Any]:
    return {
        "id": candidate.key,
        "did": candidate.did,
        "bytes": candidate.bytes,
        "rses": sorted(candidate.rses),
        "reason": candidate.reason,
        "locked": candidate.locked,
    }


@dataclass
class DeletionGate:
    """Carries out plans: intent in the audit trail first, then Rucio, then the outcome.

    A plan is carried out in batches of `BATCH` rules. For each batch an intent row (plan
    hash, operation, the rules with their bytes, and any approval bypass with who approved)
    is appended before the first Rucio call, and a done row after the last, naming what was
    removed and what was gone already. An operator killed between the two leaves the intent
    as the newest deletion row of its resource; `recover`, called before the next plan, finds
    it, asks Rucio which of its rules went, and closes it (done, or abandoned for the rest,
    which the next plan proposes again and the protections judge afresh). So no rule is
    removed without a record, and nothing is removed after a restart on a stale decision.
    """

    rucio: RucioStorage
    audit: AuditService
    actor: str = "steward-operator"
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    batch: int = BATCH

    def carry_out(self, plan: DeletionPlan, ref: ResourceRef) -> Carried:
        """Remove the plan's rules, recording intent and outcome around each batch.

        Raises
        ------
        GateRefusedError
            The plan's mode is not Acting (dry run, blocked, frozen): nothing was done.
        RucioTransientError
            Rucio failed mid-batch; the batch's outcome (what went before the failure) is
            recorded with result ``failed`` before the error propagates.
        """
        if plan.mode is not Mode.ACT:
            msg = f"plan {plan.hash} of {plan.requester} is {plan.mode.value}: {plan.reason}"
            raise GateRefusedError(msg)
        removed: list[str] = []
        gone: list[str] = []
        bypass = dict(plan.bypassed)
        for index, batch in enumerate(_chunks(plan.removals, self.batch)):
            target = f"{plan.hash}#{index}"
            self.audit.record(
                AuditRecord(
                    resource=ref,
                    action=INTENT,
                    actor=self.actor,
                    target=target,
                    after={
                        "plan": plan.hash,
                        "operation": plan.operation.value,
                        "rules": [_rule_record(c) for c in batch],
                        "bytes": sum(c.bytes for c in batch),
                        "bypassed": {c.key: bypass[c.key].value for c in batch if c.key in bypass},
                        "graceSeconds": int(plan.grace.total_seconds()),
                    },
                    message=plan.summary() if index == 0 else "",
                )
            )
            batch_removed: list[str] = []
            batch_gone: list[str] = []
            try:
                for candidate in batch:
                    if self._remove(candidate, plan.operation, plan.grace):
                        batch_removed.append(candidate.key)
                    else:
                        batch_gone.append(candidate.key)
            except StewardError as error:
                self._close(ref, target, batch_removed, batch_gone, result="failed", why=error)
                raise
            self._close(ref, target, batch_removed, batch_gone, result="success", why=None)
            removed += batch_removed
            gone += batch_gone
        EXTERNAL_ACTIONS.labels(ref.kind, f"rucio.rule.{plan.operation.value.lower()}").inc(
            len(removed)
        )
        return Carried(tuple(removed), tuple(gone))

    def _remove(self, candidate: Candidate, operation: Operation, grace: timedelta) -> bool:
        """Ask Rucio to remove one rule (expire it after ``grace``); False if it was gone."""
        try:
            if operation is Operation.DELETE:
                return self.rucio.delete_rule(candidate.key, unlock=candidate.locked)
            # judge-cleaner never removes a locked rule, expired or not: unlock it too.
            self.rucio.update_rule(
                candidate.key,
                lifetime=grace,
                locked=False if candidate.locked else UNSET,
            )
        except RucioNotFoundError:
            return False
        return True

    def _close(
        self,
        ref: ResourceRef,
        target: str,
        removed: Sequence[str],
        gone: Sequence[str],
        *,
        result: str,
        why: BaseException | None,
    ) -> None:
        self.audit.record(
            AuditRecord(
                resource=ref,
                action=DONE,
                actor=self.actor,
                target=target,
                result=result,
                after={"removed": list(removed), "gone": list(gone)},
                message="" if why is None else str(why)[:1000],
            )
        )

    def recover(self, ref: ResourceRef) -> Recovery | None:
        """Close the intent a stopped operator left open for this resource, if any.

        Call before planning: the next intent is only written once this returned, so at most
        one batch (the newest deletion row) can be open. Each of its rules is looked up in
        Rucio: one that is gone or expiring (within the intent's grace) was removed before the
        stop; the others are abandoned (the next plan proposes them again, judged by today's
        protections).
        """
        where = AuditFilter(kind=ref.kind, namespace=ref.namespace, name=ref.name)
        latest = self.audit.latest(where, actions=(INTENT, DONE, ABANDONED))
        if latest is None or latest.action != INTENT:
            return None
        intent = json.loads(latest.after or "{}")
        now = self.clock()
        horizon = now + _SOFT_DELETE + timedelta(seconds=int(intent.get("graceSeconds", 0)))
        carried: list[str] = []
        abandoned: list[str] = []
        for rule in intent.get("rules", []):
            try:
                current = self.rucio.get_rule(rule["id"])
            except RucioNotFoundError:
                carried.append(rule["id"])
                continue
            expiring = current.expires_at is not None and current.expires_at <= horizon
            (carried if expiring else abandoned).append(rule["id"])
        action = ABANDONED if abandoned else DONE
        self.audit.record(
            AuditRecord(
                resource=ref,
                action=action,
                actor=self.actor,
                target=latest.target,
                result="recovered",
                after={"removed": carried, "abandoned": abandoned},
                message=(
                    "intent found open after a restart: "
                    f"{len(carried)} rules had been removed, {len(abandoned)} abandoned "
                    "(the next plan judges them again)"
                ),
            )
        )
        _LOG.warning(
            "open deletion intent closed",
            resource=f"{ref.kind}/{ref.namespace}/{ref.name}",
            plan=intent.get("plan"),
            removed=len(carried),
            abandoned=len(abandoned),
        )
        return Recovery(str(intent.get("plan", "")), tuple(carried), tuple(abandoned))
