"""Facts the deletion gate judges by, gathered from the cluster and from Rucio.

`steward.services.deletion` decides; this module builds its inputs, the same way for every
path that removes data: `protections_from` turns the RetentionPolicies (holds, locks), the
OODSCaches (pins), the Sites (freezes) and the campaigns into `Protections`;
`gather_placement` asks Rucio where the custodial copies of the candidates' DIDs are;
`candidate_of` turns a Rucio rule into a `Candidate`; `CampaignObjects` answers the gate's
`CampaignFacts` questions from Campaign resources and, where the operator has it, the
campaign ledger (`RecordedInputs`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from steward.models.campaign import Campaign, CampaignPhase
from steward.models.common import DataSelector
from steward.models.oods import OODSCache
from steward.models.retention import LockMode, RetentionLock, RetentionPolicy
from steward.models.site import Site
from steward.services import selection
from steward.services.deletion import (
    CampaignFacts,
    Candidate,
    NoCampaigns,
    PinFact,
    Placement,
    Protections,
)
from steward.storage.rucio import RucioStorage, Rule, RuleState

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "CampaignObjects",
    "ClusterFacts",
    "ExpressionCache",
    "RecordedInputs",
    "candidate_of",
    "data_owner",
    "effective_locks",
    "facts_from_bodies",
    "gather_placement",
    "protections_from",
    "protections_of",
    "with_sizes",
]


_FINISHED: Final = frozenset(
    {
        CampaignPhase.SUCCEEDED,
        CampaignPhase.FAILED,
        CampaignPhase.TERMINATED,
        CampaignPhase.CLOSED_OUT,
    }
)
_FAILED: Final = frozenset({CampaignPhase.FAILED, CampaignPhase.TERMINATED})


class RecordedInputs(Protocol):
    """What a campaign ledger knows: the DIDs unfinished campaigns read.

    `steward.services.ledger.LedgerService` answers it: every DID of a coverage set and
    every earlier step's output a later step reads, recorded as the campaign runs.
    """

    def campaigns_reading(
        self, dids: Collection[str], *, excluding: Collection[str] = ()
    ) -> Mapping[str, str]:
        """Those of ``dids`` a campaign (not one of the uids ``excluding``) still reads."""
        ...


@dataclass
class CampaignObjects:
    """`CampaignFacts` from Campaign resources as the API server has them, and the ledger.

    Inputs: the DIDs of a campaign's coverage query (explicit ones, or what ``resolve`` says a
    metadata query selects) while its phase is not finished; a campaign without status is
    Pending, so not finished. Then whatever ``recorded`` (the campaign ledger) says a campaign
    reads: the DIDs behind coverage given as Butler data ids and the earlier steps' outputs
    later steps read, which no Campaign object names, held until the campaign is closed out,
    terminated or deleted (so a Failed campaign that may be retried keeps its inputs, stricter
    than the phase above). Campaigns whose uid is in ``ended`` are no one's reader. Outputs:
    every DID in the output scope of a Failed or Terminated campaign whose name is not in
    ``reviewed``.
    """

    campaigns: Sequence[Campaign]
    reviewed: Collection[str] = frozenset()
    """Campaigns whose failure review is marked done (a RetentionPolicy's ``reviewDone``)."""
    resolve: Callable[[DataSelector], Collection[str]] | None = None
    """DIDs a metadata query selects now (Rucio); without it such inputs are not known."""
    recorded: RecordedInputs | None = None
    """The campaign ledger, where this process has one."""
    ended: Collection[str] = frozenset()
    """Uids of campaigns known to have ended though their objects may not say so yet."""
    _inputs: dict[str, str] | None = field(default=None, init=False, repr=False)

    def _input_map(self) -> dict[str, str]:
        if self._inputs is None:
            inputs: dict[str, str] = {}
            for campaign in self.campaigns:
                phase = campaign.status.phase if campaign.status else CampaignPhase.PENDING
                query = campaign.spec.coverage.query
                if phase in _FINISHED or query is None or campaign.metadata.uid in self.ended:
                    continue
                if query.dids is not None:
                    selected: Collection[str] = query.dids
                elif self.resolve is not None:
                    selected = self.resolve(query)
                else:
                    selected = ()
                for did in selected:
                    inputs.setdefault(did, campaign.metadata.name)
            self._inputs = inputs
        return self._inputs

    def inputs_in_use(self, dids: Collection[str]) -> Mapping[str, str]:
        """Those of ``dids`` an unfinished campaign reads (its object or its ledger says so)."""
        inputs = self._input_map()
        found = {did: inputs[did] for did in dids if did in inputs}
        rest = [did for did in dids if did not in found]
        if self.recorded is not None and rest:
            found.update(self.recorded.campaigns_reading(rest, excluding=self.ended))
        return found

    def outputs_awaiting_review(self, dids: Collection[str]) -> Mapping[str, str]:
        """Those of ``dids`` in the output scope of a failed, unreviewed campaign."""
        scopes = {
            campaign.spec.outputs.scope: campaign.metadata.name
            for campaign in self.campaigns
            if campaign.status is not None
            and campaign.status.phase in _FAILED
            and campaign.metadata.name not in self.reviewed
        }
        if not scopes:
            return {}
        found = {}
        for did in dids:
            owner = scopes.get(did.partition(":")[0])
            if owner is not None:
                found[did] = owner
        return found


def protections_from(
    *,
    policies: Iterable[RetentionPolicy] = (),
    caches: Iterable[OODSCache] = (),
    sites: Iterable[Site] = (),
    campaigns: CampaignFacts | None = None,
    freeze: str | None = None,
    now: datetime,
) -> Protections:
    """Build the facility-wide protections from the resources in the cluster.

    Holds and locks come from every RetentionPolicy (Compliance locks as `effective_locks`
    says); pins from every OODSCache pin naming DIDs (a pin by metadata is resolved by its
    cache, which keeps its own rules at the cache RSE); freezes and sites from every Site.
    """
    holds: dict[str, str] = {}
    locks: dict[LockMode, dict[str, datetime]] = {mode: {} for mode in LockMode}
    for policy in policies:
        who = f"RetentionPolicy/{policy.metadata.namespace}/{policy.metadata.name}"
        for did in policy.spec.holds:
            holds.setdefault(did, who)
        for lock in effective_locks(policy):
            target = locks[lock.mode]
            for did in lock.dids:
                if lock.until > now and (did not in target or target[did] < lock.until):
                    target[did] = lock.until
    frozen: dict[str, str] = {}
    site_of: dict[str, str] = {}
    for site in sites:
        for rse in site.spec.rses:
            site_of[rse.name] = site.spec.facility
            if site.spec.deletion_freeze is not None:
                frozen[rse.name] = f"Site/{site.metadata.name}: {site.spec.deletion_freeze.reason}"
    return Protections(
        legal_holds=holds,
        compliance_locks=locks[LockMode.COMPLIANCE],
        governance_locks=locks[LockMode.GOVERNANCE],
        pins=_pins(caches),
        frozen_rses=frozen,
        freeze_all=freeze,
        site_of=site_of,
        campaigns=campaigns or NoCampaigns(),
    )


def _pins(caches: Iterable[OODSCache]) -> dict[str, tuple[PinFact, ...]]:
    pins: dict[str, list[PinFact]] = defaultdict(list)
    for cache in caches:
        who = f"OODSCache/{cache.metadata.namespace}/{cache.metadata.name}"
        for pin in cache.spec.pins:
            for did in pin.selector.dids or ():
                pins[did].append(PinFact(frozenset({cache.spec.rse}), pin.until, who))
    return {did: tuple(facts) for did, facts in pins.items()}


def effective_locks(
    policy: RetentionPolicy, remembered: Sequence[RetentionLock] | None = None
) -> list[RetentionLock]:
    """A policy's locks, its Compliance locks merged with those remembered in its status.

    A Compliance lock is at its longest ``until`` and with every DID it ever named, even if
    the spec shortened or dropped it (possible only behind the API server's back: admission
    refuses it). Governance locks are as the spec says. ``remembered`` defaults to the
    policy's own ``status.complianceLocks``.
    """
    if remembered is None:
        remembered = policy.status.compliance_locks if policy.status else []
    merged: dict[str, RetentionLock] = {}
    for lock in [*remembered, *policy.spec.locks]:
        old = merged.get(lock.name)
        if old is None or old.mode is not LockMode.COMPLIANCE:
            merged[lock.name] = lock
        else:
            merged[lock.name] = old.model_copy(
                update={
                    "until": max(old.until, lock.until),
                    "dids": sorted(set(old.dids) | set(lock.dids)),
                }
            )
    return list(merged.values())


def data_owner(did: str) -> str | None:
    """The developer whose scratch data a DID is: Rucio's ``user.<account>`` scope convention."""
    scope = did.partition(":")[0]
    return scope.removeprefix("user.") if scope.startswith("user.") and len(scope) > 5 else None  # noqa: PLR2004


def with_sizes(rucio: RucioStorage, rules: Sequence[Rule]) -> list[Rule]:
    """``rules`` with the bytes of open datasets (which Rucio lists as none) filled in.

    The deletion gate compares bytes with limits and a cache its fill with watermarks: an
    unknown size must be looked up, never taken as zero. Closed datasets cost nothing.
    """
    unknown = {rule.did for rule in rules if not rule.bytes}
    if not unknown:
        return list(rules)
    sizes = rucio.resolved_bytes(unknown)
    return [
        replace(rule, bytes=sizes.get(rule.did, 0)) if not rule.bytes else rule for rule in rules
    ]


def candidate_of(
    rule: Rule, rses: frozenset[str], reason: str, *, created_at: datetime | None = None
) -> Candidate:
    """The candidate for removing ``rule``, whose expression covers ``rses``."""
    return Candidate(
        key=rule.id,
        did=rule.did,
        bytes=rule.bytes or 0,
        rses=rses,
        reason=reason,
        owner=data_owner(rule.did),
        tag=rule.comment,
        locked=rule.locked,
        created_at=created_at or rule.created_at,
    )


class ExpressionCache:
    """RSEs of each RSE expression, asked of Rucio once per expression (per reconcile)."""

    def __init__(self, rucio: RucioStorage) -> None:
        self._rucio = rucio
        self._known: dict[str, frozenset[str]] = {}

    def __call__(self, expression: str) -> frozenset[str]:
        """RSEs ``expression`` covers now."""
        if expression not in self._known:
            self._known[expression] = frozenset(self._rucio.list_rses(expression))
        return self._known[expression]


def gather_placement(
    rucio: RucioStorage,
    candidates: Sequence[Candidate],
    rules_on: Callable[[Collection[str]], Iterable[Rule]],
    rses_of: Callable[[str], frozenset[str]],
) -> Placement:
    """Custodial RSEs, and the rules keeping a custodial copy of each candidate's DID.

    ``rules_on`` returns every rule (any account) on some DIDs; a rule keeps a custodial copy
    when it is OK and every RSE of its expression is custodial. Only DIDs with a candidate on
    a custodial RSE are looked up.
    """
    custodial = frozenset(rucio.list_rses("type=TAPE")) | frozenset(rucio.list_rses("custodial"))
    touching = {c.did for c in candidates if c.rses & custodial}
    keepers: dict[str, set[str]] = defaultdict(set)
    if touching:
        for rule in rules_on(touching):
            if rule.did not in touching or rule.state is not RuleState.OK:
                continue
            rses = rses_of(rule.rse_expression)
            if rses and rses <= custodial:
                keepers[rule.did].add(rule.id)
    return Placement(custodial, {did: frozenset(ids) for did, ids in keepers.items()})


@dataclass(frozen=True)
class ClusterFacts:
    """The resources every deletion is judged against, as the operator's indexes hold them."""

    policies: Sequence[RetentionPolicy] = ()
    caches: Sequence[OODSCache] = ()
    sites: Sequence[Site] = ()
    campaigns: Sequence[Campaign] = ()
    freeze: str | None = None
    """The operator's own freeze (``STEWARD_DELETION_FREEZE``), or None."""
    ledger: RecordedInputs | None = None
    """The campaign ledger (the operator's audit database), or None where there is none."""
    ended: frozenset[str] = frozenset()
    """Uids of campaigns whose own release is being judged (`CampaignObjects.ended`)."""


def protections_of(facts: ClusterFacts, rucio: RucioStorage, *, now: datetime) -> Protections:
    """`Protections` for one reconcile: the cluster's facts, campaign queries asked of Rucio.

    A campaign's metadata query is listed at most once per reconcile, and only if a plan has
    candidates to ask about. Campaigns whose review is done are those named by a
    RetentionPolicy with ``reviewDone: true``.
    """
    reviewed = frozenset(
        policy.spec.campaign
        for policy in facts.policies
        if policy.spec.review_done and policy.spec.campaign
    )

    def resolve(selector: DataSelector) -> list[str]:
        return selection.select(rucio, selector, did_type="all")

    return protections_from(
        policies=facts.policies,
        caches=facts.caches,
        sites=facts.sites,
        campaigns=CampaignObjects(
            facts.campaigns, reviewed, resolve, recorded=facts.ledger, ended=facts.ended
        ),
        freeze=facts.freeze,
        now=now,
    )


def _valid(model: type[M], bodies: Iterable[Mapping[str, Any]]) -> list[M]:
    """The bodies that validate; one the models refuse protects nothing (its status says so)."""
    found = []
    for body in bodies:
        try:
            found.append(model.model_validate(dict(body)))
        except ValidationError:
            continue
    return found


def facts_from_bodies(
    bodies: Mapping[str, Iterable[Mapping[str, Any]]], freeze: str | None
) -> ClusterFacts:
    """`ClusterFacts` from objects as the API server lists them, by kind.

    What ``steward plan`` judges a deletion against, as the operator's indexes would: every
    RetentionPolicy (with its status: remembered Compliance locks), OODSCache, Site (spec
    only: a freeze) and Campaign.
    """
    return ClusterFacts(
        policies=_valid(RetentionPolicy, bodies.get("RetentionPolicy", ())),
        caches=_valid(OODSCache, bodies.get("OODSCache", ())),
        sites=_valid(
            Site,
            ({k: v for k, v in body.items() if k != "status"} for body in bodies.get("Site", ())),
        ),
        campaigns=_valid(Campaign, bodies.get("Campaign", ())),
        freeze=freeze,
    )
